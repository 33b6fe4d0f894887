"""Face detection ahead of the landmark model, with nothing to download.

Backends (``DETECTORS``):
- ``"blazeface"`` (default): the BlazeFace short-range CNN bundled in
  ``fld/runtime/assets`` and run by the runtime's TFLite interpreter
  (``fld.runtime.blazeface``; ~2 ms a photo on one x86 core);
- ``"blazeface_full"``: BlazeFace's full-range model, for small faces in wide shots;
- ``"haar"``: OpenCV's frontal-face Haar cascade shipped in the opencv wheel
  (``cv2.data.haarcascades``; Viola & Jones, CVPR 2001; ~50x slower, misses more faces).
- a YuNet ``.onnx`` path (``cv2.FaceDetectorYN``; the user supplies the model file);
- any callable ``image_rgb -> list of (x0, y0, x1, y1)`` boxes.

Detector boxes are not landmark boxes: the landmark model's crop rule (``fld.crop``) is
defined on the tight box around the 68 landmarks (the 300-W ground-truth box). A
``BoxMapping`` (4 numbers) maps one onto the other linearly:

    landmark center = detector center + (dx * w, dy * h)
    landmark size   = (sx * w, sy * h)          (w, h: the detector box's size)

``fit_box_mapping`` fits the 4 numbers by least squares from matched boxes;
``measure_box_mapping`` runs a detector over annotated faces, matches detections to the
ground-truth landmark boxes by IoU and fits the mapping (``tools/face_detection.py
--fit`` refits and prints the stored ones: ``BOX_MAPPINGS``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class BoxMapping:
    """Linear map from detector boxes to tight landmark boxes (see the module doc)."""

    dx: float = 0.0
    dy: float = 0.0
    sx: float = 1.0
    sy: float = 1.0

    def apply(self, boxes) -> np.ndarray:
        """(N, 4) or (4,) detector boxes -> landmark boxes of the same shape."""
        b = np.asarray(boxes, np.float64)
        flat = b.reshape(-1, 4)
        w, h = flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]
        cx = (flat[:, 0] + flat[:, 2]) / 2 + self.dx * w
        cy = (flat[:, 1] + flat[:, 3]) / 2 + self.dy * h
        hw, hh = self.sx * w / 2, self.sy * h / 2
        out = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)
        return out.reshape(b.shape).astype(np.float32)

    def invert(self, boxes) -> np.ndarray:
        """The boxes whose ``apply`` gives ``boxes``: (N, 4) or (4,), the same shape."""
        b = np.asarray(boxes, np.float64)
        flat = b.reshape(-1, 4)
        w = (flat[:, 2] - flat[:, 0]) / self.sx
        h = (flat[:, 3] - flat[:, 1]) / self.sy
        cx = (flat[:, 0] + flat[:, 2]) / 2 - self.dx * w
        cy = (flat[:, 1] + flat[:, 3]) / 2 - self.dy * h
        out = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
        return out.reshape(b.shape).astype(np.float32)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.dx, self.dy, self.sx, self.sy)


IDENTITY_MAPPING = BoxMapping()

# Haar cascade (haarcascade_frontalface_default.xml, ``HaarDetector``'s default settings)
# -> tight landmark box, per scheme (the crop rule uses the box of the scheme's own
# points, so a 51-point model, without the jaw, needs a smaller box than a 68-point one).
# Measured with ``measure_box_mapping`` on 300 real faces of ../shared/data/300w/train
# (every 6th of the 2,012 sorted by path: 145 helen, 98 lfpw, 57 afw; each image holds
# one annotated face at about half its size), detections matched to the ground-truth
# box by IoU >= 0.3.
# - 300w_68: 272 / 300 detected (90.7 %). RMS fit residuals in units of the landmark
#   box's longer side: center x 0.092, center y 0.054, width 0.090, height 0.097
#   (profile faces dominate them); median IoU with the ground-truth box 0.59 before
#   the mapping, 0.78 after; center error median 0.083, 90th percentile 0.16.
# - pair_51: 269 / 300 matched (89.7 %). Residuals: center x 0.052, center y 0.052,
#   width 0.097, height 0.098; median IoU 0.42 before, 0.82 after; center error median
#   0.050, 90th percentile 0.11.
HAAR_BOX_MAPPINGS = {
    "300w_68": BoxMapping(dx=0.0114, dy=0.1418, sx=0.8536, sy=0.8320),
    "pair_51": BoxMapping(dx=0.0022, dy=0.0478, sx=0.6791, sy=0.6372),
}
HAAR_BOX_MAPPING = HAAR_BOX_MAPPINGS["300w_68"]

# BlazeFace (``fld.runtime.blazeface``, default thresholds) -> tight landmark box, per
# scheme: fitted by ``tools/face_detection.py --fit`` on the 1,810 training faces of
# ../shared/data/300w/train (all but every 10th by sorted path, the validation split),
# detections matched by IoU >= 0.3. Short range: all 1,810 matched; RMS residuals (of
# the landmark box's longer side) 300w_68: center x 0.025, y 0.041, width 0.076, height
# 0.073; pair_51: 0.119, 0.068, 0.097, 0.076 (the 51 inner points sit off-center on
# profile faces: the re-crop of ``Landmarker.detect`` corrects that). Full range (92 %
# of these close-up faces found): its own mapping. Measurements:
# docs/experiments/2026-12-07-blazeface.md.
BLAZEFACE_BOX_MAPPINGS = {
    "300w_68": BoxMapping(dx=0.0023, dy=0.0581, sx=0.9396, sy=0.9203),
    "pair_51": BoxMapping(dx=-0.0035, dy=-0.0456, sx=0.7480, sy=0.7090),
}
BLAZEFACE_FULL_BOX_MAPPINGS = {
    "300w_68": BoxMapping(dx=0.0092, dy=0.0962, sx=0.8849, sy=0.8671),
    "pair_51": BoxMapping(dx=0.0032, dy=-0.0015, sx=0.7077, sy=0.6679),
}
# The named detectors and their measured mappings (scheme name -> BoxMapping).
BOX_MAPPINGS = {"blazeface": BLAZEFACE_BOX_MAPPINGS,
                "blazeface_full": BLAZEFACE_FULL_BOX_MAPPINGS,
                "haar": HAAR_BOX_MAPPINGS}
DETECTORS = tuple(BOX_MAPPINGS)
DEFAULT_DETECTOR = "blazeface"


def box_iou(a, b) -> np.ndarray:
    """IoU between (N, 4) and (M, 4) boxes -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def fit_box_mapping(detector_boxes, landmark_boxes) -> tuple[BoxMapping, dict]:
    """Least-squares ``BoxMapping`` from matched (N, 4) box pairs.

    Each of the 4 numbers is a 1-parameter least-squares fit through the origin in
    pixels, e.g. ``dx = sum(w * (lcx - dcx)) / sum(w^2)``, ``sx = sum(w * lw) / sum(w^2)``.
    Returns ``(mapping, residuals)``: RMS residuals of center x / y and width / height,
    each divided by the landmark box's longer side (so 0.05 = 5 % of the face size).
    """
    d = np.asarray(detector_boxes, np.float64).reshape(-1, 4)
    g = np.asarray(landmark_boxes, np.float64).reshape(-1, 4)
    if len(d) != len(g) or len(d) == 0:
        raise ValueError(f"fit_box_mapping: need equal, non-zero numbers of boxes, got "
                         f"{len(d)} and {len(g)}")
    dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    ddx = (g[:, 0] + g[:, 2]) / 2 - (d[:, 0] + d[:, 2]) / 2
    ddy = (g[:, 1] + g[:, 3]) / 2 - (d[:, 1] + d[:, 3]) / 2
    fit = lambda x, y: float((x * y).sum() / max((x * x).sum(), 1e-12))  # noqa: E731
    mapping = BoxMapping(fit(dw, ddx), fit(dh, ddy), fit(dw, gw), fit(dh, gh))
    scale = np.maximum(np.maximum(gw, gh), 1e-12)
    rms = lambda r: float(np.sqrt(np.mean((r / scale) ** 2)))  # noqa: E731
    residuals = {
        "center_x": rms(ddx - mapping.dx * dw), "center_y": rms(ddy - mapping.dy * dh),
        "width": rms(gw - mapping.sx * dw), "height": rms(gh - mapping.sy * dh),
    }
    return mapping, residuals


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: ``image_rgb -> (N, 4)`` raw detector boxes."""

    def __init__(self, cascade_path: Optional[str] = None, scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size_fraction: float = 0.08):
        import cv2

        self.cascade_path = cascade_path or os.path.join(
            cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(self.cascade_path)
        if self.cascade.empty():
            raise FileNotFoundError(f"cannot load Haar cascade {self.cascade_path}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_fraction = min_size_fraction
        self._lock = threading.Lock()   # one cascade object: its calls are serialized

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        import cv2

        gray = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        side = max(20, int(self.min_size_fraction * min(gray.shape[:2])))
        with self._lock:
            found = self.cascade.detectMultiScale(gray, self.scale_factor, self.min_neighbors,
                                                  minSize=(side, side))
        if len(found) == 0:
            return np.zeros((0, 4), np.float32)
        xywh = np.asarray(found, np.float32)
        # Haar boxes are integer pixel rectangles [x, x + w): as 0-based pixel centers
        # their edges are at x - 0.5 and x + w - 0.5.
        return np.stack([xywh[:, 0] - 0.5, xywh[:, 1] - 0.5, xywh[:, 0] + xywh[:, 2] - 0.5,
                         xywh[:, 1] + xywh[:, 3] - 0.5], axis=1)


class YuNetDetector:
    """OpenCV's YuNet (``cv2.FaceDetectorYN``) from a user-supplied ``.onnx`` file."""

    def __init__(self, model_path: str, score_threshold: float = 0.7):
        import cv2

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"YuNet model not found: {model_path}")
        try:
            self.detector = cv2.FaceDetectorYN.create(model_path, "", (320, 320),
                                                      score_threshold)
        except cv2.error as e:
            message = " ".join(str(e).split())[-200:]
            raise ValueError(f"{model_path}: not a loadable YuNet .onnx model ({message})") \
                from None
        self._lock = threading.Lock()   # setInputSize + detect change shared state

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        import cv2

        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self.detector.detect(bgr)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 4), np.float32)
        x, y, w, h = (faces[:, i].astype(np.float32) for i in range(4))
        return np.stack([x, y, x + w, y + h], axis=1)


