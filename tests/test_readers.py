"""Tests for fld.data.readers and fld.data.records (real 300-W files + small synthetic ones)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fld.data.readers import (
    AnnotationError,
    AnnotationWarning,
    WFLW_ATTRIBUTES,
    read_annotations,
    read_csv,
    read_pts,
    read_pts_dir,
    read_wflw,
    write_pts,
)
from fld.data.records import Record, split_records

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "300w" / "train"
needs_data = pytest.mark.usefixtures("data_300w")   # tests/conftest.py: skip, or fail in CI
# A hand-checked file: its 4th line (first point) reads "113.355 152.967".
HAND_FILE = DATA / "afw" / "1051618982_1.pts"


@pytest.fixture(scope="module")
def real_records(data_300w):
    return read_pts_dir(data_300w)


def _real_image(dest: Path) -> Path:
    """Copies one real image to ``dest`` (or writes a tiny fake when the data is absent)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = HAND_FILE.with_suffix(".jpg")
    if source.is_file():
        shutil.copy(source, dest)
    else:
        dest.write_bytes(b"not really a jpeg")
    return dest


def _pts_text(points, n_points=None, closing=True) -> str:
    n = len(points) if n_points is None else n_points
    body = "\n".join(f"{x} {y}" for x, y in points)
    return f"version: 1\nn_points:  {n}\n{{\n{body}\n" + ("}\n" if closing else "")


# --- real data -------------------------------------------------------------------------


@needs_data
def test_all_real_pts_parse_with_images(real_records):
    assert len(real_records) == 2012
    counts = {}
    for r in real_records:
        assert r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float32
        assert os.path.isfile(r.image_path), r.image_path
        assert r.box is None
        counts[r.subset] = counts.get(r.subset, 0) + 1
    assert counts == {"lfpw": 805, "helen": 870, "afw": 337}
    paths = [r.image_path for r in real_records]
    assert len(set(paths)) == len(paths)


@needs_data
def test_one_based_to_zero_based_on_a_hand_checked_point():
    raw_line = HAND_FILE.read_text().splitlines()[3]  # line 4: point 0, 1-based
    assert raw_line.strip() == "113.355 152.967"
    raw = np.array([float(v) for v in raw_line.split()], np.float32)
    pts = read_pts(str(HAND_FILE))
    np.testing.assert_allclose(pts[0], raw - 1.0, atol=1e-5)
    np.testing.assert_allclose(pts[0], [112.355, 151.967], atol=1e-5)
    # Point 36 (outer eye corner) is on line 4 + 36 = 40.
    raw36 = [float(v) for v in HAND_FILE.read_text().splitlines()[39].split()]
    np.testing.assert_allclose(pts[36], np.subtract(raw36, 1.0), atol=1e-5)


@needs_data
def test_pair_51_drops_the_jaw_on_real_data():
    full = read_pts_dir(str(DATA / "afw"))
    pair = read_annotations(str(DATA / "afw"), scheme="pair_51")
    assert len(full) == len(pair) == 337
    for a, b in zip(full, pair):
        assert a.image_path == b.image_path
        assert b.landmarks.shape == (51, 2)
        np.testing.assert_array_equal(b.landmarks, a.landmarks[17:68])


@needs_data
def test_wrong_scheme_is_an_error_naming_the_file():
    with pytest.raises(AnnotationError, match=r"\.pts.*68 points.*wflw_98"):
        read_pts_dir(str(DATA / "afw"), scheme="wflw_98")


