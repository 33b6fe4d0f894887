"""Tests for fld.metrics (golden values by hand) and the Keras NormalizedMeanError."""

import numpy as np
import pytest

from fld import metrics
from fld.schemes import convert_68_to_51


def _pattern_68():
    """Ground truth: point i at (10 i, i mod 5); outer eye corners 36 -> (360, 1), 45 -> (450, 0)."""
    i = np.arange(68, dtype=np.float64)
    return np.stack([10.0 * i, i % 5], axis=-1)


def test_nme_golden_inter_ocular():
    gt = _pattern_68()
    # Inter-ocular distance = |(450, 0) - (360, 1)| = sqrt(90^2 + 1) = sqrt(8101).
    io = np.sqrt(8101.0)
    pred_a = gt + [3.0, 4.0]  # every point off by 5 px -> NME = 5 / io
    pred_b = gt.copy()
    pred_b[:34] += [3.0, 4.0]  # half the points off by 5 px -> mean 2.5 px -> 2.5 / io
    pred_c = gt.copy()
    pred_c[0] += [0.0, 68.0]  # one point off by 68 px -> mean 1 px -> 1 / io
    got = metrics.nme(np.stack([pred_a, pred_b, pred_c]), np.stack([gt, gt, gt]), "300w_68")
    np.testing.assert_allclose(got, [5.0 / io, 2.5 / io, 1.0 / io], rtol=1e-12)
    # Single face (K, 2) input; 51-point scheme gives the same (corners 19, 28 = 36, 45).
    np.testing.assert_allclose(metrics.nme(pred_a, gt, "300w_68"), [5.0 / io])
    np.testing.assert_allclose(
        metrics.nme(convert_68_to_51(pred_a), convert_68_to_51(gt), "pair_51"), [5.0 / io])


def test_nme_golden_inter_pupil():
    gt = _pattern_68()
    # Left pupil = mean of points 36..41: x = 10 * 38.5 = 385, y = (1+2+3+4+0+1)/6 = 11/6.
    # Right pupil = mean of 42..47: x = 445, y = (2+3+4+0+1+2)/6 = 2. Distance
    # sqrt(60^2 + (1/6)^2).
    ip = np.hypot(60.0, 1.0 / 6.0)
    got = metrics.nme(gt + [3.0, 4.0], gt, "300w_68", norm="inter_pupil")
    np.testing.assert_allclose(got, [5.0 / ip], rtol=1e-12)
    with pytest.raises(ValueError, match="normalization"):
        metrics.nme(gt, gt, "300w_68", norm="bbox")


def test_nme_rejects_bad_input():
    gt = _pattern_68()
    with pytest.raises(ValueError, match="51"):
        metrics.nme(gt[:51], gt[:51], "300w_68")
    flat = np.zeros((68, 2))
    with pytest.raises(ValueError, match="face"):
        metrics.nme(flat, flat, "300w_68")


ERRORS = [0.02, 0.05, 0.09, 0.12]


def test_failure_rate_and_auc_golden():
    # FR@0.10: only 0.12 > 0.10 -> 1/4. FR@0.08: 0.09 and 0.12 -> 2/4.
    assert metrics.failure_rate(ERRORS, 0.10) == pytest.approx(0.25)
    assert metrics.failure_rate(ERRORS, 0.08) == pytest.approx(0.5)
    assert metrics.failure_rate([0.10], 0.10) == 0.0  # strictly greater fails
    # Exact AUC = mean(max(0, 1 - e / T)):
    # T = 0.10: (0.8 + 0.5 + 0.1 + 0) / 4 = 0.35
    # T = 0.08: (0.75 + 0.375 + 0 + 0) / 4 = 0.28125
    assert metrics.auc(ERRORS, 0.10) == pytest.approx(0.35, abs=1e-12)
    assert metrics.auc(ERRORS, 0.08) == pytest.approx(0.28125, abs=1e-12)
    # Same as integrating the CED finely by trapezoids (the reference method).
    xs, ys = metrics.ced_curve(ERRORS, 0.10, num=100001)
    assert np.trapezoid(ys, xs) / 0.10 == pytest.approx(0.35, abs=1e-4)


def test_ced_curve_and_summary():
    xs, ys = metrics.ced_curve(ERRORS, 0.10, num=11)
    assert xs[0] == 0.0 and xs[-1] == pytest.approx(0.10)
    # CED(x) = fraction with error <= x: 0 at 0, 0.5 at 0.06, 0.75 at 0.10.
    assert (ys[0], ys[6], ys[-1]) == (0.0, 0.5, 0.75)
    assert np.all(np.diff(ys) >= 0)
    s = metrics.summarize(ERRORS)
    assert set(s) == {"mean", "median", "fr_08", "fr_10", "auc_08", "auc_10"}
    assert s["mean"] == pytest.approx(0.07) and s["median"] == pytest.approx(0.07)
    assert (s["fr_08"], s["fr_10"]) == (pytest.approx(0.5), pytest.approx(0.25))
    assert (s["auc_08"], s["auc_10"]) == (pytest.approx(0.28125), pytest.approx(0.35))


def test_plot_ced_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "ced.png"
    out = metrics.plot_ced({"teacher": rng.gamma(4, 0.008, 200),
                            "student": rng.gamma(4, 0.01, 200)}, str(path), title="test")
    assert out == str(path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ced.png"]


@pytest.mark.parametrize("scheme,norm", [("300w_68", "inter_ocular"),
                                         ("300w_68", "inter_pupil"),
                                         ("wflw_98", "inter_pupil")])
def test_keras_metric_matches_numpy(scheme, norm):
    keras = pytest.importorskip("keras")
    from fld.training.nme_metric import NormalizedMeanError

    k = {"300w_68": 68, "wflw_98": 98}[scheme]
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 256, size=(7, k, 2)).astype(np.float32)
    pred = (gt + rng.normal(0, 4, size=gt.shape)).astype(np.float32)
    metric = NormalizedMeanError(scheme, norm=norm)
    metric.update_state(gt[:3], pred[:3])
    metric.update_state(gt[3:], pred[3:])
    expected = metrics.nme(pred, gt, scheme, norm=norm).mean()
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)

    clone = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(clone, NormalizedMeanError) and clone.get_config() == metric.get_config()
    metric.reset_state()
    assert float(metric.result()) == 0.0
