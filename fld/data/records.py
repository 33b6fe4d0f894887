"""Annotation records: one face = one image path + its landmarks, and the train/val split.

Coordinates are 0-based pixel centers (see ``fld.crop``); the readers in
``fld.data.readers`` convert every file format to this convention once, so a
``Record`` never holds 1-based iBUG values. Numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

from fld.crop import box_from_landmarks


@dataclasses.dataclass(frozen=True, eq=False)
class Record:
    """One annotated face.

    Attributes:
        image_path: path of the image file.
        landmarks: (K, 2) float32, 0-based pixel centers (x, y).
        box: (4,) float32 face box (x0, y0, x1, y1) from the annotation, or None when
            the format has none (the crop rule then uses the landmarks' box).
        subset: the first folder under the dataset root (``lfpw``, ``helen``, ``afw``,
            a WFLW event folder ...), or ``''`` for files at the root.
        attributes: optional per-face flags from the annotation (WFLW: pose,
            expression, illumination, make_up, occlusion, blur -> 0/1), else None.
    """

    image_path: str
    landmarks: np.ndarray
    box: Optional[np.ndarray] = None
    subset: str = ""
    attributes: Optional[Mapping[str, int]] = None

    def __post_init__(self):
        pts = np.asarray(self.landmarks, np.float32)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 1:
            raise ValueError(f"{self.image_path}: landmarks must be (K, 2), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"{self.image_path}: landmarks contain NaN or inf")
        pts.setflags(write=False)
        object.__setattr__(self, "landmarks", pts)
        if self.box is not None:
            box = np.asarray(self.box, np.float32).reshape(-1)
            if box.shape != (4,) or not np.all(np.isfinite(box)):
                raise ValueError(
                    f"{self.image_path}: box must be 4 finite numbers (x0, y0, x1, y1), "
                    f"got {self.box!r}"
                )
            box.setflags(write=False)
            object.__setattr__(self, "box", box)

    @property
    def face_box(self) -> np.ndarray:
        """The box the crop rule frames: the annotation's box, else the tight
        landmark box (the 300-W ground-truth convention)."""
        return self.box if self.box is not None else box_from_landmarks(self.landmarks)

    @property
    def num_points(self) -> int:
        return int(self.landmarks.shape[0])


def split_records(
    records: Sequence[Record], every: int = 10, offset: int = 0
) -> tuple[list[Record], list[Record]]:
    """Splits records into (train, val): every ``every``-th record goes to validation.

    Records are sorted by image path first, so the split does not depend on the order
    the reader returned them in; record i (in that order) is a validation record when
    ``i % every == offset``. ``every=0`` puts everything in train (no validation).
    """
    if every < 0:
        raise ValueError(f"split_records: every must be >= 0, got {every}")
    ordered = sorted(records, key=lambda r: r.image_path)
    if every == 0:
        return ordered, []
    if not 0 <= offset < every:
        raise ValueError(f"split_records: offset must be in [0, {every}), got {offset}")
    train = [r for i, r in enumerate(ordered) if i % every != offset]
    val = [r for i, r in enumerate(ordered) if i % every == offset]
    return train, val
