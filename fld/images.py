"""Reading images: one reader for training, calibration, evaluation and the tools.

Numpy + OpenCV only (the TensorFlow-free runtime's tools use it too).
"""

from __future__ import annotations

import os

import numpy as np


class ImageError(ValueError):
    """An image that cannot be read or decoded."""


def read_image_rgb(path: str) -> np.ndarray:
    """Reads an image file as (H, W, 3) RGB uint8, or raises ImageError naming the file."""
    import cv2

    if not os.path.isfile(path):
        raise ImageError(f"{path}: image file not found")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
