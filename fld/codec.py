"""The heatmap codec: landmarks <-> heatmaps, in one unit.

Pixel convention (see ``fld.crop``): 0-based pixel centers. A heatmap at ``stride``
covers the input crop with cells of ``stride`` x ``stride`` pixels; the center of cell
``j`` sits at input pixel ``(j + 0.5) * stride - 0.5``. So::

    heatmap_xy = (input_xy + 0.5) / stride - 0.5
    input_xy   = (heatmap_xy + 0.5) * stride - 0.5

Encoding (targets of training):
- landmark heatmaps / point maps: one Gaussian per landmark sampled at the cell centers,
  peak 1 at the (sub-pixel) landmark, ``sigma`` given in INPUT pixels (1.5 at 256 as in the
  reference, i.e. 0.375 cells at stride 4). We do not truncate at 3 sigma by default: the
  tails are < 1.1% of the peak and keeping them keeps the sub-pixel decode exact.
  TensorFlow, graph-safe (used inside ``tf.data``).
- edge maps: each scheme edge is a uniform Catmull-Rom spline through its points (5
  samples per segment; closed curves closed), drawn as a 1-cell anti-aliased line at
  heatmap resolution (peak 1). The spline is linear in the points, so affine
  augmentation can warp a drawn edge map instead of redrawing it. Numpy + OpenCV.

Decoding (numpy for the host/runtime, keras.ops inside models and metrics):
- ``argmax``: the best cell.
- ``soft_argmax``: expectation over the sum-normalized (ReLU'd) map (the reference's).
- ``local_soft_argmax``: expectation in a (2r+1)^2 window around the best cell.
- ``parabola``: per-axis parabola through log values at the best cell and its
  neighbors (a DARK-style refinement; exact for a Gaussian).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fld.schemes import Scheme

DECODE_METHODS = ("argmax", "soft_argmax", "local_soft_argmax", "parabola")
DEFAULT_DECODE = "local_soft_argmax"   # the runtime's default host-side decode
DECODE_OPS_METHODS = ("argmax", "soft_argmax", "local_soft_argmax")   # what decode_ops runs
# The decode of the training's validation NME and of float Keras models: the fused map's
# mean, which STAR trains.
VALIDATION_DECODE = "soft_argmax"
DEFAULT_DECODE_RADIUS = 2   # local_soft_argmax's window radius, in heatmap cells
DEFAULT_STRIDE = 4          # input pixels per heatmap cell of every fld network


def catmull_rom_matrix(num_points: int, closed: bool, samples_per_segment: int = 5):
    """(S, num_points) matrix whose rows give spline samples as point combinations.

    Uniform Catmull-Rom; end points of an open curve are duplicated.
    """
    n = num_points
    segments = n if closed else n - 1
    rows = []
    for seg in range(segments):
        idx = [seg - 1, seg, seg + 1, seg + 2]
        idx = [i % n for i in idx] if closed else [min(max(i, 0), n - 1) for i in idx]
        for s in range(samples_per_segment):
            t = s / samples_per_segment
            w = 0.5 * np.array([
                -t**3 + 2 * t**2 - t,
                3 * t**3 - 5 * t**2 + 2,
                -3 * t**3 + 4 * t**2 + t,
                t**3 - t**2,
            ])
            row = np.zeros(n)
            for i, wi in zip(idx, w):
                row[i] += wi
            rows.append(row)
    last = np.zeros(n)
    last[0 if closed else n - 1] = 1.0
    rows.append(last)
    return np.asarray(rows, np.float32)


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
    """Encodes landmarks to maps and decodes maps to landmarks.

    Args:
        scheme: the landmark scheme (K points, E edges).
        image_size: side of the square input crop in pixels.
        stride: input pixels per heatmap cell.
        sigma: Gaussian standard deviation in input pixels.
        cutoff_sigmas: zero the Gaussian beyond this many sigmas (None: no cut-off).
        edge_samples: spline samples per edge segment.
    """

    scheme: Scheme
    image_size: int = 256
    stride: int = DEFAULT_STRIDE
    sigma: float = 1.5
    cutoff_sigmas: float | None = None
    edge_samples: int = 5

    def __post_init__(self):
        if self.image_size % self.stride:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of stride {self.stride}")

    @property
    def heatmap_size(self) -> int:
        return self.image_size // self.stride

    @property
    def sigma_cells(self) -> float:
        return self.sigma / self.stride

    # --- coordinates -----------------------------------------------------------------
    def to_heatmap(self, xy):
        """Input-pixel coordinates -> heatmap-cell coordinates (numpy or tensors)."""
        return (xy + 0.5) / self.stride - 0.5

    def to_image(self, uv):
        """Heatmap-cell coordinates -> input-pixel coordinates (numpy or tensors)."""
        return (uv + 0.5) * self.stride - 0.5

    # --- encoding (TensorFlow, graph-safe) ------------------------------------------
    def encode_heatmaps(self, landmarks_hm):
        """Gaussian maps for (..., K, 2) landmarks in heatmap cells -> (..., H, W, K).

        Separable: exp(-(dx^2 + dy^2) / 2s^2) = gx(x) * gy(y).
        """
        import tensorflow as tf

        landmarks_hm = tf.convert_to_tensor(landmarks_hm, tf.float32)
        grid = tf.range(self.heatmap_size, dtype=tf.float32)
        s2 = 2.0 * self.sigma_cells**2
        dx = grid - landmarks_hm[..., 0:1]  # (..., K, W)
        dy = grid - landmarks_hm[..., 1:2]  # (..., K, H)
        gx, gy = tf.exp(-dx * dx / s2), tf.exp(-dy * dy / s2)
        maps = tf.einsum("...kh,...kw->...hwk", gy, gx)
        if self.cutoff_sigmas is not None:
            cut = float(np.exp(-0.5 * self.cutoff_sigmas**2))
            maps = tf.where(maps < cut, tf.zeros_like(maps), maps)
        return maps

    # --- encoding edges (numpy + OpenCV) -----------------------------------------------
    def edge_sample_matrices(self) -> list[np.ndarray]:
        """One spline matrix per scheme edge (see ``catmull_rom_matrix``)."""
        return [catmull_rom_matrix(len(e.points), e.closed, self.edge_samples)
                for e in self.scheme.edges]

    def draw_edges(self, landmarks_hm: np.ndarray, size: int | None = None) -> np.ndarray:
        """Edge maps (size, size, E) uint8 (255 = on the curve) for (K, 2) heatmap coords.

        ``size`` defaults to the heatmap size; a larger canvas (with landmarks in its own
        cell coordinates) is drawn for caching before augmentation.
        """
        import cv2

        size = size or self.heatmap_size
        shift = 4  # sub-pixel drawing: coordinates in 1/16 cells
        pts = np.asarray(landmarks_hm, np.float32)
        out = np.zeros((size, size, self.scheme.num_edges), np.uint8)
        for e, (edge, mat) in enumerate(zip(self.scheme.edges, self.edge_sample_matrices())):
            curve = mat @ pts[list(edge.points)]
            if not np.all(np.isfinite(curve)):
                continue
            fixed = np.round(curve * (1 << shift)).astype(np.int32)
            canvas = np.zeros((size, size), np.uint8)
            cv2.polylines(canvas, [fixed], False, 255, 1, cv2.LINE_AA, shift)
            out[..., e] = canvas
        return out

    # --- decoding (numpy) --------------------------------------------------------------
    def decode(self, heatmaps: np.ndarray, method: str = DEFAULT_DECODE,
               radius: int = DEFAULT_DECODE_RADIUS) -> np.ndarray:
        """(..., H, W, K) heatmaps -> (..., K, 2) landmarks in heatmap cells (numpy)."""
        return decode_numpy(heatmaps, method, radius)

    def decode_to_image(self, heatmaps: np.ndarray, method: str = DEFAULT_DECODE,
                        radius: int = DEFAULT_DECODE_RADIUS) -> np.ndarray:
        """Like ``decode`` but in input-crop pixels."""
        return self.to_image(self.decode(heatmaps, method, radius))


def decode_numpy(heatmaps: np.ndarray, method: str = DEFAULT_DECODE,
                 radius: int = DEFAULT_DECODE_RADIUS) -> np.ndarray:
    """(..., H, W, K) heatmaps -> (..., K, 2) (x, y) in heatmap cells."""
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}: use one of {DECODE_METHODS}")
    hm = np.asarray(heatmaps, np.float32)
    lead, (h, w, k) = hm.shape[:-3], hm.shape[-3:]
    if method == "soft_argmax":   # in the (H, W, K) layout: no transpose (runtime speed)
        hm = hm.reshape((-1, h, w, k))
        with np.errstate(invalid="ignore", over="ignore"):
            out = _expectation(np.maximum(hm, 0.0))
        if not np.isfinite(out).all():   # NaN / infinite cells count as 0 (rare: redo)
            out = _expectation(np.maximum(np.nan_to_num(hm, nan=0.0, posinf=0.0,
                                                        neginf=0.0), 0.0))
        return out.reshape(lead + (k, 2))
    hm = np.moveaxis(hm.reshape((-1, h, w, k)), -1, 1).reshape(-1, h, w)  # (N, H, W)
    hm = np.where(np.isfinite(hm), hm, 0.0)
    flat = hm.reshape(len(hm), -1).argmax(axis=1)
    py, px = np.divmod(flat, w)
    out = np.stack([px, py], axis=-1).astype(np.float32)
    if method == "local_soft_argmax":
        out = _window_expectation(hm, px, py, radius, fallback=out)
    elif method == "parabola":
        out = out + _parabola_offsets(hm, px, py)
    return out.reshape(lead + (k, 2))


def _expectation(weights: np.ndarray) -> np.ndarray:
    """Weighted mean (x, y) of each of the K maps of (B, H, W, K) non-negative weights ->
    (B, K, 2); the map's center where a map has no weight."""
    b, h, w, k = weights.shape
    # one matrix product: (3, H*W) rows of 1, x, y against (B, H*W, K) -> (B, 3, K)
    sums = _moment_rows(h, w) @ weights.reshape(b, h * w, k)
    total = sums[:, 0]                                          # (B, K)
    safe = np.maximum(total, 1e-12)
    out = np.stack([sums[:, 1] / safe, sums[:, 2] / safe], axis=-1).astype(np.float32)
    center = np.array([(w - 1) / 2, (h - 1) / 2], np.float32)
    return np.where((total > 1e-12)[..., None], out, center)


