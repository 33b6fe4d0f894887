"""Temporal smoothing and face tracking for video.

``OneEuroFilter``: the 1-Euro filter of Casiez, Roussel & Vogel, "1 Euro Filter: A
Simple Speed-based Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012
(https://gery.casiez.net/1euro/). An exponential low-pass filter whose cutoff rises with
the signal's speed: ``cutoff = min_cutoff + beta * |dx/dt|`` (the speed itself low-passed
at ``d_cutoff``), smoothing factor ``alpha = 1 / (1 + tau / T_e)`` with
``tau = 1 / (2 pi cutoff)`` and ``T_e`` the time since the previous sample. Slow motion is
smoothed hard (low jitter), fast motion passes with little lag.

``VideoLandmarker``: frame-to-frame tracking around a ``Landmarker``: the face detector
runs every ``detect_every`` frames (and whenever no face is tracked); in between, and
when the detector misses, the previous frame's landmark box is the next frame's box.
The filter works in units of the face size (points divided by the landmark box's longer
side when the track starts), so its parameters do not depend on the resolution; it is
reset when the face jumps by more than ``jump_threshold`` face sizes.
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


class VideoLandmarker:
    """Tracks one face (the largest) through a video with a ``Landmarker``.

    Args:
        landmarker: a ``fld.runtime.Landmarker``.
        detect_every: run the detector every N frames (1 = every frame).
        smooth: apply the 1-Euro filter.
        min_cutoff, beta, d_cutoff: filter parameters, in face sizes (see module doc).
        jump_threshold: reset the filter when the face center moves more than this
            many face sizes between frames.
        max_misses: forget the face after this many consecutive detector misses.

    ``track(frame_rgb, timestamp)`` -> (K, 2) points or None when no face is tracked.
    """

    def __init__(self, landmarker, detect_every: int = 10, smooth: bool = True,
                 min_cutoff: float = 1.0, beta: float = 5.0, d_cutoff: float = 1.0,
                 jump_threshold: float = 0.5, max_misses: int = 3):
        self.landmarker = landmarker
        self.detect_every = max(1, int(detect_every))
        self.smooth = smooth
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.jump_threshold = jump_threshold
        self.max_misses = max_misses
        self.reset()

    def reset(self) -> None:
        self.box: Optional[np.ndarray] = None  # landmark box for the next frame
        self.frame_index = 0
        self.misses = 0
        self._scale = 1.0
        self._last_center: Optional[np.ndarray] = None
        self.filter.reset()

    def _next_box(self, frame_rgb: np.ndarray) -> Optional[np.ndarray]:
        if self.box is not None and self.frame_index % self.detect_every:
            return self.box
        faces = self.landmarker.detect_faces(frame_rgb)
        if len(faces) == 0:
            self.misses += 1
            if self.misses > self.max_misses:
                self.box = None
            return self.box  # detector missed: keep the previous landmark box
        self.misses = 0
        if self.box is None:
            return faces[0]
        centers = (faces[:, :2] + faces[:, 2:]) / 2  # the face nearest the tracked one
        previous = (self.box[:2] + self.box[2:]) / 2
        return faces[int(np.argmin(np.linalg.norm(centers - previous, axis=1)))]

    def track(self, frame_rgb: np.ndarray, timestamp: float) -> Optional[np.ndarray]:
        box = self._next_box(frame_rgb)
        self.frame_index += 1
        if box is None:
            self.filter.reset()
            self._last_center = None
            return None
        points = self.landmarker.predict(frame_rgb, box)
        self.box = box_from_landmarks(points)
        if not self.smooth:
            return points
        size = float(max(self.box[2] - self.box[0], self.box[3] - self.box[1], 1e-6))
        center = points.mean(axis=0)
        if (self._last_center is None
                or np.linalg.norm(center - self._last_center) > self.jump_threshold * size):
            self.filter.reset()
            self._scale = size
        self._last_center = center
        return self.filter(points / self._scale, timestamp) * self._scale
