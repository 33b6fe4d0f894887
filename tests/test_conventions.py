"""Golden tests of the half-pixel conventions (0-based pixel centers, ``fld.crop``): the
iBUG reading, the crop, the crop's mirror, the heatmap cell rule and decode, the flip
pair's mirror and the training flip. Each puts a mark at a known place and checks
where it lands, so a half-pixel slip in any owner fails here (the measured x offset of
the shipped model: docs/experiments/2026-12-07-box-51-and-x-offset.md).
"""

import numpy as np
import pytest

from fld.codec import DECODE_METHODS, HeatmapCodec
from fld.crop import crop_image, crop_matrix, transform_points
from fld.schemes import get_scheme

S68 = get_scheme("300w_68")


def blob_image(height, width, center, sigma):
    """A float32 (H, W) Gaussian blob at ``center`` (x, y), peak 255, pixel centers at
    integers."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    d2 = (xs - center[0]) ** 2 + (ys - center[1]) ** 2
    return (255.0 * np.exp(-d2 / (2 * sigma**2))).astype(np.float32)


def centroid(image):
    """Intensity-weighted (x, y) of a (H, W) image."""
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    total = image.sum()
    return np.array([(xs * image).sum() / total, (ys * image).sum() / total])


def gaussian_maps(centers_cells, size, sigma_cells):
    """(size, size, K) Gaussians at (K, 2) heatmap-cell coordinates (cell centers at
    integers)."""
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-(grid[None] - centers_cells[:, :1]) ** 2 / (2 * sigma_cells**2))   # (K, W)
    gy = np.exp(-(grid[None] - centers_cells[:, 1:]) ** 2 / (2 * sigma_cells**2))   # (K, H)
    return np.einsum("kh,kw->hwk", gy, gx).astype(np.float32)


def test_ibug_pts_are_read_one_based_and_written_back(tmp_path):
    from fld.data.readers import read_pts, write_pts

    path = tmp_path / "face.pts"
    path.write_text("version: 1\nn_points: 2\n{\n1 1\n10.5 20.25\n}\n")
    np.testing.assert_array_equal(read_pts(str(path)), [[0.0, 0.0], [9.5, 19.25]])
    write_pts(str(tmp_path / "back.pts"), read_pts(str(path)))
    assert "\n1.000000 1.000000\n10.500000 20.250000\n" in (tmp_path / "back.pts").read_text()


def test_a_pixel_lands_on_the_crop_pixel_the_matrix_names():
    # scale 1 (crop side 64 = 1.2 x the box side) and a box center at a pixel edge (100.5):
    # image pixel x maps to crop pixel x - 69 exactly.
    size, side = 64, 64 / 1.2
    box = (100.5 - side / 2, 60.0 - side / 2, 100.5 + side / 2, 60.0 + side / 2)
    matrix = crop_matrix(box, size)
    np.testing.assert_allclose(matrix, [[1, 0, -69], [0, 1, 31.5 - 60.0]], atol=1e-5)
    image = np.zeros((120, 200, 3), np.uint8)
    image[70, 110] = 255
    crop = crop_image(image, matrix, size)
    # 60 + 31.5 - 60 is not an integer in y: the pixel spreads over rows 41 and 42 (half each)
    assert crop[41, 41, 0] == crop[42, 41, 0] and crop[41, 41, 0] > 100
    assert abs(int(crop[:, :, 0].astype(int).sum()) - 255) <= 2
    np.testing.assert_allclose(transform_points(matrix, [[110.0, 70.0]]), [[41.0, 41.5]])


@pytest.mark.parametrize("face_side, sigma", [(150.0, 3.0), (400.0, 8.0)])
def test_a_dot_lands_where_the_crop_matrix_says(face_side, sigma):
    """Sub-pixel dot -> crop (bilinear at zoom 0.36, box-averaged first at zoom 0.13):
    its centroid lands on the matrix's image of the dot."""
    dot = np.array([223.3, 171.6])
    image = np.repeat(blob_image(400, 480, dot, sigma)[..., None], 3, axis=2)
    image = np.round(image).astype(np.uint8)
    box = (dot[0] - 0.4 * face_side, dot[1] - 0.55 * face_side, dot[0] + 0.6 * face_side,
           dot[1] + 0.45 * face_side)
    matrix = crop_matrix(box, 64)
    got = centroid(crop_image(image, matrix, 64)[..., 0].astype(np.float64))
    np.testing.assert_allclose(got, transform_points(matrix, dot[None])[0], atol=0.03)


