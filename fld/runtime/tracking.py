"""Video tracking: each frame's crop comes from the previous frame's landmarks.

    tracker = FaceTracker(landmarker, detect_every=10)
    for frame in frames:                          # (H, W, 3) uint8 RGB
        for face in tracker.track(frame):         # or landmarker.track(frame)
            face.track_id, face.points, face.spread

Per frame, for every tracked face: the tight box of its last landmarks is the landmark
box of this frame's crop (the training crop rule, ``Landmarker.predict``), and a
confidence from the crop's heatmaps decides whether a face is still there: where their
spread (``heatmap_spread``) exceeds ``MAX_FACE_SPREAD`` the track is dropped. The face
detector (``Landmarker.detect_faces``, whichever detector the Landmarker has) runs on
the first frame, whenever a track was lost or none exists, and every ``detect_every``
frames; a detection overlapping a track (IoU >= ``match_iou``) is that face, the others
start new tracks (if their own crop passes the spread test). The points are then
smoothed per track (``fld.runtime.smoothing.PointSmoother``, One-Euro); the crops
always come from the raw points.

Measurements behind the constants: docs/experiments/2026-12-07-tracking.md.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np

from fld.crop import MIN_BOX_SIDE, box_from_landmarks
from fld.images import as_rgb_uint8
from fld.runtime.smoothing import PointSmoother

# benchmarks/face_confidence.py on the 2,012 faces of ../shared/data/300w/train with the
# bundled default_68.tflite: the cut with the best balanced accuracy between face crops
# (median spread 0.113, 99.9 % pass) and background / flat / noise crops (none pass),
# for heatmap_spread (the best of the measures tried there, AUC 1.0000).
MAX_FACE_SPREAD = 0.151
DEFAULT_FPS = 30.0      # timestamps when the caller gives none
MATCH_IOU = 0.3         # a detection with this IoU with a track is that track's face


def heatmap_spread(heatmaps: np.ndarray) -> float:
    """How unsure a crop's heatmaps are, i.e. how little they look like a face: the
    standard deviation of each landmark's soft-argmax distribution (the ReLU'd map
    normalized to sum 1), sqrt(var_x + var_y), averaged over the landmarks (and over the
    crop and its mirror image, for a flip pair), as a fraction of the heatmap's width.
    A face gives tight peaks (about 0.11 with the default model), background, flat or
    noise crops spread-out maps (over 0.2).

    ``heatmaps``: (H, W, K) or (B, H, W, K) float, e.g. ``Landmarker.crop_heatmaps``.
    """
    hm = np.asarray(heatmaps, np.float32)
    if hm.ndim not in (3, 4):
        raise ValueError(f"heatmap_spread: expected (H, W, K) or (B, H, W, K) heatmaps, got "
                         f"shape {hm.shape}")
    hm = np.maximum(hm.reshape((-1,) + hm.shape[-3:]), 0.0)
    h, w = hm.shape[1:3]
    var = 0.0
    for marginal, n in ((hm.sum(axis=1), w), (hm.sum(axis=2), h)):   # (B, W|H, K)
        coords = np.arange(n, dtype=np.float32)
        moments = np.stack([np.ones_like(coords), coords, coords ** 2]) @ marginal  # (B, 3, K)
        total, first, second = moments[:, 0], moments[:, 1], moments[:, 2]
        mean = first / np.maximum(total, 1e-12)
        var = var + second / np.maximum(total, 1e-12) - mean ** 2
    # An empty or non-finite map counts as fully spread (a uniform map's spread).
    uniform = np.sqrt((w * w - 1) / 12.0 + (h * h - 1) / 12.0)
    spread = np.where(total > 1e-12, np.sqrt(np.maximum(var, 0.0)), uniform)
    return float(spread.mean() / w)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) boxes with (M, 4) boxes -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])   # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


@dataclasses.dataclass
class TrackedFace:
    """One face in one frame.

    Attributes:
        track_id: the same number for the same face across frames (from 0).
        box: the next frame's landmark box, from ``raw_points`` (``Landmarker.recrop_box``:
            their tight box, or a subset-points file's re-crop box).
        points: (K, 2) landmarks, smoothed when the tracker smooths.
        raw_points: (K, 2) landmarks straight from the model.
        spread: ``heatmap_spread`` of this frame's crop (lower: surer).
        detected: True when this frame's crop came from the detector (a new track).
    """

    track_id: int
    box: np.ndarray
    points: np.ndarray
    raw_points: np.ndarray
    spread: float
    detected: bool


class _Track:
    def __init__(self, track_id: int, smoother: Optional[PointSmoother]):
        self.track_id, self.smoother = track_id, smoother
        self.face: Optional[TrackedFace] = None

    def update(self, points, box, spread, timestamp, detected) -> None:
        smoothed = points if self.smoother is None else self.smoother(points, timestamp)
        self.face = TrackedFace(self.track_id, np.asarray(box, np.float32), smoothed, points,
                                spread, detected)


class FaceTracker:
    """Tracks every face of a video with a ``Landmarker``.

    Args:
        landmarker: a ``fld.runtime.Landmarker`` (anything with ``predict_with_heatmaps``
            and ``detect_faces``), with any detector.
        detect_every: also run the detector every N frames, to pick up new faces
            (0: only when no face is tracked or one was lost).
        max_spread: ``heatmap_spread`` above which a crop holds no face; default
            ``MAX_FACE_SPREAD`` (measured for the bundled model; measure yours with
            benchmarks/face_confidence.py --model).
        smooth: One-Euro smoothing of each track's points.
        min_cutoff, beta, d_cutoff: the filter's parameters (``PointSmoother``).
        max_faces: track at most this many faces (None: all).
        match_iou: a detection overlapping a track by this IoU is the same face.
    """

    def __init__(self, landmarker, detect_every: int = 10, max_spread: Optional[float] = None,
                 smooth: bool = True, min_cutoff: float = 1.0, beta: float = 20.0,
                 d_cutoff: float = 1.0, max_faces: Optional[int] = None,
                 match_iou: float = MATCH_IOU, passes: Optional[int] = None):
        from fld.runtime.landmarker import DEFAULT_PASSES

        if int(detect_every) != detect_every or detect_every < 0:
            raise ValueError(f"FaceTracker: detect_every must be an integer >= 0, got "
                             f"{detect_every!r}")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"FaceTracker: max_faces must be >= 1 or None, got {max_faces!r}")
        self.landmarker = landmarker
        self.detect_every = int(detect_every)
        self.max_spread = MAX_FACE_SPREAD if max_spread is None else float(max_spread)
        self.smooth = bool(smooth)
        self._filter_args = (min_cutoff, beta, d_cutoff)
        PointSmoother(*self._filter_args)      # checks the parameters now
        self.max_faces, self.match_iou = max_faces, float(match_iou)
        self.passes = DEFAULT_PASSES if passes is None else int(passes)
        if self.passes < 1:
            raise ValueError(f"FaceTracker: passes must be >= 1, got {passes!r}")
        self.reset()

    def reset(self) -> None:
        """Forgets every track (e.g. before another video)."""
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._since_detection = 0
        self.frame_index = 0
        self.detections = 0       # detector runs so far
        self._shape: Optional[tuple] = None

    # --- one frame ---------------------------------------------------------------------
    def track(self, frame_rgb: np.ndarray, timestamp: Optional[float] = None
              ) -> list[TrackedFace]:
        """The faces in this frame, by track id. ``timestamp``: seconds (default:
        frame index / ``DEFAULT_FPS``), for the smoothing."""
        frame = self._check_frame(frame_rgb)
        t = self.frame_index / DEFAULT_FPS if timestamp is None else float(timestamp)
        lost = False
        for track in list(self._tracks):
            if not self._follow(track, frame, track.face.box, t, detected=False):
                self._tracks.remove(track)
                lost = True
        self._drop_duplicates()
        if (not self._tracks or lost
                or (self.detect_every and self._since_detection >= self.detect_every)):
            self._detect(frame, t)
        self._since_detection += 1
        self.frame_index += 1
        return [track.face for track in self._tracks]

    def start(self, frame_rgb: np.ndarray, box, timestamp: Optional[float] = None
              ) -> Optional[TrackedFace]:
        """Processes this frame with a known landmark box instead of the detector (e.g.
        the first frame of a video whose face is known): starts a track there, and
        returns its face, or None (no track) when the crop holds no face. Call ``track``
        from the next frame on."""
        frame = self._check_frame(frame_rgb)
        t = self.frame_index / DEFAULT_FPS if timestamp is None else float(timestamp)
        track = self._new_track()
        found = self._follow(track, frame, np.asarray(box, np.float32), t, detected=True)
        if found:
            self._tracks.append(track)
            self._next_id += 1
        self._since_detection = 1     # as after a detection on this frame
        self.frame_index += 1
        return track.face if found else None

    # --- internals ---------------------------------------------------------------------
    def _check_frame(self, frame_rgb) -> np.ndarray:
        if not isinstance(frame_rgb, np.ndarray):
            raise ValueError(f"FaceTracker: expected a frame as an (H, W, 3) uint8 array, got "
                             f"{type(frame_rgb).__name__}")
        try:
            frame = as_rgb_uint8(frame_rgb)
        except ValueError as e:
            raise ValueError(f"FaceTracker: bad frame (shape {frame_rgb.shape}, dtype "
                             f"{frame_rgb.dtype}): {e}") from None
        if self._shape is not None and frame.shape != self._shape:
            self.reset()          # another video, or a resized stream: start afresh
        self._shape = frame.shape
        return frame

    def _new_track(self) -> _Track:
        return _Track(self._next_id, PointSmoother(*self._filter_args) if self.smooth else None)

    def _recrop_box(self, points) -> np.ndarray:
        recrop = getattr(self.landmarker, "recrop_box", None)
        return box_from_landmarks(points) if recrop is None else recrop(points)

    def _follow(self, track: _Track, frame, box, t, detected) -> bool:
        """Runs the model on ``box``; updates the track; False when no face is there."""
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        if (max(x1 - x0, y1 - y0) < MIN_BOX_SIDE or x1 <= -0.5 or y1 <= -0.5
                or x0 >= width - 0.5 or y0 >= height - 0.5):
            return False          # the face left the frame, or the box collapsed
        points, heatmaps = self.landmarker.predict_with_heatmaps(frame, box)
        spread = heatmap_spread(heatmaps)
        if not spread <= self.max_spread:
            return False
        track.update(points, self._recrop_box(points), spread, t, detected)
        return True

    def _drop_duplicates(self) -> None:
        """Two tracks that converged on one face: the younger goes."""
        kept: list[_Track] = []
        for track in self._tracks:                # oldest first
            if not kept or box_iou(track.face.box, [k.face.box for k in kept]).max() < 0.5:
                kept.append(track)
        self._tracks = kept

    def _detect(self, frame, t) -> None:
        self.detections += 1
        self._since_detection = 0
        for box in self.landmarker.detect_faces(frame):
            if self.max_faces is not None and len(self._tracks) >= self.max_faces:
                break
            if self._tracks and box_iou(box, [k.face.box for k in self._tracks]).max() \
                    >= self.match_iou:
                continue                          # already tracked
            if self.passes > 1:   # a new face: re-crop as Landmarker.detect does
                try:
                    _, points = self.landmarker.refine(frame, box, self.passes - 1)
                except ValueError:
                    continue                      # the predictions collapsed: no face
                box = self._recrop_box(points)
            track = self._new_track()
            if self._follow(track, frame, box, t, detected=True):
                self._tracks.append(track)
                self._next_id += 1


def time_tracking_frame(landmarker, frames, runs: int = 3, box=None,
                        max_spread: Optional[float] = None) -> dict:
    """Milliseconds per tracking frame (no detection on it) against the landmark step
    (``Landmarker.predict`` on the same frame and box) in the same run, interleaved
    (the two alternate which runs first on a frame).

    Args:
        landmarker: a ``Landmarker``.
        frames: a sequence of (H, W, 3) uint8 frames with one face moving a little from
            frame to frame (e.g. ``fld.synthetic_video.make_clip(...).frames``).
        runs: passes over the frames.
        box: the landmark box of the face in ``frames[0]``; None = the detector's first.
        max_spread: the tracker's lost-face cut (None: ``MAX_FACE_SPREAD``; ``inf`` times
            the tracking path even for a model whose maps never pass the cut).
    Returns:
        {"tracking_frame_ms": median, "landmarks_ms": median, "ratio": their ratio,
         "frames": timed frames, "tracking_ms": [...], "landmark_ms": [...]}; frames where
        the tracker ran the detector (a lost face) are left out of both.
    """
    tracker = FaceTracker(landmarker, detect_every=0, max_spread=max_spread, smooth=True)
    tracking, landmark = [], []
    for _ in range(int(runs)):
        tracker.reset()
        first = tracker.start(frames[0], box) if box is not None else None
        if first is None:
            tracker.track(frames[0])
        if not tracker._tracks:
            raise ValueError("time_tracking_frame: no face found in the first frame")
        for frame in frames[1:]:
            previous_box = tracker._tracks[0].face.box
            detections = tracker.detections
            steps = [lambda: tracker.track(frame),
                     lambda: landmarker.predict(frame, previous_box)]
            times = []
            for step in steps if len(tracking) % 2 == 0 else steps[::-1]:   # alternate
                start = time.perf_counter()
                step()
                times.append((time.perf_counter() - start) * 1e3)
            if len(tracking) % 2:
                times.reverse()
            if tracker.detections == detections:
                tracking.append(times[0])
                landmark.append(times[1])
            elif not tracker._tracks:
                break
    if not tracking:
        raise ValueError("time_tracking_frame: the tracker lost the face on every frame")
    t_ms, l_ms = float(np.median(tracking)), float(np.median(landmark))
    return {"tracking_frame_ms": t_ms, "landmarks_ms": l_ms, "ratio": t_ms / l_ms,
            "frames": len(tracking), "tracking_ms": tracking, "landmark_ms": landmark}
