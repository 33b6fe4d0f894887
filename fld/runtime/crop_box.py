"""The crop box of a subset-points model: the box of its own points -> its training crop's box.

Every fld model is called with the tight box of ITS OWN points (``Landmarker.predict(image,
box)``, ``tools/predict.py --boxes``, ``tools/evaluate.py --boxes gt``), but a file exported
with a subset of its network's points (``tools/convert.py --points pair_51``: the 68-point
network without the 17 jaw channels) was trained on crops framed by the box of ALL its
training points. The 51 inner points' box is tighter and higher than the 68-point box, so
cropping it with the crop rule frames the face differently from every training crop.

``CropBox`` stores the linear map from the one box to the other (a
``fld.runtime.detector.BoxMapping``, the same four numbers as a detector mapping; fitted
by least squares on faces annotated with all the network's points, ``fit_crop_box``) and
how many passes the runtime makes:

- pass 1: map the given box, crop, predict;
- pass 2 (``passes=2``): map the tight box of pass 1's predicted points, crop again,
  predict again (a re-crop from the model's own prediction).

The model metadata's ``crop_box`` key holds it (``to_dict`` / ``from_dict``; checked by
``fld.runtime.metadata.ModelInfo``); files without the key crop the given box as it is.

Numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from fld.crop import box_from_landmarks
from fld.runtime.detector import BoxMapping, fit_box_mapping

MAX_PASSES = 3


@dataclasses.dataclass(frozen=True)
class CropBox:
    """Own-points box -> training crop box (``mapping``), and the runtime's ``passes``."""

    mapping: BoxMapping
    passes: int = 1

    def apply(self, box) -> np.ndarray:
        """(4,) or (N, 4) own-points boxes -> the boxes the crop rule frames."""
        return self.mapping.apply(box)

    def to_dict(self) -> dict:
        return {"mapping": [float(v) for v in self.mapping.as_tuple()],
                "passes": int(self.passes)}

    @classmethod
    def from_dict(cls, value: dict) -> "CropBox":
        """The metadata's ``crop_box`` object; ValueError / KeyError / TypeError when
        malformed (``ModelInfo`` checks the numbers' ranges)."""
        mapping = value["mapping"]
        if len(mapping) != 4:
            raise ValueError(f"crop_box.mapping needs 4 numbers (dx, dy, sx, sy), got "
                             f"{mapping}")
        return cls(BoxMapping(*mapping), value.get("passes", 1))


def own_and_full_boxes(landmarks: Sequence[np.ndarray], indices) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) tight boxes of the subset ``indices`` and of all the points, per face."""
    indices = np.asarray(indices, int)
    own = np.stack([box_from_landmarks(np.asarray(p)[indices]) for p in landmarks])
    full = np.stack([box_from_landmarks(p) for p in landmarks])
    return own, full


def fit_crop_box(landmarks: Sequence[np.ndarray], indices, passes: int = 1) -> tuple[CropBox, dict]:
    """The ``CropBox`` of a subset model, fitted on faces annotated with all the points.

    Args:
        landmarks: (K, 2) arrays of the full scheme (e.g. 68 points), one per face: the
            training faces (keep the validation faces out to score it fairly).
        indices: the subset's points among the K (``fld.schemes.subset_indices``).
        passes: stored for the runtime (module docstring).
    Returns:
        ``(crop_box, residuals)``: ``fld.runtime.detector.fit_box_mapping``'s RMS
        residuals (box-side fractions) plus ``faces``.
    """
    if len(landmarks) == 0:
        raise ValueError("fit_crop_box: no faces to fit on")
    if not 1 <= int(passes) <= MAX_PASSES:
        raise ValueError(f"fit_crop_box: passes must be 1..{MAX_PASSES}, got {passes}")
    own, full = own_and_full_boxes(landmarks, indices)
    mapping, residuals = fit_box_mapping(own, full)
    return CropBox(mapping, int(passes)), dict(residuals, faces=len(own))