def test_the_crop_of_the_mirror_image_is_the_mirror_of_the_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 131, 3), np.uint8)
    box = np.array([30.3, 20.1, 90.8, 70.4])
    mirrored_box = np.array([130 - box[2], box[1], 130 - box[0], box[3]])   # x -> W - 1 - x
    crop = crop_image(image, crop_matrix(box, 48), 48).astype(int)
    crop_of_mirror = crop_image(image[:, ::-1].copy(), crop_matrix(mirrored_box, 48), 48)
    assert np.abs(crop_of_mirror.astype(int) - crop[:, ::-1]).max() <= 1
    # and points: the mirror image's point x' = W - 1 - x lands on crop pixel S - 1 - u
    point = np.array([[55.25, 40.0]])
    u = transform_points(crop_matrix(box, 48), point)
    u_mirror = transform_points(crop_matrix(mirrored_box, 48), S68.flip(
        np.repeat(point, 68, 0), 131)[:1])
    np.testing.assert_allclose(u_mirror, [[47 - u[0, 0], u[0, 1]]], atol=1e-4)


def test_scheme_flip_mirrors_about_the_image_center_and_swaps_pairs():
    points = np.zeros((68, 2), np.float32)
    points[36] = (10.0, 5.0)      # left eye's outer corner
    flipped = S68.flip(points, 100)
    np.testing.assert_allclose(flipped[45], (89.0, 5.0))   # becomes the right eye's
    np.testing.assert_allclose(S68.flip(flipped, 100), points)


def test_the_heatmap_cell_rule():
    codec = HeatmapCodec(S68, image_size=128, stride=4)
    # cell j's center is input pixel (j + 0.5) * 4 - 0.5: cell 0 covers pixels 0..3
    np.testing.assert_allclose(codec.to_image(np.array([0.0, 31.0])), [1.5, 125.5])
    np.testing.assert_allclose(codec.to_heatmap(np.array([1.5, 125.5])), [0.0, 31.0])
    # the crop's mirror S - 1 - x is the heatmap's mirror H - 1 - j
    x = np.array([17.25])
    np.testing.assert_allclose(codec.to_heatmap(127 - x), 31 - codec.to_heatmap(x))


@pytest.mark.parametrize("method", DECODE_METHODS)
def test_a_mirrored_heatmap_decodes_to_the_mirrored_coordinate(method):
    rng = np.random.default_rng(1)
    centers = rng.uniform(6, 26, (5, 2))
    maps = gaussian_maps(centers, 32, 1.2) + 0.01 * rng.random((32, 32, 5), np.float32)
    got = HeatmapCodec(S68, image_size=128).decode(maps, method)
    mirrored = HeatmapCodec(S68, image_size=128).decode(maps[:, ::-1], method)
    np.testing.assert_allclose(mirrored[:, 0], 31 - got[:, 0], atol=1e-4)
    np.testing.assert_allclose(mirrored[:, 1], got[:, 1], atol=1e-4)


def test_a_gaussian_rendered_at_x_decodes_to_x():
    codec = HeatmapCodec(S68, image_size=128, stride=4)
    crop_points = np.array([[40.3, 77.8], [63.5, 64.0], [90.9, 30.2]])
    cells = codec.to_heatmap(crop_points)
    # 0.8 cells wide: every method is unbiased (a 3-cell window holds the whole peak); at
    # the trained width (0.375 cells) the parabola is exact, while the means over the
    # sampled peak pull towards the cell center, the same on both sides of it.
    wide = gaussian_maps(cells, 32, 0.8)
    for method in ("soft_argmax", "local_soft_argmax", "parabola"):
        np.testing.assert_allclose(codec.decode_to_image(wide, method, 3), crop_points,
                                   atol=0.02, err_msg=method)
    sharp = gaussian_maps(cells, 32, codec.sigma_cells)
    np.testing.assert_allclose(codec.decode_to_image(sharp, "parabola"), crop_points, atol=1e-3)
    peaked = gaussian_maps(np.round(cells), 32, codec.sigma_cells)
    np.testing.assert_allclose(codec.decode_to_image(peaked, "argmax"),
                               codec.to_image(np.round(cells)))


