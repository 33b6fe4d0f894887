"""STAR loss (v2) on heatmaps, with an in-graph closed-form 2x2 eigen-decomposition.

Zhou et al., "STAR Loss: Reducing Semantic Ambiguity in Facial Landmark Detection",
CVPR 2023; the "v2" variant of the authors' code, which the paper we follow used
(METHOD.md section 5). Per landmark, on a (fused) heatmap P:

1. P <- P / max(sum P, 1e-6)
2. mu = sum P * grid, grid in [-1, 1]: x = 2u/(W-1) - 1, y = 2v/(H-1) - 1
3. Sigma = sum P (g - mu)(g - mu)^T / (V1 - V2/V1), V1 = sum P + 1e-5, V2 = sum P^2 + 1e-5
4. Sigma = V diag(lambda) V^T (eigenvectors as the columns of V)
5. e = gt - mu; loss_trans = sum_i smoothL1(|v_i . e|) / sqrt(lambda_i + 1e-5),
   smoothL1(d) = d^2 / 0.02 if d < 0.01 else d - 0.005
6. loss = loss_trans + w * (|lambda_1| + |lambda_2|), averaged over points (and batch).

Deviation from the reference code, which indexes ``evectors[:, :, 0]`` (a row of the
matrix returned by ``symeig``): we use columns, the true eigenvectors, as METHOD.md says.
keras.ops only; heatmaps are NHWC (B, H, W, K), landmarks (B, K, 2) in heatmap pixels (x, y).
"""

from __future__ import annotations

import keras
from keras import ops

# Below this value of ((a - c) / 2)^2 + b^2 the 2x2 covariance is treated as isotropic
# (equal eigenvalues): eigenvectors are then the identity and no gradient flows through
# their (undefined) direction. Covariances on the [-1, 1] grid are ~1e-4..1e-1, so this
# is far below any real anisotropy and above float32 round-off of typical entries.
_ISOTROPY_EPS = 1e-12


def symmetric_eig2x2(cov):
    """Eigen-decomposition of symmetric 2x2 matrices (..., 2, 2), closed form.

    Returns ``(evalues, evectors)`` like ``np.linalg.eigh``: eigenvalues ascending
    (..., 2) and unit eigenvectors as the COLUMNS of (..., 2, 2), so that
    ``cov = V diag(lambda) V^T``. With [[a, b], [b, c]], m = (a + c)/2,
    r = sqrt(((a - c)/2)^2 + b^2): lambda = m -/+ r, and the major eigenvector is
    (cos t, sin t) with t = atan2(b, (a - c)/2) / 2. Every sqrt/atan2 is guarded with the
    double-``where`` trick, so values and gradients stay finite when the eigenvalues are
    equal (r = 0); there the eigenvectors are the coordinate axes.
    """
    cov = ops.convert_to_tensor(cov)
    a = cov[..., 0, 0]
    c = cov[..., 1, 1]
    b = 0.5 * (cov[..., 0, 1] + cov[..., 1, 0])
    mean = 0.5 * (a + c)
    half_diff = 0.5 * (a - c)
    r2 = half_diff * half_diff + b * b
    isotropic = r2 <= _ISOTROPY_EPS
    r = ops.where(isotropic, 0.0, ops.sqrt(ops.where(isotropic, 1.0, r2)))
    angle = 0.5 * ops.arctan2(ops.where(isotropic, 0.0, b), ops.where(isotropic, 1.0, half_diff))
    cos, sin = ops.cos(angle), ops.sin(angle)
    evalues = ops.stack([mean - r, mean + r], axis=-1)
    # Columns: minor eigenvector (-sin, cos), major eigenvector (cos, sin).
    evectors = ops.stack([ops.stack([-sin, cos], axis=-1), ops.stack([cos, sin], axis=-1)], axis=-1)
    return evalues, evectors


DENOMINATOR_FLOOR = 1e-3  # of the unbiased covariance (heatmap_mean_and_covariance)


def _grid(size, dtype):
    """Cell centers 0..size-1 mapped to [-1, 1] (STAR's grid); [0] for size 1."""
    idx = ops.cast(ops.arange(size), dtype)
    return 2.0 * idx / float(max(size - 1, 1)) - 1.0