@functools.lru_cache(maxsize=16)
def _moment_rows(h: int, w: int) -> np.ndarray:
    """(3, H*W) float32: 1, x and y of each cell of an H x W map, row-major."""
    y, x = np.divmod(np.arange(h * w, dtype=np.float32), np.float32(w))
    rows = np.stack([np.ones(h * w, np.float32), x, y])
    rows.setflags(write=False)
    return rows


def _window_expectation(hm: np.ndarray, px, py, radius: int, fallback) -> np.ndarray:
    """Weighted mean (x, y) of the non-negative values within ``radius`` cells of the peak.

    Gathers only the (2r+1)^2 window of each map (cells outside the map count as 0).
    """
    n, h, w = hm.shape
    offsets = np.arange(-radius, radius + 1)
    xs = px[:, None] + offsets  # (N, 2r+1)
    ys = py[:, None] + offsets
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    values = hm[np.arange(n)[:, None, None], np.clip(ys, 0, h - 1)[:, :, None],
                np.clip(xs, 0, w - 1)[:, None, :]]
    weights = np.where(inside, np.maximum(values, 0.0), 0.0)  # (N, 2r+1, 2r+1)
    total = weights.sum(axis=(1, 2))
    x = (weights.sum(axis=1) * xs).sum(axis=1)
    y = (weights.sum(axis=2) * ys).sum(axis=1)
    safe = np.maximum(total, 1e-12)
    mean = np.stack([x / safe, y / safe], axis=-1).astype(np.float32)
    return np.where((total > 1e-12)[:, None], mean, fallback)


