"""Temporal smoothing of landmarks in video (the tracking itself: ``fld.runtime.tracking``).

``OneEuroFilter``: the 1-Euro filter of Casiez, Roussel & Vogel, "1 Euro Filter: A
Simple Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012
(https://gery.casiez.net/1euro/). An exponential low-pass filter whose cutoff rises with
the signal's speed: ``cutoff = min_cutoff + beta * |dx/dt|`` (the speed itself low-passed
at ``d_cutoff``), smoothing factor ``alpha = 1 / (1 + tau / T_e)`` with
``tau = 1 / (2 pi cutoff)`` and ``T_e`` the time since the previous sample. Slow motion is
smoothed hard (low jitter), fast motion passes with little lag.

``PointSmoother``: that filter over one tracked face's landmarks, in units of the face
size, restarted when the face jumps.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from fld.crop import box_from_landmarks


def _alpha(cutoff, period: float):
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / period)


class OneEuroFilter:
    """1-Euro filter over arrays of any fixed shape, e.g. (K, 2) landmarks.

    Args:
        min_cutoff: cutoff frequency (Hz) at zero speed; lower = smoother, more lag.
        beta: speed coefficient; higher = less lag on fast motion.
        d_cutoff: cutoff (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("OneEuroFilter: min_cutoff and d_cutoff must be > 0, beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    def __call__(self, x, timestamp: float) -> np.ndarray:
        """Filters sample ``x`` taken at ``timestamp`` seconds; returns the estimate."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(timestamp)
            return x.astype(np.float32)
        period = float(timestamp) - self._t
        if period <= 0:  # repeated or out-of-order timestamp: keep the last estimate
            return self._x.astype(np.float32)
        speed = (x - self._x) / period
        a_d = _alpha(self.d_cutoff, period)
        self._dx = a_d * speed + (1 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), period)
        self._x = a * x + (1 - a) * self._x
        self._t = float(timestamp)
        return self._x.astype(np.float32)


class PointSmoother:
    """One-Euro smoothing of one face's (K, 2) landmarks through a video.

    The filter works in units of the face size (points divided by the landmark box's
    longer side when the track starts), so its parameters do not depend on the
    resolution: ``beta`` is per face size per second. It restarts (no lag) when the face
    center jumps by more than ``jump_threshold`` face sizes between two frames.

    Args:
        min_cutoff, beta, d_cutoff: ``OneEuroFilter``'s parameters.
        jump_threshold: see above.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 20.0, d_cutoff: float = 1.0,
                 jump_threshold: float = 0.5):
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.jump_threshold = float(jump_threshold)
        self.reset()

    def reset(self) -> None:
        self.filter.reset()
        self._scale = 1.0
        self._last_center: Optional[np.ndarray] = None

    def __call__(self, points, timestamp: float) -> np.ndarray:
        """The smoothed (K, 2) float32 points of this frame (``timestamp`` in seconds)."""
        points = np.asarray(points, np.float64)
        box = box_from_landmarks(points)
        size = float(max(box[2] - box[0], box[3] - box[1], 1e-6))
        center = points.mean(axis=0)
        if (self._last_center is None
                or np.linalg.norm(center - self._last_center) > self.jump_threshold * size):
            self.filter.reset()
            self._scale = size
        self._last_center = center
        return (self.filter(points / self._scale, timestamp) * self._scale).astype(np.float32)
