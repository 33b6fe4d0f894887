"""What every annotation reader checks, and how it reports: ``AnnotationError`` naming the
file (and line) and the problem, or with ``skip_bad`` one ``AnnotationWarning`` counting the
skipped entries; numbers that must be finite; faces that must lie in their image.

Numpy only (no TensorFlow).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from fld.data.records import Record
from fld.images import image_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_MAX_REASONS = 3  # reasons quoted in the skip_bad summary warning
# How far beyond its image's border a face's points may lie, in box sides (faces cut by
# the border keep their points; a shifted or negated annotation does not pass).
OUTSIDE_MARGIN = 0.25


class AnnotationError(ValueError):
    """An annotation file (or one entry of it) is malformed."""


class AnnotationWarning(UserWarning):
    """Bad annotations were skipped (``skip_bad=True``)."""



def parse_number(token: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise AnnotationError(f"{where}: not a number: {token!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: non-finite value {token!r}")
    return value


class BadEntries:
    """Raises on the first bad entry, or (skip_bad) collects them for one warning."""

    def __init__(self, source: str, skip_bad: bool):
        self.source = source
        self.skip_bad = skip_bad
        self.reasons: list[str] = []

    def handle(self, error: AnnotationError) -> None:
        if not self.skip_bad:
            raise error
        self.reasons.append(str(error))

    def finish(self, records: list[Record], total: int) -> list[Record]:
        if not self.reasons:
            return records
        shown = "; ".join(self.reasons[:_MAX_REASONS])
        more = len(self.reasons) - _MAX_REASONS
        summary = (f"{self.source}: skipped {len(self.reasons)} bad annotation(s) of "
                   f"{total}: {shown}" + (f"; and {more} more" if more > 0 else ""))
        if not records:
            raise AnnotationError(f"no usable annotations left. {summary}")
        warnings.warn(summary, AnnotationWarning, stacklevel=3)
        return records


def check_image(image_path: str, where: str) -> None:
    if not os.path.isfile(image_path):
        raise AnnotationError(f"{where}: image file not found: {image_path}")


def check_inside_image(image_path: str, landmarks: np.ndarray, where: str) -> None:
    """AnnotationError unless the face lies in its image: the center of its landmark box
    inside the image, and no point more than ``OUTSIDE_MARGIN`` x the box's longer side
    beyond the border. The size comes from the image header (no decoding), so an image
    whose header cannot be read is reported here, before any training or scoring."""
    try:
        size = image_size(image_path)
    except OSError as e:
        raise AnnotationError(f"{where}: cannot read image {image_path} ({e})") from None
    if size is None:
        if image_path.lower().endswith(IMAGE_EXTENSIONS):
            raise AnnotationError(f"{where}: image {image_path} has no readable header "
                                  f"(corrupt or truncated)")
        return   # a format without a header reader here: checked when decoded
    width, height = size
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    center, margin = (low + high) / 2, OUTSIDE_MARGIN * float(np.max(high - low))
    limit = np.array([width - 0.5, height - 0.5])
    if not (np.all(center >= -0.5) and np.all(center <= limit)) or \
            np.any(low < -0.5 - margin) or np.any(high > limit + margin):
        raise AnnotationError(
            f"{where}: the points (x {low[0]:.6g}..{high[0]:.6g}, y {low[1]:.6g}..{high[1]:.6g})"
            f" lie outside the {width}x{height} image {os.path.basename(image_path)} (allowed:"
            f" box center inside, points up to {OUTSIDE_MARGIN:g} x the box side beyond)")
