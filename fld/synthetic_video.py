"""Synthetic videos from still faces, with known landmarks in every frame, and jitter.

A clip moves one annotated still face (e.g. from ../shared/data/300w/train or the bundled
data/sample_300w) through small, smooth, known shifts, zooms and in-plane rotations
(each a sum of two slow sinusoids with random phases), adds fresh pixel noise to every
frame, and carries the ground-truth points of every frame (the same affine map applied
to the annotation). Since the true motion is known, what a landmarker adds on top of it
is measurable:

    jitter = std of (predicted motion - true motion) from one frame to the next, over
             every landmark and both coordinates, in % of the inter-ocular distance.

Numpy and OpenCV only (no TensorFlow).

    clip = make_clip(image_rgb, landmarks, frames=90)
    clip.frames[i], clip.points[i]                      # (H, W, 3) uint8, (K, 2)
    jitter_percent(predicted (N, K, 2), clip.points, scheme="300w_68")
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fld.crop import box_from_landmarks, transform_points
from fld.metrics import normalizer


@dataclasses.dataclass
class Clip:
    """frames: (N, H, W, 3) uint8 RGB; points: (N, K, 2) float32 ground truth (0-based
    pixels); matrices: (N, 2, 3) source image -> frame affine maps; fps."""

    frames: np.ndarray
    points: np.ndarray
    matrices: np.ndarray
    fps: float


def motion(frames: int, fps: float = 30.0, shift: float = 0.08, zoom: float = 0.06,
           rotation_deg: float = 6.0, seed: int = 0) -> np.ndarray:
    """(N, 4) per-frame (dx, dy, log zoom, angle in radians): dx, dy in face sizes.

    Each parameter is ``amplitude * (sin(2 pi f1 t + p1) + sin(2 pi f2 t + p2)) / 2``
    with frequencies in [0.15, 0.6] Hz and random phases: slow, smooth head motion of
    up to about ``amplitude * 2 pi * 0.6 / fps`` per frame.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    out = np.zeros((frames, 4))
    for j, amplitude in enumerate((shift, shift, np.log1p(zoom), np.deg2rad(rotation_deg))):
        freq, phase = rng.uniform(0.15, 0.6, 2), rng.uniform(0, 2 * np.pi, 2)
        out[:, j] = amplitude * np.mean(np.sin(2 * np.pi * freq[:, None] * t + phase[:, None]),
                                        axis=0)
    return out


def frame_matrices(landmarks: np.ndarray, path: np.ndarray, size: tuple[int, int],
                   face_fraction: float) -> np.ndarray:
    """(N, 2, 3) maps from the source image to each frame: the face box's center goes to
    the frame's center, its longer side to ``face_fraction`` of the frame height, then
    the frame's motion ``path`` (``motion``) about that center."""
    width, height = size
    box = box_from_landmarks(landmarks).astype(np.float64)
    center = (box[:2] + box[2:]) / 2
    face = face_fraction * height
    base = face / max(box[2] - box[0], box[3] - box[1])
    target = np.array([(width - 1) / 2, (height - 1) / 2])
    out = np.zeros((len(path), 2, 3), np.float32)
    for i, (dx, dy, log_zoom, angle) in enumerate(path):
        s = base * np.exp(log_zoom)
        rot = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shift = target + face * np.array([dx, dy]) - rot @ center
        out[i] = np.hstack([rot, shift[:, None]])
    return out


def make_clip(image_rgb: np.ndarray, landmarks: np.ndarray, frames: int = 90,
              size: tuple[int, int] = (320, 240), face_fraction: float = 0.45,
              fps: float = 30.0, noise: float = 3.0, seed: int = 0, still: bool = False,
              **motion_args) -> Clip:
    """A clip of ``frames`` frames (``size`` = (width, height)) of one still face.

    Args:
        image_rgb, landmarks: the still face and its (K, 2) annotation.
        face_fraction: the face box's longer side as a share of the frame height.
        noise: std of the Gaussian pixel noise added to each frame (0-255 scale).
        still: no motion (only the noise changes), e.g. to isolate noise jitter.
        motion_args: ``motion``'s amplitudes (shift, zoom, rotation_deg).
    """
    import cv2

    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"make_clip: expected an (H, W, 3) uint8 image, got shape "
                         f"{image.shape}, dtype {image.dtype}")
    landmarks = np.asarray(landmarks, np.float32)
    if frames < 1:
        raise ValueError(f"make_clip: frames must be >= 1, got {frames}")
    path = np.zeros((frames, 4)) if still else motion(frames, fps, seed=seed, **motion_args)
    matrices = frame_matrices(landmarks, path, size, face_fraction)
    # Downscale once with area averaging so that every frame's warp is close to 1:1.
    scale = float(np.sqrt(abs(np.linalg.det(matrices[0][:, :2]))))
    pre = np.eye(3)
    if scale < 0.8:
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rx, ry = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        # OpenCV's resize: small_xy = (image_xy + 0.5) * r - 0.5
        pre[:2] = [[rx, 0, 0.5 * rx - 0.5], [0, ry, 0.5 * ry - 0.5]]
        image = small
    rng = np.random.default_rng(seed + 1)
    out = np.empty((frames, size[1], size[0], 3), np.uint8)
    points = np.empty((frames,) + landmarks.shape, np.float32)
    for i, matrix in enumerate(matrices):
        # frame <- source = matrix; frame <- small = matrix @ inverse(pre)
        on_small = (np.vstack([matrix, [0, 0, 1]]) @ np.linalg.inv(pre))[:2]
        frame = cv2.warpAffine(image, on_small.astype(np.float32), size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        if noise > 0:
            frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255)
        out[i] = frame.astype(np.uint8)
        points[i] = transform_points(matrix, landmarks)
    return Clip(out, points, matrices, fps)


def residual_motion(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N - 1, K, 2): each frame's predicted motion minus the true motion."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape or predicted.ndim != 3 or len(predicted) < 2:
        raise ValueError(f"residual_motion: predicted {predicted.shape} and truth "
                         f"{truth.shape} must both be (N >= 2, K, 2)")
    return np.diff(predicted, axis=0) - np.diff(truth, axis=0)


def jitter_percent(predicted: np.ndarray, truth: np.ndarray, scheme="300w_68") -> float:
    """The clip's jitter (module doc), in % of the inter-ocular distance."""
    io = normalizer(truth, scheme)[1:, None, None]
    return float(100 * (residual_motion(predicted, truth) / io).std())


def frame_jitter_percent(predicted: np.ndarray, truth: np.ndarray, scheme="300w_68"
                         ) -> np.ndarray:
    """(N - 1,) per frame: the RMS of the residual motion over landmarks and both
    coordinates, in % of the inter-ocular distance (for plots)."""
    io = normalizer(truth, scheme)[1:]
    residual = residual_motion(predicted, truth)
    return 100 * np.sqrt((residual ** 2).mean(axis=(1, 2))) / io
