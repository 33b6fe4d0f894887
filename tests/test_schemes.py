import json

import numpy as np
import pytest

from fld import schemes
from fld.schemes import get_scheme


@pytest.mark.parametrize("name", sorted(schemes.BUILTIN_SCHEMES))
def test_builtin_scheme_is_consistent(name):
    s = get_scheme(name)
    perm = np.asarray(s.flip_perm)
    assert np.array_equal(perm[perm], np.arange(s.num_points))
    eperm = np.asarray(s.edge_flip_perm())
    assert np.array_equal(eperm[eperm], np.arange(s.num_edges))
    matrix, bias = s.edge_to_point()
    assert matrix.shape == (s.num_edges, s.num_points)
    assert np.all((matrix.sum(0) > 0) | (bias == 1))


def test_expected_sizes_and_eye_corners():
    assert [get_scheme(n).num_points for n in ("300w_68", "pair_51", "wflw_98", "cofw_29")] \
        == [68, 51, 98, 29]
    assert get_scheme("300w_68").io_indices == (36, 45)
    assert get_scheme("pair_51").io_indices == (19, 28)
    assert get_scheme("wflw_98").io_indices == (60, 72)
    assert get_scheme("cofw_29").io_indices == (8, 9)
    assert get_scheme("pair_51").num_edges == 8 and get_scheme("300w_68").num_edges == 9


def test_51_is_68_without_jaw_including_flip():
    s68, s51 = get_scheme("300w_68"), get_scheme("pair_51")
    pts = np.random.default_rng(0).uniform(0, 100, (68, 2)).astype(np.float32)
    assert np.array_equal(schemes.convert_68_to_51(pts), pts[17:])
    assert np.allclose(s51.flip(pts[17:], 100), s68.flip(pts, 100)[17:])
    with pytest.raises(ValueError, match="68 points"):
        schemes.convert_68_to_51(pts[:51])


def test_adapt_landmarks_names_the_source():
    s = get_scheme("wflw_98")
    with pytest.raises(ValueError, match="face.pts: has 68 points"):
        schemes.adapt_landmarks(np.zeros((68, 2)), s, "face.pts")


def test_flip_twice_is_identity_and_mirrors_sides(real_records):
    s = get_scheme("300w_68")
    pts = real_records[0].landmarks
    assert np.allclose(s.flip(s.flip(pts, 300), 300), pts, atol=1e-4)
    flipped = s.flip(pts, 300)
    # After a mirror the image-left eye (36-41) is still left of the image-right one.
    assert flipped[36:42, 0].mean() < flipped[42:48, 0].mean()
    assert flipped[17:22, 0].mean() < flipped[22:27, 0].mean()
    assert flipped[48, 0] < flipped[54, 0] and flipped[0, 0] < flipped[16, 0]
    # The flipped eye corner 36 is the mirror of the original corner 45.
    assert np.allclose(flipped[36], [299 - pts[45, 0], pts[45, 1]])


def test_custom_scheme_file(tmp_path):
    spec = {"name": "tiny_5", "num_points": 5, "flip_pairs": [[0, 1], [3, 4]],
            "io_indices": [0, 1], "edges": [{"name": "mouth", "points": [3, 2, 4]}]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    s = get_scheme(str(path))
    assert s.num_points == 5 and s.flip_perm == (1, 0, 2, 4, 3)
    assert s.edge_flip_perm() == (0,)


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ('{"num_points": 3}', "malformed scheme"),
    ('{"num_points": 3, "io_indices": [0, 5]}', "out of range"),
    ('{"num_points": 3, "io_indices": [0, 1], "flip_pairs": [[0, 1], [1, 2]]}', "flip_perm"),
])
def test_bad_custom_scheme_names_file(tmp_path, bad, message):
    path = tmp_path / "bad.json"
    path.write_text(bad)
    with pytest.raises(ValueError, match=message) as err:
        get_scheme(str(path))
    assert "bad.json" in str(err.value)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        get_scheme("300w_67")
