import numpy as np
import pytest

from fld.codec import HeatmapCodec, catmull_rom_matrix, decode_numpy, decode_ops
from fld.schemes import get_scheme


@pytest.fixture(scope="module")
def codec():
    return HeatmapCodec(get_scheme("pair_51"), image_size=64, stride=4, sigma=1.5)


def test_pixel_mapping_round_trip(codec):
    xy = np.array([[0.0, 0.0], [-0.5, -0.5], [63.5, 10.25]])
    assert np.allclose(codec.to_image(codec.to_heatmap(xy)), xy)
    # The top-left cell's center is the center of the top-left 4x4 pixel block.
    assert np.allclose(codec.to_image(np.zeros(2)), [1.5, 1.5])


def test_encode_peak_and_shape(codec):
    pts = np.full((51, 2), 5.0, np.float32)
    maps = codec.encode_heatmaps(pts[None]).numpy()
    assert maps.shape == (1, 16, 16, 51)
    assert np.isclose(maps[0, 5, 5].min(), 1.0) and maps.max() <= 1.0


@pytest.mark.parametrize("sigma", [1.5, 4.0])
def test_subpixel_round_trip_below_005_cells(sigma):
    codec = HeatmapCodec(get_scheme("300w_68"), image_size=256, stride=4, sigma=sigma)
    rng = np.random.default_rng(0)
    pts = rng.uniform(3, 60, (4, 68, 2)).astype(np.float32)
    maps = codec.encode_heatmaps(pts).numpy()
    decoded = codec.decode(maps, "parabola")
    assert np.abs(decoded - pts).max() < 0.05
    # Integer decoding is off by up to half a cell: the refinement is what helps.
    assert np.abs(codec.decode(maps, "argmax") - pts).max() > 0.2


def test_soft_argmax_round_trip_for_wide_gaussians():
    codec = HeatmapCodec(get_scheme("cofw_29"), image_size=256, stride=4, sigma=8.0)
    pts = np.random.default_rng(1).uniform(12, 50, (2, 29, 2)).astype(np.float32)
    maps = codec.encode_heatmaps(pts).numpy()
    assert np.abs(codec.decode(maps, "local_soft_argmax", radius=5) - pts).max() < 0.05


@pytest.mark.parametrize("method", ["argmax", "soft_argmax", "local_soft_argmax"])
def test_keras_ops_decode_matches_numpy(codec, method):
    maps = np.random.default_rng(2).normal(size=(3, 16, 16, 51)).astype(np.float32)
    expected = decode_numpy(maps, method)
    got = np.asarray(decode_ops(maps, method))
    assert np.allclose(got, expected, atol=1e-4)


def test_decode_rejects_unknown_method(codec):
    with pytest.raises(ValueError, match="unknown decode method"):
        codec.decode(np.zeros((16, 16, 51)), "median")


def test_spline_passes_through_points():
    pts = np.array([[0, 0], [4, 1], [8, 5], [9, 12]], np.float32)
    for closed in (False, True):
        curve = catmull_rom_matrix(4, closed, 5) @ pts
        for p in pts:
            assert np.min(np.linalg.norm(curve - p, axis=1)) < 1e-5
        assert np.allclose(curve[-1], pts[0] if closed else pts[-1])


def test_edge_maps_lie_on_the_curve(codec):
    pts = np.zeros((51, 2), np.float32) + 8
    pts[19:25] = [[3, 8], [5, 6], [7, 6], [9, 8], [7, 10], [5, 10]]  # image-left eye
    edges = codec.draw_edges(pts)
    assert edges.shape == (16, 16, 8)
    eye = get_scheme("pair_51").edges[4]
    assert eye.name == "eye_left"
    for x, y in pts[19:25].round().astype(int):
        assert edges[y, x, 4] > 100
    assert edges[8, 6, 4] == 0  # the eye's center is not on its outline


def test_soft_argmax_ignores_nan_and_infinite_cells():
    """A map with a NaN and an infinite cell decodes like the map with those cells at 0."""
    from fld.codec import decode_numpy

    rng = np.random.default_rng(0)
    maps = rng.random((1, 16, 16, 3), dtype=np.float32) ** 8
    bad = maps.copy()
    bad[0, 2, 3, 0], bad[0, 5, 9, 1], bad[0, 7, 7, 2] = np.nan, np.inf, -np.inf
    clean = maps.copy()
    clean[0, 2, 3, 0] = clean[0, 5, 9, 1] = clean[0, 7, 7, 2] = 0.0
    np.testing.assert_allclose(decode_numpy(bad, "soft_argmax"),
                               decode_numpy(clean, "soft_argmax"), atol=1e-5)
    assert np.isfinite(decode_numpy(bad, "soft_argmax")).all()
