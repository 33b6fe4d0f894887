import dataclasses
import logging

import numpy as np
import pytest
import tensorflow as tf

from fld import crop
from fld.codec import HeatmapCodec
from fld.data.augment import AugmentConfig
from fld.data.pipeline import CropCache, ImageError, make_batch_fn, make_dataset, read_image_rgb
from fld.data.records import Record
from fld.schemes import get_scheme

SIZE = 128


@pytest.fixture(scope="module")
def codec():
    return HeatmapCodec(get_scheme("300w_68"), image_size=SIZE, stride=4)


@pytest.fixture(scope="module")
def cache(real_records, codec):
    return CropCache.build(real_records[:12], codec, progress=False)


def first_batch(ds):
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def test_shapes_and_ranges(cache, codec):
    images, targets = first_batch(make_dataset(cache, codec, batch_size=4, seed=0))
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
    assert -1.0 <= images.min() and images.max() <= 1.0
    assert targets["heatmaps"].shape == (4, 32, 32, 68)
    assert targets["edges"].shape == (4, 32, 32, 9)
    assert 0.0 <= targets["edges"].min() and targets["edges"].max() <= 1.0
    assert targets["landmarks"].shape == (4, 68, 2)


def test_seeded_pipeline_is_deterministic(cache, codec):
    a = first_batch(make_dataset(cache, codec, batch_size=4, seed=7))
    b = first_batch(make_dataset(cache, codec, batch_size=4, seed=7))
    c = first_batch(make_dataset(cache, codec, batch_size=4, seed=8))
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1]["landmarks"], b[1]["landmarks"])
    assert not np.allclose(a[1]["landmarks"], c[1]["landmarks"])


def test_eager_equals_inside_tf_data(cache, codec):
    ds = make_dataset(cache, codec, batch_size=4, seed=3, shuffle=False)
    images, targets = first_batch(ds)
    seed = next(iter(tf.data.Dataset.random(seed=3, rerandomize_each_iteration=True).batch(2)))
    fn = make_batch_fn(codec, cache.to_output, AugmentConfig())
    eager_images, eager_targets = fn(cache.images[:4], cache.landmarks[:4], cache.edges[:4], seed)
    assert np.allclose(eager_images.numpy(), images, atol=1e-5)
    for key in targets:
        assert np.allclose(eager_targets[key].numpy(), targets[key], atol=1e-5), key


def test_validation_crop_equals_the_crop_rule(real_records, cache, codec):
    images, targets = first_batch(make_dataset(cache, codec, batch_size=2, training=False))
    record = real_records[0]
    matrix = crop.crop_matrix(crop.box_from_landmarks(record.landmarks), SIZE)
    expected = codec.to_heatmap(crop.transform_points(matrix, record.landmarks))
    assert np.allclose(targets["landmarks"][0], expected, atol=1e-3)
    direct = crop.crop_image(read_image_rgb(record.image_path), matrix, SIZE) / 127.5 - 1
    assert np.abs(images[0] - direct).mean() < 0.03  # two resamplings vs one