# --- .pts read / write -------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 400, size=(68, 2)).astype(np.float32)
    path = tmp_path / "face.pts"
    write_pts(str(path), pts)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["version: 1", "n_points: 68", "{"] and lines[-1] == "}"
    assert len(lines) == 72
    np.testing.assert_allclose([float(v) for v in lines[3].split()], pts[0] + 1.0, atol=1e-5)
    np.testing.assert_allclose(read_pts(str(path)), pts, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["face.pts"]  # no temp file left behind


def test_headerless_pts(tmp_path):
    path = tmp_path / "plain.pts"
    path.write_text("1 1\n10.5 20.25\n\n3 4\n")
    np.testing.assert_allclose(read_pts(str(path)), [[0, 0], [9.5, 19.25], [2, 3]])


# --- malformed files ---------------------------------------------------------------------

_GOOD = [(10.0 + i, 20.0 + 2 * i) for i in range(5)]
_BAD_CASES = {
    "count_mismatch": _pts_text(_GOOD[:4], n_points=5),
    "non_numeric": _pts_text(_GOOD[:4] + [("12.0", "abc")]),
    "nan_value": _pts_text(_GOOD[:4] + [("nan", "3.0")]),
    "truncated": _pts_text(_GOOD, closing=False),
    "not_utf8": b"\xff\xfe\x00garbage",
    "missing_image": None,  # a good .pts without an image beside it
}


def _write_bad_dir(tmp_path: Path, cases) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.pts").write_text(_pts_text(_GOOD))
    _real_image(root / "good.jpg")
    for name in cases:
        content = _BAD_CASES[name]
        if content is None:
            (root / f"{name}.pts").write_text(_pts_text(_GOOD))
            continue
        target = root / f"{name}.pts"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        _real_image(root / f"{name}.JPG")  # upper-case extension must be found too
    return root


@pytest.mark.parametrize("case", sorted(_BAD_CASES))
def test_bad_file_raises_naming_it(tmp_path, case):
    root = _write_bad_dir(tmp_path, [case])
    with pytest.raises(AnnotationError, match=f"{case}.pts"):
        read_pts_dir(str(root))


def test_skip_bad_warns_once_with_the_count(tmp_path):
    root = _write_bad_dir(tmp_path, list(_BAD_CASES))
    with pytest.warns(AnnotationWarning, match=f"skipped {len(_BAD_CASES)} bad") as caught:
        records = read_annotations(str(root), skip_bad=True)
    assert len([w for w in caught if issubclass(w.category, AnnotationWarning)]) == 1
    assert [Path(r.image_path).name for r in records] == ["good.jpg"]
    np.testing.assert_allclose(records[0].landmarks, np.subtract(_GOOD, 1.0))
    assert records[0].subset == ""


def test_empty_directory_names_it(tmp_path):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    (empty / "readme.txt").write_text("no annotations")
    with pytest.raises(AnnotationError, match="nothing_here"):
        read_annotations(str(empty))


# --- WFLW and CSV --------------------------------------------------------------------------


def test_wflw_reader(tmp_path):
    image = _real_image(tmp_path / "WFLW_images" / "51--Dancing" / "face.jpg")
    rng = np.random.default_rng(1)
    pts = np.round(rng.uniform(0, 200, size=(98, 2)), 3)
    box = [5.0, 6.0, 190.0, 199.0]
    flags = [1, 0, 0, 1, 0, 1]
    numbers = " ".join(f"{v:g}" for v in list(pts.ravel()) + box + flags)
    txt = tmp_path / "list_98pt_rect_attr_train.txt"
    txt.write_text(f"{numbers} 51--Dancing/face.jpg\n"
                   f"{' '.join(numbers.split()[1:])} 51--Dancing/face.jpg\n")  # 1 number short

    with pytest.raises(AnnotationError, match=r"list_98pt_rect_attr_train\.txt:2"):
        read_wflw(str(txt), str(tmp_path / "WFLW_images"))
    with pytest.warns(AnnotationWarning, match="skipped 1"):
        records = read_annotations(str(txt), skip_bad=True, image_root=str(tmp_path / "WFLW_images"))
    (r,) = records
    assert Path(r.image_path) == image
    np.testing.assert_allclose(r.landmarks, pts, atol=1e-4)  # WFLW is 0-based: no shift
    np.testing.assert_array_equal(r.box, box)
    assert r.subset == "51--Dancing"
    assert r.attributes == dict(zip(WFLW_ATTRIBUTES, flags))


def test_wflw_missing_image(tmp_path):
    numbers = " ".join(["1.5"] * 200 + ["0"] * 6)
    txt = tmp_path / "wflw.txt"
    txt.write_text(f"{numbers} sub/absent.jpg\n")
    with pytest.raises(AnnotationError, match=r"wflw\.txt:1: image file not found"):
        read_wflw(str(txt), str(tmp_path))


def test_csv_reader(tmp_path):
    _real_image(tmp_path / "imgs" / "lfpw" / "a.jpg")
    pts = np.arange(136, dtype=np.float64).reshape(68, 2) + 0.25
    header = "image," + ",".join(f"x{i},y{i}" for i in range(68))
    row = "lfpw/a.jpg," + ",".join(f"{v:g}" for v in pts.ravel())
    csv_path = tmp_path / "imgs" / "labels.csv"
    csv_path.write_text(f"{header}\n{row}\n")

    (r,) = read_csv(str(csv_path))
    assert r.image_path == str(tmp_path / "imgs" / "lfpw" / "a.jpg")
    np.testing.assert_allclose(r.landmarks, pts)  # CSV is 0-based: no shift
    assert r.subset == "lfpw" and r.box is None

    other = tmp_path / "elsewhere.csv"
    other.write_text(f"{header}\n{row}\n")
    (r51,) = read_annotations(str(other), scheme="pair_51", image_root=str(tmp_path / "imgs"))
    np.testing.assert_allclose(r51.landmarks, pts[17:])

    bad = tmp_path / "imgs" / "bad.csv"
    bad.write_text(f"{header}\n{row.rsplit(',', 1)[0]}\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:2: expected 137 columns"):
        read_csv(str(bad))


# --- records ---------------------------------------------------------------------------------


def test_split_records_every_tenth_sorted_by_path():
    records = [Record(f"img_{i:02d}.jpg", np.zeros((5, 2))) for i in range(25)]
    train, val = split_records(records[::-1], every=10)
    assert [r.image_path for r in val] == ["img_00.jpg", "img_10.jpg", "img_20.jpg"]
    assert len(train) == 22 and not {r.image_path for r in train} & {r.image_path for r in val}
    _, val3 = split_records(records, every=10, offset=3)
    assert [r.image_path for r in val3] == ["img_03.jpg", "img_13.jpg", "img_23.jpg"]
    train0, val0 = split_records(records, every=0)
    assert len(train0) == 25 and val0 == []
    with pytest.raises(ValueError, match="offset"):
        split_records(records, every=10, offset=10)


def test_record_validates_landmarks():
    r = Record("a.jpg", [[1, 2], [3, 4]], box=[0, 0, 5, 5])
    assert r.landmarks.dtype == np.float32 and r.box.dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        Record("a.jpg", [[np.nan, 2.0]])