def heatmap_mean_and_covariance(heatmaps, epsilon=1e-5):
    """STAR steps 1-3: (B, H, W, K) heatmaps -> mean (B, K, 2) as (x, y) and Sigma (B, K, 2, 2).

    Both on the [-1, 1] grid. The unbiased-covariance denominator V1 - V2/V1 (about
    1 - sum P^2) is floored at ``DENOMINATOR_FLOOR``. It nears 0 when nearly all of a map's
    mass sits in one cell; there float32 cancellation leaves it at rounding noise, and the
    formula can turn a variance of ~1e-6 into huge eigenvalues (tests/test_losses.py; the
    likely cause of the students' validation-loss spikes, MODEL_CARD.md). Floored, such a
    map's Sigma stays below ~8 * (1 - sum P^2) / 1e-3 <= 8 (grid units); maps with two or
    more cells of mass are unchanged.
    """
    heatmaps = ops.convert_to_tensor(heatmaps)
    dtype = heatmaps.dtype
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    total = ops.maximum(ops.sum(heatmaps, axis=(1, 2)), 1e-6)  # (B, K)
    prob = heatmaps / total[:, None, None, :]
    xs = ops.reshape(_grid(width, dtype), (1, 1, width, 1))
    ys = ops.reshape(_grid(height, dtype), (1, height, 1, 1))
    mu_x = ops.sum(prob * xs, axis=(1, 2))  # (B, K)
    mu_y = ops.sum(prob * ys, axis=(1, 2))
    dx = xs - mu_x[:, None, None, :]  # (B, 1, W, K)
    dy = ys - mu_y[:, None, None, :]  # (B, H, 1, K)
    v1 = ops.sum(prob, axis=(1, 2)) + epsilon
    v2 = ops.sum(prob * prob, axis=(1, 2)) + epsilon
    denom = ops.maximum(v1 - v2 / v1, DENOMINATOR_FLOOR)
    sxx = ops.sum(prob * dx * dx, axis=(1, 2)) / denom
    sxy = ops.sum(prob * dx * dy, axis=(1, 2)) / denom
    syy = ops.sum(prob * dy * dy, axis=(1, 2)) / denom
    mean = ops.stack([mu_x, mu_y], axis=-1)
    cov = ops.stack([ops.stack([sxx, sxy], axis=-1), ops.stack([sxy, syy], axis=-1)], axis=-2)
    return mean, cov


def smooth_l1(d, scale=0.01):
    """STAR's smooth-L1 of a non-negative distance: d^2/(2 scale) below scale, else d - scale/2."""
    return ops.where(d < scale, d * d / (2.0 * scale), d - 0.5 * scale)


def star_loss_per_point(landmarks, heatmaps, w=1.0, epsilon=1e-5, scale=0.01):
    """STAR v2 loss per landmark, shape (B, K). ``landmarks`` in heatmap pixels (x, y)."""
    heatmaps = ops.cast(heatmaps, "float32")
    landmarks = ops.cast(landmarks, "float32")
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    mean, cov = heatmap_mean_and_covariance(heatmaps, epsilon)
    size = ops.convert_to_tensor([max(width - 1, 1), max(height - 1, 1)], "float32")
    gt = 2.0 * landmarks / size - 1.0
    error = gt - mean  # (B, K, 2)
    evalues, evectors = symmetric_eig2x2(cov)
    # Projection on each eigenvector (column i): proj_i = sum_j V[j, i] e_j.
    proj = ops.sum(evectors * error[..., :, None], axis=-2)  # (B, K, 2)
    dist = smooth_l1(ops.abs(proj), scale)
    trans = ops.sum(dist / ops.sqrt(ops.maximum(evalues, 0.0) + epsilon), axis=-1)
    eigen = ops.sum(ops.abs(evalues), axis=-1)
    return trans + w * eigen


@keras.saving.register_keras_serializable(package="fld")
class STARLoss(keras.losses.Loss):
    """STAR v2 loss: ``loss(landmarks, heatmaps)``.

    ``y_true``: (B, K, 2) landmarks in heatmap pixel coordinates (x, y), 0-based cell
    centers. ``y_pred``: (B, H, W, K) non-negative heatmaps (the fused heatmaps).
    ``call`` returns one value per sample (the mean over points).

    Args:
        w: weight of the eigenvalue restriction (1).
        epsilon: the reference's 1e-5 in the covariance and in sqrt(lambda + eps).
        scale: smooth-L1 threshold on the [-1, 1] grid (0.01).
    """

    def __init__(
        self, w=1.0, epsilon=1e-5, scale=0.01, name="star", reduction="sum_over_batch_size", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.w = float(w)
        self.epsilon = float(epsilon)
        self.scale = float(scale)

    def call(self, y_true, y_pred):
        per_point = star_loss_per_point(y_true, y_pred, self.w, self.epsilon, self.scale)
        return ops.mean(per_point, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(w=self.w, epsilon=self.epsilon, scale=self.scale)
        return config
