"""Evaluation: golden numbers, the CLI end to end, Keras and .tflite on one code path."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fld import evaluation
from fld.crop import box_from_landmarks
from fld.schemes import get_scheme
from tests.helpers import bn_fitted_student

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


class ShiftedTruth:
    """A predictor that returns the ground truth moved by a fixed offset."""

    scheme = get_scheme("300w_68")

    def __init__(self, truth, offset):
        self.truth, self.offset = truth, np.asarray(offset, np.float32)

    def predict(self, image, box):
        gt = self.truth[tuple(np.round(box, 3))]
        return gt + self.offset

    def detect(self, image):
        return []


def test_golden_nme_through_evaluate(real_records):
    records = real_records[:3]
    truth = {tuple(np.round(box_from_landmarks(r.landmarks), 3)): r.landmarks for r in records}
    results = evaluation.evaluate(records, ShiftedTruth(truth, (3.0, 4.0)),
                                  get_scheme("300w_68"), progress=False)
    for r in results:
        # Every point is off by exactly 5 px: NME = 5 / |p36 - p45|.
        expected = 5.0 / np.linalg.norm(r.gt[36] - r.gt[45])
        assert r.nme_io == pytest.approx(expected, rel=1e-6)
    rows = evaluation.summary_rows(results)
    assert rows[-1]["subset"] == "all" and rows[-1]["faces"] == 3
    assert rows[-1]["nme_io_mean"] == pytest.approx(100 * np.mean([r.nme_io for r in results]))
    text = evaluation.format_table(rows)
    assert "NME io %" in text and "all" in text


def test_detector_mode_counts_missed_faces(real_records):
    results = evaluation.evaluate(real_records[:2], ShiftedTruth({}, (0, 0)),
                                  get_scheme("300w_68"), boxes="detector", progress=False)
    row = evaluation.summary_rows(results)[-1]
    assert row["faces"] == 2 and row["detected"] == 0 and "nme_io_mean" not in row


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, real_records):
    """(model, path): a tiny 64 px student with real-face BatchNorm statistics, saved."""
    from fld.crop import crop_face
    from fld.data.pipeline import read_image_rgb

    crops = np.stack([crop_face(read_image_rgb(r.image_path), box_from_landmarks(r.landmarks),
                                SIZE)[0] for r in real_records[:16]]) / 127.5 - 1.0
    model = bn_fitted_student(crops, "300w_68", steps=20)
    path = str(tmp_path_factory.mktemp("model") / "tiny.keras")
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def tiny_model_path(tiny_model):
    return tiny_model[1]


def test_keras_and_float_tflite_agree(tiny_model_path, real_records):
    from fld import export
    from fld.export.metadata import embed_metadata
    from fld.keras_engine import keras_landmarker, load_keras_model, model_info_for
    from fld.runtime.landmarker import Landmarker

    model = load_keras_model(tiny_model_path)
    info = model_info_for(model)
    tflite_path = tiny_model_path.replace(".keras", "_float.tflite")
    with open(tflite_path, "wb") as f:
        f.write(embed_metadata(export.convert(model, "none"), info))
    scheme = get_scheme("300w_68")
    records = real_records[:8]
    a = evaluation.evaluate(records, keras_landmarker(tiny_model_path), scheme, progress=False)
    b = evaluation.evaluate(records, Landmarker(tflite_path), scheme, progress=False)
    diffs = np.abs([x.nme_io - y.nme_io for x, y in zip(a, b)])
    assert diffs.max() < 1e-3, diffs


def test_cli_end_to_end_on_real_faces(tiny_model, data_300w, tmp_path):
    import csv
    import re

    from fld import metrics
    from fld.data.readers import read_annotations
    from fld.images import read_image_rgb
    from fld.keras_engine import KerasEngine, model_info_for
    from fld.runtime.landmarker import Landmarker

    model, tiny_model_path = tiny_model
    afw = os.path.join(data_300w, "afw")
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", tiny_model_path,
         "--data_dir", afw, "--scheme", "300w_68", "--limit", "20",
         "--report_dir", str(report)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("nme_io: ") and float(lines[-1].split()[1]) > 0
    assert "FR@0.10 %" in proc.stdout and " 20 " in proc.stdout
    for name in ("per_face.csv", "ced.png", "summary.md", "worst16_tiny.keras.png"):
        assert (report / name).stat().st_size > 100, name
    assert len((report / "per_face.csv").read_text().splitlines()) == 21

    # per_face.csv: one row per face, the first 20 faces by path, in that order, each
    # scored as the same model scores it here (crop from the landmark box, soft-argmax).
    with open(report / "per_face.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["model", "image", "subset", "detected", "nme_io", "nme_ip"]
        rows = list(reader)
    scheme = get_scheme("300w_68")
    records = sorted(read_annotations(afw, scheme=scheme), key=lambda r: r.image_path)[:20]
    assert [r["image"] for r in rows] == [r.image_path for r in records]
    assert {(r["model"], r["subset"], r["detected"]) for r in rows} == {("tiny.keras", "", "1")}
    landmarker = Landmarker.from_engine(KerasEngine(model),
                                        model_info_for(model, decode_method="soft_argmax"))
    pred = np.stack([landmarker.predict(read_image_rgb(r.image_path),
                                        box_from_landmarks(r.landmarks)) for r in records])
    gt = np.stack([r.landmarks for r in records])
    io_ = np.array([float(r["nme_io"]) for r in rows])
    ip_ = np.array([float(r["nme_ip"]) for r in rows])
    np.testing.assert_allclose(io_, metrics.nme(pred, gt, scheme, "inter_ocular"),
                               rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(ip_, metrics.nme(pred, gt, scheme, "inter_pupil"),
                               rtol=1e-4, atol=2e-6)
    assert np.all(ip_ > io_)  # pupils are closer together than outer eye corners: not swapped

    # The overall numbers, from the CSV's column: the printed nme_io, the printed table's
    # and summary.md's "all" row (one subset: the "all" row only).
    assert float(lines[-1].split()[1]) == pytest.approx(100 * io_.mean(), abs=2e-4)
    expected = {"subset": "all", "faces": "20", "detected": "20",
                "NME io %": 100 * io_.mean(), "median io %": 100 * np.median(io_),
                "NME ip %": 100 * ip_.mean(),
                "FR@0.08 %": 100 * np.mean(io_ > 0.08), "FR@0.10 %": 100 * np.mean(io_ > 0.10),
                "AUC@0.08": np.mean(np.clip(1 - io_ / 0.08, 0, 1)),
                "AUC@0.10": np.mean(np.clip(1 - io_ / 0.10, 0, 1))}

    def check_row(header, cells):
        assert header == list(expected), header
        for key, cell in zip(header, cells):
            want = expected[key]
            if isinstance(want, str):
                assert cell == want, (key, cell)
            else:  # 2 decimals (4 for AUC) of a value the CSV holds to 6 decimals
                assert float(cell) == pytest.approx(want, abs=0.006 if "%" in key else 6e-5), key

    header_at = next(i for i, line in enumerate(lines) if "NME io %" in line)
    header = re.split(r"\s{2,}", lines[header_at].strip())  # names 2+ spaces apart
    assert lines[header_at + 1].split()[0] == "all"
    check_row(header, lines[header_at + 1].split())
    summary = (report / "summary.md").read_text().splitlines()
    assert summary[0] == "# Evaluation summary" and "## tiny.keras" in summary
    table = [line for line in summary if line.startswith("|")]
    assert len(table) == 3 and set(table[1].replace("|", "")) == {"-"}
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    check_row(cells(table[0]), cells(table[2]))


def test_cli_rejects_a_model_of_the_wrong_kind(tmp_path, data_300w):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", str(bad),
         "--data_dir", os.path.join(data_300w, "afw"), "--limit", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "notes.keras" in proc.stderr


def test_cli_names_two_runs_best_models_by_path(tiny_model_path, data_300w, tmp_path):
    import shutil

    other = tmp_path / "run2" / os.path.basename(tiny_model_path)
    other.parent.mkdir()
    shutil.copy(tiny_model_path, other)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", tiny_model_path,
         "--model", str(other), "--data_dir", os.path.join(data_300w, "afw"), "--limit", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.normpath(tiny_model_path) in proc.stdout and str(other) in proc.stdout


def expected_layer_ratios(model, data_dir, limit):
    """What tools/probe_layers.py computes, recomputed in-process on the same faces."""
    from fld import export
    from fld.export.calibration import face_crops
    from fld.data.readers import read_annotations

    records = sorted(read_annotations(data_dir, scheme=get_scheme("300w_68")),
                     key=lambda r: r.image_path)[:limit]
    crops, used = face_crops(records, model.input_shape[1], progress=False, with_records=True)
    names, peaks = export.layer_peaks(model, crops)
    median = np.maximum(np.median(peaks, axis=0), 1e-6)
    faces = [os.path.relpath(r.image_path, data_dir) for r in used]
    return names, peaks, median, peaks / median, faces


@pytest.mark.slow   # a diagnostic tool end to end, recomputed in-process (~40 s)
def test_probe_layers_cli_on_real_faces(tiny_model, data_300w, tmp_path):
    def probe(*args):
        return subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", "probe_layers.py"), *args],
            capture_output=True, text=True, cwd=REPO, timeout=300)

    model, tiny_model_path = tiny_model
    afw = os.path.join(data_300w, "afw")
    # The in-memory model is the saved one (same weights, inference mode).
    names, peaks, median, ratios, faces = expected_layer_ratios(model, afw, 12)
    worst = ratios.max(axis=0)
    # A factor inside the middle half of the layers' worst ratios (at their widest gap
    # there): the table must appear, and both the --factor cut (some layers flagged, some
    # not) and the --top cut are exercised.
    ordered, m, top = np.sort(worst), len(names), 5
    k = max(range(m // 4, 3 * m // 4), key=lambda i: ordered[i] - ordered[i - 1])
    factor = float(f"{(ordered[k - 1] + ordered[k]) / 2:g}")
    flagged = int((worst > factor).sum())
    assert top < flagged < m and np.abs(worst - factor).min() > 1e-6 * factor
    proc = probe("--model", tiny_model_path, "--data_dir", afw, "--limit", "12",
                 "--factor", f"{factor:g}", "--top", str(top))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "on 12 faces" in lines[0] and f"{len(names)} layer outputs" in lines[0]
    ratio = float(lines[-1].split()[1])
    assert lines[-1].startswith("max_ratio: ") and ratio >= 1.0
    assert ratio == pytest.approx(worst.max(), rel=1e-3)
    assert "median peak" in lines[1] and "worst peak" in lines[1]
    rows = [line.split() for line in lines[2:2 + top]]
    summary = lines[2 + top]
    assert summary.startswith(f"{flagged} of {len(names)} layer outputs peak above {factor:g}x")
    # The table: min(flagged, --top) rows, worst first, each the layer's own numbers.
    expected_order = [j for j in np.argsort(-worst, kind="stable") if worst[j] > factor][:top]
    assert [r[0] for r in rows] == [names[j] for j in expected_order], rows
    printed = [float(r[3]) for r in rows]
    assert printed == sorted(printed, reverse=True) and printed[0] == pytest.approx(ratio, rel=2e-3)
    for r, j in zip(rows, expected_order):
        i = int(ratios[:, j].argmax())
        assert float(r[1]) == pytest.approx(median[j], rel=5e-3), (r, median[j])
        assert float(r[2]) == pytest.approx(peaks[i, j], rel=5e-3), (r, peaks[i, j])
        assert float(r[3]) == pytest.approx(worst[j], rel=5e-3), (r, worst[j])
        assert r[4] == faces[i] and r[4].endswith(".jpg")
    # The faces line: how many faces drive some layer above the factor, and per face, how many.
    above = ratios > factor
    driving = lines[3 + top]
    assert driving.startswith(f"faces driving any layer above {factor:g}x "
                              f"({int(above.any(axis=1).sum())}): ")
    for item in driving.split(": ", 1)[1].removesuffix(", ...").split(", "):
        face, count = item.rsplit(" (", 1)
        assert int(count.split()[0]) == int(above[faces.index(face)].sum()), item
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    proc = probe("--model", str(bad), "--data_dir", afw)
    assert proc.returncode == 1 and "notes.keras" in proc.stderr
    proc = probe("--model", tiny_model_path, "--data_dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "nowhere" in proc.stderr