BoxSource = Union[str, Callable[[np.ndarray], Sequence]]


class FaceDetector:
    """Finds faces and returns tight landmark boxes (the crop rule's convention).

    Args:
        backend: a ``DETECTORS`` name (``"blazeface"``, ``"blazeface_full"``,
            ``"haar"``), a YuNet ``.onnx`` path, or a callable returning boxes.
        box_mapping: detector box -> landmark box; default: the mapping measured for
            the named detector and ``scheme`` (``BOX_MAPPINGS``), identity for YuNet and
            callables (fit one with ``measure_box_mapping``).
        scheme: the landmark scheme's name whose box the mapping targets (the crop rule
            uses the box of the scheme's own points).
        runtime: the TFLite interpreter of the BlazeFace models (``TFLiteModel``'s;
            ``Landmarker`` passes its own).
    ``__call__`` returns (N, 4) float32 landmark boxes, largest first; (0, 4) when no
    face is found.
    """

    def __init__(self, backend: BoxSource = DEFAULT_DETECTOR,
                 box_mapping: Optional[BoxMapping] = None, scheme: str = "300w_68",
                 runtime: Optional[str] = None):
        if callable(backend):
            self.detect_raw, default = backend, IDENTITY_MAPPING
        elif backend in BOX_MAPPINGS:
            self.detect_raw = make_raw_detector(backend, runtime)
            default = default_box_mapping(backend, scheme)
        elif isinstance(backend, str) and backend.lower().endswith(".onnx"):
            self.detect_raw, default = YuNetDetector(backend), IDENTITY_MAPPING
        else:
            raise ValueError(f"unknown face detector {backend!r}: use one of "
                             f"{', '.join(DETECTORS)}, a YuNet .onnx path or a callable "
                             f"image -> boxes")
        self.name = backend if isinstance(backend, str) else "callable"
        self.box_mapping = box_mapping if box_mapping is not None else default

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.detect_raw(image_rgb), np.float32).reshape(-1, 4)
        boxes = self.box_mapping.apply(raw)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[np.argsort(-area, kind="stable")]


