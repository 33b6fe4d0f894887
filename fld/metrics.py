"""Landmark accuracy metrics: NME, failure rate, AUC, CED curve and its plot.

Definitions (METHOD.md section 8):

- NME of one face = mean over its K points of the point-to-point distance between
  prediction and ground truth, divided by a ground-truth normalizer:
  ``inter_ocular`` = distance between the scheme's outer eye corners (``io_indices``),
  ``inter_pupil`` = distance between the pupil centers, each the mean of the points in
  ``scheme.pupils[0]`` / ``[1]``.
- FR@T = fraction of faces with NME > T.
- CED(x) = fraction of faces with NME <= x.
- AUC@T = (1/T) * integral of CED from 0 to T. Computed EXACTLY: the CED is a step
  function, and integrating each face's step gives
  ``AUC@T = mean_i max(0, 1 - nme_i / T)``. (Reference code, e.g. ADNet/STAR, samples
  the CED every 1e-4 and integrates by trapezoids; that differs from the exact value by
  less than 1e-4 / T.)

Numpy only: the TensorFlow-free runtime and evaluation import this. The formula itself
(``nme_terms``) takes its array module as an argument, so the streaming Keras metric
(``fld.training.nme_metric.NormalizedMeanError``) runs the same lines with ``keras.ops``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from fld.fileio import atomic_path
from fld.schemes import Scheme, get_scheme

NORMS = ("inter_ocular", "inter_pupil")


def normalizer_points(scheme, norm: str = "inter_ocular") -> tuple[tuple[int, ...], ...]:
    """The two point groups whose centers' distance normalizes the error.

    ``inter_ocular``: the outer eye corners (one point each); ``inter_pupil``: the points
    of each eye (their mean is the pupil center)."""
    scheme = get_scheme(scheme)
    if norm == "inter_ocular":
        a, b = scheme.io_indices
        return (int(a),), (int(b),)
    if norm == "inter_pupil":
        return tuple(scheme.pupils[0]), tuple(scheme.pupils[1])
    raise ValueError(f"unknown NME normalization {norm!r}: use one of {NORMS}")


def nme_terms(pred, gt, groups, xp=np):
    """The NME formula, once for every backend: (mean point error, normalizer), each (N,).

    ``pred``, ``gt``: (N, K, 2); ``groups``: ``normalizer_points``'s two index groups;
    ``xp``: ``numpy`` or ``keras.ops`` (both spell these operations alike). NME is
    their ratio; callers decide what a zero normalizer means.
    """
    error = xp.mean(xp.sqrt(xp.sum(xp.square(pred - gt), axis=-1)), axis=-1)
    left = xp.mean(xp.take(gt, list(groups[0]), axis=1), axis=1)
    right = xp.mean(xp.take(gt, list(groups[1]), axis=1), axis=1)
    return error, xp.sqrt(xp.sum(xp.square(left - right), axis=-1))


def normalizer(gt: np.ndarray, scheme, norm: str = "inter_ocular") -> np.ndarray:
    """Per-face normalizing distance of (N, K, 2) ground truth -> (N,)."""
    gt = np.asarray(gt, np.float64)
    return nme_terms(gt, gt, normalizer_points(scheme, norm))[1]


def nme(pred, gt, scheme: str | Scheme, norm: str = "inter_ocular") -> np.ndarray:
    """Per-face normalized mean error.

    Args:
        pred, gt: (N, K, 2) or (K, 2) landmarks in the same pixel frame.
        scheme: landmark scheme (name, JSON path or ``Scheme``) giving the eye indices.
        norm: ``"inter_ocular"`` (outer eye corners) or ``"inter_pupil"``.
    Returns:
        (N,) float64 NME per face (a fraction, not a percentage).
    """
    scheme = get_scheme(scheme)
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.ndim == 2 and gt.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"nme: pred {pred.shape} and gt {gt.shape} must both be (N, K, 2)")
    if pred.shape[1] != scheme.num_points:
        raise ValueError(f"nme: {pred.shape[1]} points, scheme {scheme.name!r} has "
                         f"{scheme.num_points}")
    error, d = nme_terms(pred, gt, normalizer_points(scheme, norm))
    degenerate = np.flatnonzero(~(d > 0) | ~np.isfinite(d))
    if degenerate.size:
        raise ValueError(f"nme: zero or non-finite {norm} distance in ground truth of "
                         f"face(s) {degenerate[:10].tolist()}")
    return error / d


def _errors(nmes) -> np.ndarray:
    e = np.asarray(nmes, np.float64).reshape(-1)
    if e.size == 0:
        raise ValueError("no NME values given")
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("NME values must be finite and >= 0")
    return e


def _check_threshold(threshold: float) -> float:
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    return float(threshold)


def failure_rate(nmes, threshold: float = 0.10) -> float:
    """Fraction of faces with NME strictly above ``threshold``."""
    return float(np.mean(_errors(nmes) > _check_threshold(threshold)))


def auc(nmes, threshold: float = 0.10) -> float:
    """Area under the CED curve from 0 to ``threshold``, divided by ``threshold``.

    Exact for the step-function CED: ``mean(max(0, 1 - nme / threshold))``.
    """
    t = _check_threshold(threshold)
    return float(np.mean(np.clip(1.0 - _errors(nmes) / t, 0.0, 1.0)))


def ced_curve(nmes, threshold: float = 0.10, num: int = 1001):
    """Cumulative error distribution: (thresholds, fraction of faces with NME <= x).

    ``thresholds`` is ``num`` evenly spaced values from 0 to ``threshold``.
    """
    e = np.sort(_errors(nmes))
    xs = np.linspace(0.0, _check_threshold(threshold), int(num))
    return xs, np.searchsorted(e, xs, side="right") / e.size


def summarize(nmes) -> dict:
    """mean, median, FR and AUC at 0.08 and 0.10, as plain floats."""
    e = _errors(nmes)
    return {
        "mean": float(e.mean()),
        "median": float(np.median(e)),
        "fr_08": failure_rate(e, 0.08),
        "fr_10": failure_rate(e, 0.10),
        "auc_08": auc(e, 0.08),
        "auc_10": auc(e, 0.10),
    }


def plot_ced(curves: Mapping[str, np.ndarray], path_png: str, threshold: float = 0.10,
             title: str = "Cumulative error distribution") -> str:
    """Writes a CED plot of one or more models' per-face NMEs to ``path_png``.

    Args:
        curves: model name -> (N,) per-face NMEs.
        path_png: output PNG path (written atomically).
        threshold: right end of the x axis and the AUC/FR threshold.
        title: plot title.
    Returns:
        ``path_png``.
    """
    if not curves:
        raise ValueError("plot_ced: no curves given")
    # Lazy: matplotlib is only needed for plots. The Figure API with the Agg canvas
    # leaves pyplot's global backend and state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, nmes in curves.items():
        xs, ys = ced_curve(nmes, threshold)
        label = (f"{name}: NME {100 * float(np.mean(nmes)):.2f}%, "
                 f"AUC@{threshold:g} {auc(nmes, threshold):.4f}")
        ax.plot(xs, ys, label=label)
    ax.set_xlim(0.0, threshold)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("NME")
    ax.set_ylabel("fraction of faces")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")

    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png")
    return path_png
