"""The crop rule: one function that turns a face box into the model's input crop.

Used by training (``fld.data``), evaluation and the TensorFlow-free runtime alike, so
the model always sees faces framed the same way.

Pixel convention (the only one in this project): coordinates are 0-based pixel
centers, the center of the top-left pixel is (0, 0) and the image covers
[-0.5, W - 0.5] x [-0.5, H - 0.5]. iBUG ``.pts`` files are 1-based and are converted
by the readers, once.

The rule: a square centered on the center of the face box, side = ``scale`` x the box's
longer side, resampled to ``size`` x ``size``. The box is the tight box around the
face's landmarks (the 300-W ground-truth box convention); detector boxes are mapped
onto that convention by the runtime. The reference code uses 1.05 x the shorter side;
we use the longer side with a margin (default 1.2) so that jaw points and points moved
by rotation augmentation stay inside the crop, where a heatmap can represent them.

Numpy and OpenCV only.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_CROP_SCALE = 1.2
# The boxes the crop rule accepts: a longer side of at least 1 px, coordinates within
# +-1e6 px (beyond that the crop's scale underflows and the resampling divides by zero).
MIN_BOX_SIDE = 1.0
MAX_COORDINATE = 1e6


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) around (K, 2) landmarks."""
    pts = np.asarray(landmarks, np.float64)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)


def crop_matrix(box, size: int, scale: float = DEFAULT_CROP_SCALE) -> np.ndarray:
    """The 2x3 affine matrix mapping image coordinates to crop coordinates.

    Args:
        box: (x0, y0, x1, y1) face box in image pixels.
        size: side of the output crop in pixels.
        scale: crop side as a multiple of the box's longer side.
    Returns:
        float32 (2, 3) matrix ``M`` with ``crop_xy = M[:, :2] @ image_xy + M[:, 2]``.
    """
    x0, y0, x1, y1 = [float(v) for v in box]
    longer = max(x1 - x0, y1 - y0)
    if not all(np.isfinite(v) and abs(v) <= MAX_COORDINATE for v in (x0, y0, x1, y1)) \
            or not longer >= MIN_BOX_SIDE:
        raise ValueError(f"degenerate face box ({x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}): "
                         f"needs finite coordinates within +-{MAX_COORDINATE:.0e} px and a "
                         f"side of at least {MIN_BOX_SIDE} px")
    side = scale * longer
    s = size / side
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    # A crop-pixel edge at -0.5 corresponds to the square's edge cx - side / 2.
    return np.array(
        [[s, 0.0, size / 2.0 - 0.5 - s * cx], [0.0, s, size / 2.0 - 0.5 - s * cy]],
        np.float32,
    )


# The 2x3 affine helpers below work on Python floats (float64) in closed form: they run
# several times per face in the runtime, where numpy's per-call overhead on 3x3 arrays
# (vstack, linalg.inv) cost more than the arithmetic.

def _affine_rows(matrix) -> tuple:
    (a, b, c), (d, e, f) = np.asarray(matrix, np.float64).reshape(2, 3).tolist()
    return a, b, c, d, e, f


def _inverse_rows(matrix) -> tuple:
    a, b, c, d, e, f = _affine_rows(matrix)
    det = a * e - b * d
    if det == 0.0 or not np.isfinite(det):
        raise np.linalg.LinAlgError(f"singular affine matrix {[a, b, c, d, e, f]}")
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (float32)."""
    ia, ib, ic, id_, ie, if_ = _inverse_rows(matrix)
    return np.array([[ia, ib, ic], [id_, ie, if_]], np.float32)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer o inner`` (apply ``inner`` first), float32."""
    A, B, C, D, E, F = _affine_rows(outer)
    a, b, c, d, e, f = _affine_rows(inner)
    return np.array([[A * a + B * d, A * b + B * e, A * c + B * f + C],
                     [D * a + E * d, D * b + E * e, D * c + E * f + F]], np.float32)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a 2x3 affine matrix to (..., 2) points."""
    m = np.asarray(matrix, np.float32)
    pts = np.asarray(points, np.float32)
    return pts @ m[:, :2].T + m[:, 2]


def crop_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Resamples ``image`` (H, W, C) into a size x size crop with OpenCV (bilinear).

    Outside the image the crop is black, as in training.
    """
    import cv2  # local: keeps this module importable for pure-geometry users

    matrix = np.asarray(matrix, np.float32)
    a, b, _, d, e, _ = _affine_rows(matrix)
    zoom = abs(a * e - b * d) ** 0.5
    if zoom < 0.5:
        # Strong downscaling: box-average by an integer factor first (OpenCV's fast area
        # path), leaving a zoom in [0.5, 1) for the bilinear warp, so the crop is not
        # aliased. Only the window the crop samples (plus a margin) is averaged: a small
        # face in a large photo costs its own size, not the photo's.
        factor = int(np.ceil(0.5 / zoom))
        x0, y0, x1, y1 = _source_window(image.shape[:2], matrix, size, margin=3 * factor)
        w, h = max(1, (x1 - x0) // factor), max(1, (y1 - y0) // factor)
        window = image[y0:y0 + h * factor, x0:x0 + w * factor]
        small = cv2.resize(window, (w, h), interpolation=cv2.INTER_AREA)
        # small_xy = (window_xy + 0.5) / factor - 0.5 and window_xy = image_xy - (x0, y0),
        # so image_xy = factor * (small_xy + 0.5) - 0.5 + (x0, y0).
        back = np.array([[factor, 0, 0.5 * factor - 0.5 + x0],
                         [0, factor, 0.5 * factor - 0.5 + y0]], np.float32)
        matrix = compose_affine(matrix, back)
        image = small
    return cv2.warpAffine(
        image, matrix, (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def _source_window(shape, matrix: np.ndarray, size: int, margin: float):
    """(x0, y0, x1, y1) integer window of an image of ``shape`` (H, W) holding every pixel
    the ``size`` x ``size`` crop of ``matrix`` samples, grown by ``margin`` pixels and
    clipped to the image (the whole image when the crop lies entirely outside it)."""
    h, w = shape
    ia, ib, ic, id_, ie, if_ = _inverse_rows(matrix)
    corners = [(-0.5, -0.5), (size - 0.5, -0.5), (-0.5, size - 0.5), (size - 0.5, size - 0.5)]
    xs = [ia * x + ib * y + ic for x, y in corners]
    ys = [id_ * x + ie * y + if_ for x, y in corners]
    x0, y0 = math.floor(min(xs) - margin), math.floor(min(ys) - margin)
    x1, y1 = math.ceil(max(xs) + margin) + 1, math.ceil(max(ys) + margin) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return 0, 0, w, h
    return x0, y0, x1, y1


def crop_face(image: np.ndarray, box, size: int, scale: float = DEFAULT_CROP_SCALE):
    """Crops a face: returns ``(crop, matrix)``; map crop points back with
    ``transform_points(invert_affine(matrix), points)``."""
    matrix = crop_matrix(box, size, scale)
    return crop_image(image, matrix, size), matrix


def normalize_image(images):
    """Pixels in [0, 255] -> the models' input range [-1, 1] (numpy arrays or tensors).

    The one input normalization of training, evaluation and runtime; the .tflite
    metadata names it ``x/127.5-1``.
    """
    if isinstance(images, np.ndarray):
        images = images.astype(np.float32)
    return images / 127.5 - 1.0