def test_downscaled_crop_reads_only_its_window_and_keeps_the_geometry(real_records):
    """A face in a large photo (here a real face scaled up 4x, as from a 4K camera): the
    crop area-averages only the window it samples, so it is the same picture as the
    crop of the original image, and a face cut by the image border stays black there."""
    import cv2

    record = real_records[0]
    image = read_image_rgb(record.image_path)
    big = cv2.resize(image, (image.shape[1] * 4, image.shape[0] * 4),
                     interpolation=cv2.INTER_CUBIC)
    box = np.asarray(crop.box_from_landmarks(record.landmarks), np.float64)
    small_crop = crop.crop_image(image, crop.crop_matrix(box, SIZE), SIZE).astype(float)
    big_box = (box + 0.5) * 4 - 0.5           # the same face in the 4x image's pixels
    big_crop = crop.crop_image(big, crop.crop_matrix(big_box, SIZE), SIZE).astype(float)
    assert np.abs(big_crop - small_crop).mean() < 3.0   # two resamplings of one picture
    window = crop._source_window(big.shape[:2], crop.crop_matrix(big_box, SIZE), SIZE, 0)
    assert (window[2] - window[0]) * (window[3] - window[1]) < 0.5 * big.shape[0] * big.shape[1]
    # Shifted half out of the image on the left: the outside part is black.
    shifted = big_box - np.array([big_box[0] + 0.5 * (big_box[2] - big_box[0])] * 2 + [0, 0]) \
        * np.array([1, 0, 1, 0])
    cut = crop.crop_image(big, crop.crop_matrix(shifted, SIZE), SIZE)
    assert cut[:, :SIZE // 4].max() == 0 and cut[:, SIZE // 2:].mean() > 20


def test_dot_at_a_landmark_lands_on_its_heatmap_peak(cache, codec):
    """Affine consistency: image, landmarks and heatmaps move together."""
    k = 30  # nose bridge
    images = np.zeros_like(cache.images[:8])
    landmarks = cache.landmarks[:8].copy()
    for i in range(8):
        x, y = np.round(landmarks[i, k]).astype(int)
        images[i, y - 1:y + 2, x - 1:x + 2] = 255
        landmarks[i, k] = [x, y]  # the dot's exact center
    cfg = dataclasses.replace(AugmentConfig.none(), flip_prob=0.5, rotation_sigma_deg=30,
                              scale_sigma=0.15, shift_sigma=0.05)
    fn = make_batch_fn(codec, cache.to_output, cfg)
    out, targets = fn(images, landmarks, cache.edges[:8], tf.constant([5, 9]))
    out, hm, pts = out.numpy(), targets["heatmaps"].numpy(), targets["landmarks"].numpy()
    perm = np.asarray(codec.scheme.flip_perm)
    flipped = np.abs(pts[:, k] - pts[:, perm[k]]).sum(-1) > 0  # where k moved
    for i in range(8):
        # Index k after a flip is the mirror point; the dot belongs to perm[k] then.
        j = k if k == perm[k] else (perm[k] if flipped[i] else k)
        bright = out[i].mean(-1)
        yy, xx = np.unravel_index(np.argmax(bright), bright.shape)
        weights = np.maximum(bright - bright.max() * 0.5, 0)
        cy, cx = [np.sum(weights * g) / weights.sum() for g in np.indices(bright.shape)]
        dot = codec.to_heatmap(np.array([cx, cy]))
        assert np.linalg.norm(dot - pts[i, j]) < 0.25, (i, dot, pts[i, j])
        peak = codec.decode(hm[i], "parabola")[j]
        assert np.linalg.norm(peak - pts[i, j]) < 0.05


def test_flip_uses_the_scheme_permutation(cache, codec):
    flip_only = dataclasses.replace(AugmentConfig.none(), flip_prob=1.0)
    plain = make_batch_fn(codec, cache.to_output, AugmentConfig.none())
    mirror = make_batch_fn(codec, cache.to_output, flip_only)
    args = (cache.images[:2], cache.landmarks[:2], cache.edges[:2], tf.constant([1, 2]))
    img_a, tgt_a = plain(*args)
    img_b, tgt_b = mirror(*args)
    scheme = codec.scheme
    assert np.allclose(tgt_b["landmarks"].numpy(),
                       scheme.flip(tgt_a["landmarks"].numpy(), codec.heatmap_size), atol=1e-4)
    assert np.allclose(img_b.numpy(), img_a.numpy()[:, :, ::-1], atol=1e-4)
    edges_back = tgt_b["edges"].numpy()[:, :, ::-1][..., list(scheme.edge_flip_perm())]
    assert np.allclose(edges_back, tgt_a["edges"].numpy(), atol=1e-4)


def test_corrupt_image_is_named_or_skipped(tmp_path, real_records, codec, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    records = [real_records[0], Record(str(bad), real_records[0].landmarks)]
    with pytest.raises(ImageError, match="broken.jpg"):
        CropCache.build(records, codec, progress=False)
    with caplog.at_level(logging.WARNING):
        cache = CropCache.build(records, codec, skip_bad=True, progress=False)
    assert len(cache) == 1 and "skipped 1" in caplog.text


def test_wrong_point_count_is_named(real_records):
    codec51 = HeatmapCodec(get_scheme("pair_51"), image_size=SIZE)
    with pytest.raises(ValueError, match="has 68 landmarks, scheme 'pair_51' needs 51"):
        CropCache.build(real_records[:1], codec51, progress=False)


def test_affine_helpers_match_the_3x3_matrix_algebra():
    from fld.crop import compose_affine, invert_affine

    rng = np.random.default_rng(0)
    full = lambda m: np.vstack([np.asarray(m, np.float64), [0, 0, 1]])   # noqa: E731
    for _ in range(20):
        a, b = rng.normal(size=(2, 2, 3)) * [1, 1, 100]
        np.testing.assert_allclose(invert_affine(a), np.linalg.inv(full(a))[:2],
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(compose_affine(a, b), (full(a) @ full(b))[:2],
                                   rtol=1e-5, atol=1e-3)
        assert invert_affine(a).dtype == compose_affine(a, b).dtype == np.float32
    with pytest.raises(np.linalg.LinAlgError, match="singular"):
        invert_affine([[1, 2, 3], [2, 4, 6]])
