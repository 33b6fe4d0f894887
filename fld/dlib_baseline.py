"""dlib's 68-point shape predictor behind the runtime's predictor interface (optional).

dlib is not a dependency: ``pip install dlib`` and a predictor file (e.g. dlib's
``shape_predictor_68_face_landmarks.dat``) are the user's. dlib returns 0-based pixel
indices, the toolkit's convention.
"""

from __future__ import annotations

import numpy as np


def dlib_missing_reason() -> str | None:
    """None when dlib imports, else why it cannot be used."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return "the dlib package is not installed (pip install dlib)"
    return None


class DlibPredictor:
    """``predict(image, box)`` and ``detect(image)`` with dlib's HOG detector."""

    def __init__(self, predictor_path: str):
        import os

        import dlib

        if not os.path.isfile(predictor_path):
            raise FileNotFoundError(f"dlib shape predictor not found: {predictor_path}")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(predictor_path)
        self._detector = dlib.get_frontal_face_detector()

    def _points(self, image, rect) -> np.ndarray:
        shape = self._shape(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def predict(self, image_rgb, box) -> np.ndarray:
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        return self._points(image_rgb, self._dlib.rectangle(x0, y0, x1, y1))

    def detect(self, image_rgb):
        out = []
        for rect in self._detector(image_rgb, 1):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
            out.append((box, self._points(image_rgb, rect)))
        return out