def make_raw_detector(name: str, runtime: Optional[str] = None
                      ) -> Callable[[np.ndarray], np.ndarray]:
    """A ``DETECTORS`` name -> its raw detector (image -> (N, 4) detector boxes);
    ``runtime``: the TFLite interpreter of a BlazeFace model (None: the first found)."""
    if name == "haar":
        return HaarDetector()
    if name in ("blazeface", "blazeface_full"):
        from fld.runtime.blazeface import BlazeFaceDetector

        return BlazeFaceDetector("full" if name == "blazeface_full" else "short",
                                 runtime=runtime)
    raise ValueError(f"unknown face detector {name!r}: use one of {', '.join(DETECTORS)}")


def default_box_mapping(detector: str, scheme: str) -> BoxMapping:
    """The mapping measured for a named detector and a scheme; a scheme without one
    gets the 68-point mapping, with a warning."""
    mappings = BOX_MAPPINGS[detector]
    if scheme in mappings:
        return mappings[scheme]
    warnings.warn(f"no {detector} box mapping measured for scheme {scheme!r}: using the "
                  f"68-point one; fit one with tools/face_detection.py --fit "
                  f"(fld.runtime.measure_box_mapping)", stacklevel=3)
    return mappings["300w_68"]


def measure_box_mapping(faces: Iterable[tuple[np.ndarray, np.ndarray]],
                        detect: Callable[[np.ndarray], Sequence],
                        min_iou: float = 0.3) -> dict:
    """Runs ``detect`` (image -> raw boxes) on annotated faces and fits the mapping.

    Args:
        faces: (image_rgb, landmarks (K, 2)) pairs, one annotated face per image.
        detect: the raw detector (e.g. ``HaarDetector()``), no mapping applied.
        min_iou: a detection matches the landmark box when their IoU reaches this.
    Returns:
        dict with ``images``, ``detected`` (matched faces), ``detection_rate``,
        ``mapping`` (a BoxMapping), ``residuals`` (``fit_box_mapping``'s) and the
        matched ``detector_boxes`` / ``landmark_boxes``.
    Raises:
        ValueError: no faces, or no detection matched any face (nothing to fit).
    """
    from fld.crop import box_from_landmarks

    detector_boxes, landmark_boxes, images = [], [], 0
    for image, landmarks in faces:
        images += 1
        truth = box_from_landmarks(landmarks)
        found = np.asarray(detect(image), np.float32).reshape(-1, 4)
        if not len(found):
            continue
        iou = box_iou(found, truth)[:, 0]
        best = int(iou.argmax())
        if iou[best] >= min_iou:
            detector_boxes.append(found[best])
            landmark_boxes.append(truth)
    if not detector_boxes:
        raise ValueError("measure_box_mapping: no annotated faces" if not images else
                         f"measure_box_mapping: no detection matched any of the {images} "
                         f"annotated faces (IoU >= {min_iou:g} with the landmark box): "
                         f"no mapping to fit")
    result = {"images": images, "detected": len(detector_boxes),
              "detection_rate": len(detector_boxes) / max(images, 1),
              "detector_boxes": np.asarray(detector_boxes).reshape(-1, 4),
              "landmark_boxes": np.asarray(landmark_boxes).reshape(-1, 4)}
    result["mapping"], result["residuals"] = fit_box_mapping(detector_boxes, landmark_boxes)
    return result
