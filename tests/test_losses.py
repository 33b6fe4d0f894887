"""Tests for fld.losses: hand-computed AWing, STAR against numpy, KD, MSE, AAM."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fld.losses import (
    AAMLoss,
    AdaptiveWingLoss,
    HeatmapDistillationLoss,
    HeatmapMSELoss,
    STARLoss,
    awing_elementwise,
    foreground_weight_map,
    symmetric_eig2x2,
)

RNG = np.random.default_rng(0)


# --- Adaptive Wing ----------------------------------------------------------------------
def _awing_by_hand(d, y, omega=14.0, theta=0.5, eps=1.0, alpha=2.1):
    """One element straight from the formula in METHOD.md section 5."""
    p = alpha - y
    if abs(d) < theta:
        return omega * math.log(1 + abs(d / eps) ** p)
    a = omega / (1 + (theta / eps) ** p) * p * (theta / eps) ** (p - 1) / eps
    c = theta * a - omega * math.log(1 + (theta / eps) ** p)
    return a * abs(d) - c


def test_awing_matches_hand_computed_values():
    target = np.array([1.0, 0.0, 0.0, 0.0, 0.0], np.float32).reshape(1, 1, 5, 1)
    pred = np.array([0.8, 0.9, 0.1, 0.0, 0.6], np.float32).reshape(1, 1, 5, 1)
    # 3x3 dilation of the target is [1, 1, 0, 0, 0] -> weights [11, 11, 1, 1, 1].
    e0 = 14 * math.log(1 + 0.2**1.1)  # |d| < theta, y = 1
    p = 2.1
    a = 14 / (1 + 0.5**p) * p * 0.5 ** (p - 1)
    c = 0.5 * a - 14 * math.log(1 + 0.5**p)
    e1 = a * 0.9 - c  # |d| >= theta, y = 0
    e2 = 14 * math.log(1 + 0.1**2.1)
    e4 = a * 0.6 - c
    expected = (11 * e0 + 11 * e1 + e2 + 0.0 + e4) / 5
    assert expected == pytest.approx(
        (11 * _awing_by_hand(-0.2, 1) + 11 * _awing_by_hand(0.9, 0) + _awing_by_hand(0.1, 0)
         + _awing_by_hand(0.6, 0)) / 5
    )
    got = float(AdaptiveWingLoss()(target, pred))
    assert got == pytest.approx(expected, rel=1e-5)
    # Unweighted elements, one by one.
    values = np.asarray(awing_elementwise(target, pred)).ravel()
    np.testing.assert_allclose(values, [e0, e1, e2, 0.0, e4], rtol=1e-5, atol=1e-7)


def test_awing_is_continuous_at_theta_and_has_finite_gradients():
    y = np.full((1, 1, 4, 1), 0.3, np.float32)
    pred = y + np.array([0.5 - 1e-4, 0.5 + 1e-4, 0.0, -0.7], np.float32).reshape(1, 1, 4, 1)
    v = np.asarray(awing_elementwise(y, pred)).ravel()
    assert v[0] == pytest.approx(v[1], abs=1e-2)
    assert v[2] == pytest.approx(0.0, abs=1e-12)  # the 1e-12 floor inside the power
    x = tf.Variable(y)  # prediction == target everywhere: |delta| = 0
    with tf.GradientTape() as tape:
        loss = AdaptiveWingLoss()(y, x)
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_foreground_weight_map_dilates_3x3():
    target = np.zeros((1, 5, 5, 1), np.float32)
    target[0, 2, 2, 0] = 0.5
    target[0, 0, 4, 0] = 0.1  # below the 0.2 threshold
    w = np.asarray(foreground_weight_map(target))[0, :, :, 0]
    expected = np.ones((5, 5))
    expected[1:4, 1:4] = 11
    np.testing.assert_array_equal(w, expected)


def test_aam_loss_is_weighted_sum_of_awing_terms():
    hm = RNG.random((2, 8, 8, 5), dtype=np.float32)
    edges = RNG.random((2, 8, 8, 2), dtype=np.float32)
    points, pred_edges = hm * 0.5, edges[::-1]
    aw = AdaptiveWingLoss()
    expected = 10 * float(aw(hm, points)) + 3 * float(aw(edges, pred_edges))
    loss = AAMLoss(point_weight=10, edge_weight=3)
    got = float(loss({"heatmaps": hm, "edges": edges}, {"points": points, "edges": pred_edges}))
    assert got == pytest.approx(expected, rel=1e-5)


# --- STAR ---------------------------------------------------------------------------------
def _star_numpy(landmarks, heatmaps, w=1.0, eps=1e-5):
    """Straightforward float64 numpy STAR v2 (loops, np.linalg.eigh)."""
    b, h, wd, k = heatmaps.shape
    xs = 2 * np.arange(wd) / (wd - 1) - 1
    ys = 2 * np.arange(h) / (h - 1) - 1
    total = 0.0
    for n in range(b):
        for p in range(k):
            hm = heatmaps[n, :, :, p].astype(np.float64)
            prob = hm / max(hm.sum(), 1e-6)
            mu = np.array([(prob * xs[None, :]).sum(), (prob * ys[:, None]).sum()])
            gx, gy = np.meshgrid(xs, ys)
            d = np.stack([gx - mu[0], gy - mu[1]], -1)  # (H, W, 2)
            v1 = prob.sum() + eps
            v2 = (prob**2).sum() + eps
            cov = np.einsum("hw,hwi,hwj->ij", prob, d, d) / (v1 - v2 / v1)
            lam, vec = np.linalg.eigh(cov)
            gt = 2 * landmarks[n, p] / np.array([wd - 1, h - 1]) - 1
            err = gt - mu
            trans = 0.0
            for i in range(2):
                proj = abs(vec[:, i] @ err)
                sl1 = proj**2 / 0.02 if proj < 0.01 else proj - 0.005
                trans += sl1 / np.sqrt(lam[i] + eps)
            total += trans + w * (abs(lam[0]) + abs(lam[1]))
    return total / (b * k)


def _gaussians(landmarks, size, sigma):
    g = np.arange(size, dtype=np.float32)
    x = landmarks[..., 0][:, None, None, :]
    y = landmarks[..., 1][:, None, None, :]
    return np.exp(-((g[None, None, :, None] - x) ** 2 + (g[None, :, None, None] - y) ** 2) / (2 * sigma**2))


def test_star_matches_numpy_reference_on_random_maps():
    hm = RNG.random((2, 16, 16, 5), dtype=np.float32)
    lm = RNG.uniform(0, 15, (2, 5, 2)).astype(np.float32)
    got = float(STARLoss()(lm, hm))
    assert got == pytest.approx(_star_numpy(lm, hm), rel=1e-4)


def test_star_matches_numpy_reference_on_peaked_maps():
    lm = RNG.uniform(3, 12, (2, 5, 2)).astype(np.float32)
    # Anisotropic, peaked maps: Gaussians near (not at) the landmarks, stretched in x.
    hm = _gaussians(lm + 0.7, 16, 1.0) * _gaussians(lm + 0.7, 16, 2.0) ** 0.5
    got = float(STARLoss(w=0.5)(lm, hm))
    assert got == pytest.approx(_star_numpy(lm, hm, w=0.5), rel=1e-3)


def test_eig2x2_matches_numpy_eigh():
    m = RNG.normal(size=(64, 2, 2)).astype(np.float32)
    cov = m @ np.swapaxes(m, -1, -2) * 1e-2  # symmetric PSD, varied scale
    lam, vec = (np.asarray(t) for t in symmetric_eig2x2(cov))
    ref_lam, ref_vec = np.linalg.eigh(cov.astype(np.float64))
    np.testing.assert_allclose(lam, ref_lam, rtol=1e-4, atol=1e-7)
    # Columns are eigenvectors: equal to numpy's up to sign.
    dots = np.abs(np.einsum("nji,nji->ni", vec, ref_vec))
    np.testing.assert_allclose(dots, 1.0, atol=1e-4)
    recon = vec @ (lam[..., None] * np.swapaxes(vec, -1, -2))
    np.testing.assert_allclose(recon, cov, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 1e-3, 0.4])
def test_eig2x2_equal_eigenvalues_values_and_finite_gradients(value):
    cov = tf.Variable(np.eye(2, dtype=np.float32)[None] * value)
    with tf.GradientTape() as tape:
        lam, vec = symmetric_eig2x2(cov)
        out = tf.reduce_sum(lam * [1.0, 2.0]) + tf.reduce_sum(vec * [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(lam.numpy(), np.linalg.eigh(cov.numpy())[0], atol=1e-7)
    v = vec.numpy()[0]
    np.testing.assert_allclose(v.T @ v, np.eye(2), atol=1e-6)
    assert np.all(np.isfinite(tape.gradient(out, cov).numpy()))


@pytest.mark.parametrize("kind", ["isotropic", "uniform", "zero"])
def test_star_gradients_finite_for_degenerate_maps(kind):
    lm = np.array([[[7.0, 7.0], [3.0, 9.0]]], np.float32)
    if kind == "isotropic":  # Gaussians centered on cells: equal eigenvalues
        hm = _gaussians(np.array([[[7.0, 7.0], [7.0, 7.0]]], np.float32), 15, 1.5)
    elif kind == "uniform":
        hm = np.ones((1, 15, 15, 2), np.float32)
    else:
        hm = np.zeros((1, 15, 15, 2), np.float32)
    x = tf.Variable(hm)
    with tf.GradientTape() as tape:
        loss = STARLoss()(lm, x)
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
    if kind != "zero":
        assert float(loss) == pytest.approx(_star_numpy(lm, hm), rel=1e-3)


@pytest.mark.parametrize("leak", [1e-7, 1e-5, 1e-4])
def test_star_covariance_bounded_for_nearly_one_hot_maps(leak):
    """All mass but ``leak`` in one cell: the unbiased covariance's denominator is ~leak,
    and without its floor float32 rounding made Sigma (and the loss) explode."""
    from fld.losses.star import heatmap_mean_and_covariance

    hm = np.full((1, 32, 32, 1), leak / 1023, np.float32)
    hm[0, 5, 7, 0] = 1.0 - leak
    _, cov = heatmap_mean_and_covariance(hm * 0.05)
    lam = np.linalg.eigvalsh(np.asarray(cov, np.float64)[0, 0])
    assert np.all(np.isfinite(lam)) and lam.max() < 8 * 2 * leak / 1e-3 + 1e-6
    loss = float(STARLoss()(np.array([[[7.0, 5.0]]], np.float32), hm))
    assert np.isfinite(loss) and loss < 10.0


def test_star_prefers_the_right_location():
    lm = np.array([[[5.0, 6.0]]], np.float32)
    good = _gaussians(lm, 16, 1.0)
    bad = _gaussians(lm + 3.0, 16, 1.0)
    assert float(STARLoss()(lm, good)) < float(STARLoss()(lm, bad))


# --- distillation and MSE -------------------------------------------------------------
@pytest.mark.parametrize("form", ["mse", "l2_sum", "kl"])
def test_distillation_zero_when_student_equals_teacher(form):
    hm = RNG.random((2, 8, 8, 5), dtype=np.float32)
    loss = HeatmapDistillationLoss(form=form)
    assert float(loss(hm, hm)) == pytest.approx(0.0, abs=1e-6)
    x = tf.Variable(hm)
    with tf.GradientTape() as tape:
        value = loss(hm, x)
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))


def test_distillation_values():
    t = RNG.random((2, 4, 4, 3), dtype=np.float32)
    s = RNG.random((2, 4, 4, 3), dtype=np.float32)
    mse = 100 * np.mean((s - t) ** 2)
    assert float(HeatmapDistillationLoss()(t, s)) == pytest.approx(mse, rel=1e-5)
    per_sample = np.sqrt(((s - t) ** 2).sum(axis=(1, 2))).sum(axis=-1)  # sum_k ||.||_2
    paper = HeatmapDistillationLoss(form="l2_sum", reduction="sum")
    assert float(paper(t, s)) == pytest.approx(per_sample.sum(), rel=1e-5)
    assert float(HeatmapDistillationLoss(weight=2.0)(t, s)) == pytest.approx(mse / 50, rel=1e-5)
    with pytest.raises(ValueError):
        HeatmapDistillationLoss(form="l1")


def test_kl_distillation_matches_numpy_and_ignores_the_maps_scale():
    t = RNG.random((2, 4, 4, 3), dtype=np.float32)
    s = RNG.random((2, 4, 4, 3), dtype=np.float32)

    def dist(m):
        flat = np.maximum(m.reshape(2, -1, 3), 0).astype(np.float64)
        flat = flat + 1e-4 * flat.mean(axis=1, keepdims=True) + 1e-12
        return flat / flat.sum(axis=1, keepdims=True)

    p, q = dist(t), dist(s)
    expected = np.mean(np.sum(p * np.log(p / q), axis=1), axis=-1).mean()
    kl = HeatmapDistillationLoss(form="kl")
    assert float(kl(t, s)) == pytest.approx(expected, rel=1e-4)
    assert float(kl(t, 7.0 * s)) == pytest.approx(expected, rel=1e-4)   # scale-free
    # a student peak one cell off costs more than one on the teacher's peak
    peak = np.zeros((1, 8, 8, 1), np.float32)
    peak[0, 3, 3, 0] = 1.0
    near, far = np.roll(peak, 1, axis=2), np.roll(peak, 4, axis=2)
    blur = peak + 0.1
    assert float(kl(peak, blur)) < float(kl(peak, near)) <= float(kl(peak, far)) + 1e-6


def test_aam_distillation_is_the_aam_loss_against_the_teachers_maps():
    from fld.losses.aam import AAMLoss

    aam = AAMLoss()
    teacher = {"fused": RNG.random((2, 8, 8, 5), dtype=np.float32),
               "points": RNG.random((2, 8, 8, 5), dtype=np.float32),
               "edges": RNG.random((2, 8, 8, 3), dtype=np.float32)}
    student = {k: RNG.random(v.shape, dtype=np.float32) for k, v in teacher.items()}
    kd = HeatmapDistillationLoss(form="aam", weight=0.5)
    expected = 0.5 * np.asarray(aam.per_sample(
        {"heatmaps": teacher["points"], "edges": teacher["edges"]}, student))
    np.testing.assert_allclose(np.asarray(kd.per_sample(teacher, student, aam)), expected,
                               rtol=1e-6)
    assert np.all(np.asarray(kd.per_sample(teacher, teacher, aam)) <
                  np.asarray(kd.per_sample(teacher, student, aam)))
    with pytest.raises(ValueError, match="AAMLoss"):
        kd.per_sample(teacher, student)
    with pytest.raises(ValueError, match="output dicts"):
        kd(teacher["fused"], student["fused"])


def test_heatmap_mse():
    t = RNG.random((2, 4, 4, 3), dtype=np.float32)
    s = RNG.random((2, 4, 4, 3), dtype=np.float32)
    assert float(HeatmapMSELoss()(t, s)) == pytest.approx(np.mean((s - t) ** 2), rel=1e-5)


@pytest.mark.parametrize(
    "loss",
    [
        AdaptiveWingLoss(foreground_weight=5.0),
        STARLoss(w=0.5),
        HeatmapDistillationLoss(form="l2_sum", weight=3.0),
        HeatmapDistillationLoss(form="kl", weight=0.5),
        HeatmapMSELoss(weight=2.0),
    ],
)
def test_losses_serialize_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


def test_aam_config_round_trip():
    loss = AAMLoss(point_weight=2.0, edge_weight=3.0, awing={"alpha": 2.0})
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored.get_config() == loss.get_config()