def test_the_training_target_decodes_back_to_its_point():
    pytest.importorskip("tensorflow")
    codec = HeatmapCodec(S68, image_size=128, stride=4)
    crop_points = np.array([[40.3, 77.8], [63.5, 64.0]], np.float32)
    maps = np.asarray(codec.encode_heatmaps(codec.to_heatmap(crop_points)))
    np.testing.assert_allclose(codec.decode_to_image(maps, "parabola"), crop_points, atol=1e-3)


class DotEngine:
    """A stand-in network: finds the bright dot in each crop and puts every landmark's
    Gaussian on it (parabola-exact), so the runtime's whole path (crop, flip pair,
    decode, mirror back, average, inverse crop) must return the dot."""

    def __init__(self, codec):
        self.codec = codec

    def run(self, images):
        maps = []
        for image in images:
            weights = np.clip(image[..., 0] + 1.0, 0, None)   # [-1, 1] -> >= 0
            dot = self.codec.to_heatmap(centroid(weights))
            maps.append(gaussian_maps(np.repeat(dot[None], self.codec.scheme.num_points, 0),
                                      self.codec.heatmap_size, 1.0))
        return np.stack(maps)


@pytest.mark.parametrize("flip_pair", [True, False])
def test_the_runtime_returns_a_dot_where_it_is(flip_pair):
    from fld.runtime import Landmarker, make_model_info

    info = make_model_info("300w_68", image_size=64, quantization="none",
                           decode_method="parabola")
    import dataclasses

    info = dataclasses.replace(info, flip_pair=flip_pair)
    landmarker = Landmarker.from_engine(DotEngine(info.codec), info, flip_test=True)
    dot = np.array([131.3, 97.7])
    image = np.repeat(np.round(blob_image(200, 260, dot, 3.0))[..., None], 3, 2).astype(np.uint8)
    side = 64 / 1.2     # zoom 1: bilinear resampling keeps the dot's centroid exactly
    box = (dot[0] - 0.45 * side, dot[1] - 0.6 * side, dot[0] + 0.55 * side, dot[1] + 0.4 * side)
    points = landmarker.predict(image, box)
    np.testing.assert_allclose(points, np.repeat(dot[None], 68, 0), atol=0.02)


def test_the_training_flip_mirrors_image_and_points_about_the_same_axis():
    tf = pytest.importorskip("tensorflow")
    from fld.data import augment

    size = 32
    cfg = augment.AugmentConfig(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)   # flip only
    matrices, flips = augment.affine_params(tf.constant([3, 4]), 1, size, cfg)
    assert bool(flips[0])
    rng = np.random.default_rng(2)
    image = rng.random((1, size, size, 3)).astype(np.float32)
    warped = np.asarray(augment.warp(tf.constant(image), matrices, size))
    np.testing.assert_allclose(warped, image[:, :, ::-1], atol=1e-5)
    points = np.array([[[3.25, 7.5], [20.0, 1.0]]], np.float32)
    moved = np.asarray(augment.transform_points(matrices, tf.constant(points)))
    np.testing.assert_allclose(moved[..., 0], size - 1 - points[..., 0], atol=1e-5)
    np.testing.assert_allclose(moved[..., 1], points[..., 1], atol=1e-5)
    # the edge maps' flip, in heatmap cells (stride 4 at 32 px: an 8-cell map)
    codec = HeatmapCodec(S68, image_size=size, stride=4)
    cells = np.asarray(augment.rescale_affine(matrices, codec))[0]
    np.testing.assert_allclose(cells, [[-1, 0, 7], [0, 1, 0]], atol=1e-5)