def _parabola_offsets(hm: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Sub-cell offsets from a parabola through log values around the peak, per axis."""
    n, h, w = hm.shape
    idx = np.arange(n)
    logs = np.log(np.maximum(hm, 1e-10))
    offsets = np.zeros((n, 2), np.float32)
    for axis, (p, size) in enumerate(((px, w), (py, h))):
        lo, hi = np.clip(p - 1, 0, size - 1), np.clip(p + 1, 0, size - 1)
        if axis == 0:
            l0, l1, l2 = logs[idx, py, lo], logs[idx, py, px], logs[idx, py, hi]
        else:
            l0, l1, l2 = logs[idx, lo, px], logs[idx, py, px], logs[idx, hi, px]
        curvature = l0 - 2.0 * l1 + l2
        valid = (p > 0) & (p < size - 1) & (curvature < -1e-6)
        off = np.where(valid, 0.5 * (l0 - l2) / np.where(valid, curvature, -1.0), 0.0)
        offsets[:, axis] = np.clip(off, -0.5, 0.5)
    return offsets


def decode_ops(heatmaps, method: str = DEFAULT_DECODE, radius: int = DEFAULT_DECODE_RADIUS):
    """(B, H, W, K) heatmaps -> (B, K, 2) landmarks in heatmap cells, with keras.ops.

    Supports ``argmax``, ``soft_argmax`` and ``local_soft_argmax``; differentiable for
    ``soft_argmax``. Used in-graph for validation NME.
    """
    from keras import ops

    if method not in DECODE_OPS_METHODS:
        raise ValueError(f"decode_ops supports argmax / soft_argmax / local_soft_argmax, "
                         f"not {method!r}")
    shape = ops.shape(heatmaps)
    h, w = shape[1], shape[2]
    hm = ops.transpose(heatmaps, (0, 3, 1, 2))  # (B, K, H, W)
    xs = ops.cast(ops.arange(w), "float32")
    ys = ops.cast(ops.arange(h), "float32")
    flat = ops.argmax(ops.reshape(hm, (shape[0], shape[3], -1)), axis=-1)
    py = ops.cast(flat // w, "float32")
    px = ops.cast(flat % w, "float32")
    peak = ops.stack([px, py], axis=-1)
    if method == "argmax":
        return peak
    weights = ops.relu(hm)
    if method == "local_soft_argmax":
        in_x = ops.cast(ops.abs(xs[None, None, :] - px[..., None]) <= radius, "float32")
        in_y = ops.cast(ops.abs(ys[None, None, :] - py[..., None]) <= radius, "float32")
        weights = weights * in_y[..., :, None] * in_x[..., None, :]
    total = ops.sum(weights, axis=(2, 3))
    ex = ops.sum(ops.sum(weights, axis=2) * xs, axis=-1)
    ey = ops.sum(ops.sum(weights, axis=3) * ys, axis=-1)
    safe = ops.maximum(total, 1e-12)
    mean = ops.stack([ex / safe, ey / safe], axis=-1)
    return ops.where((total > 1e-12)[..., None], mean, peak)
