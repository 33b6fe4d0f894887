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
- pass 2 (``passes=2``): crop again from pass 1's predicted points, predict again (a
  re-crop from the model's own prediction). With a ``points_map`` the points themselves
  say where the full box lies: a ridge regression from the K predicted points (centered
  on their tight box, divided by its longer side) onto the full box's center offset and
  size (``fit_points_map``). The points carry what the box alone does not (the pose:
  where the nose sits between the eyes says where the jaw is), so it frames the
  training crop better than the box map; without one, the tight box of the points is
  mapped like a given box.

The model metadata's ``crop_box`` key holds it (``to_dict`` / ``from_dict``; checked by
``fld.runtime.metadata.ModelInfo``); files without the key crop the given box as it is.

Numpy only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import numpy as np

from fld.crop import box_from_landmarks
from fld.runtime.detector import BoxMapping, fit_box_mapping

MAX_PASSES = 3
POINTS_MAP_RIDGE = 1e-2   # ridge weight of fit_points_map (features are box-side fractions)


@dataclasses.dataclass(frozen=True)
class CropBox:
    """Own-points box -> training crop box (``mapping``), the runtime's ``passes`` and
    the optional ``points_map`` of passes after the first, a (2K + 1, 4) matrix."""

    mapping: BoxMapping
    passes: int = 1
    points_map: Optional[tuple] = None   # rows of 4 floats (tuples: comparable, hashable)

    def __post_init__(self):
        if self.points_map is not None:
            m = np.asarray(self.points_map, np.float64)
            if m.ndim != 2 or m.shape[1] != 4 or m.shape[0] % 2 != 1 or \
                    not np.isfinite(m).all():
                raise ValueError(f"crop_box.points_map must be a finite (2K + 1, 4) matrix, "
                                 f"got shape {m.shape}")
            object.__setattr__(self, "points_map", tuple(tuple(map(float, r)) for r in m))

    @functools.cached_property
    def _points_matrix(self) -> np.ndarray:
        """``points_map`` as a (2K + 1, 4) array, built once (``recrop_box`` runs per face)."""
        return np.asarray(self.points_map, np.float64)

    def apply(self, box) -> np.ndarray:
        """(4,) or (N, 4) own-points boxes -> the boxes the crop rule frames."""
        return self.mapping.apply(box)

    def recrop_box(self, points) -> np.ndarray:
        """(4,) own-points box to crop (through ``apply``) for a re-crop from the (K, 2)
        predicted ``points``: the tight box, or with a ``points_map`` the box whose
        ``apply`` is the full box the map predicts."""
        points = np.asarray(points, np.float64)
        if self.points_map is None:
            return box_from_landmarks(points)
        matrix = self._points_matrix
        if len(matrix) != 2 * len(points) + 1:
            raise ValueError(f"crop_box.points_map is for {(len(matrix) - 1) // 2} points, "
                             f"got {len(points)}")
        features, center, side = _point_features(points)
        dcx, dcy, w, h = features @ matrix * side
        full = np.array([center[0] + dcx - w / 2, center[1] + dcy - h / 2,
                         center[0] + dcx + w / 2, center[1] + dcy + h / 2])
        return self.mapping.invert(full)

    def to_dict(self) -> dict:
        out = {"mapping": [float(v) for v in self.mapping.as_tuple()],
               "passes": int(self.passes)}
        if self.points_map is not None:
            out["points_map"] = [[round(float(v), 6) for v in row] for row in self.points_map]
        return out

    @classmethod
    def from_dict(cls, value: dict) -> "CropBox":
        """The metadata's ``crop_box`` object; ValueError / KeyError / TypeError when
        malformed (``ModelInfo`` checks the numbers' ranges)."""
        mapping = value["mapping"]
        if len(mapping) != 4:
            raise ValueError(f"crop_box.mapping needs 4 numbers (dx, dy, sx, sy), got "
                             f"{mapping}")
        points_map = value.get("points_map")
        return cls(BoxMapping(*mapping), value.get("passes", 1),
                   None if points_map is None else tuple(map(tuple, points_map)))


def _point_features(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(2K + 1,) features of (K, 2) points: centered on their tight box, divided by its
    longer side, and a 1; with that center and side."""
    box = box_from_landmarks(points).astype(np.float64)
    center = (box[:2] + box[2:]) / 2
    side = max(float(np.max(box[2:] - box[:2])), 1e-6)
    return np.append(((points - center) / side).ravel(), 1.0), center, side


def fit_points_map(landmarks: Sequence[np.ndarray], indices,
                   ridge: float = POINTS_MAP_RIDGE) -> tuple[np.ndarray, dict]:
    """The ``points_map``: ridge least squares from the subset's points (``_point_features``)
    onto the full box's (center x, center y) offset and (width, height), all in units of
    the subset box's longer side. Returns the (2K + 1, 4) matrix and its RMS residuals in
    units of the full box's longer side (``fit_box_mapping``'s)."""
    indices = np.asarray(indices, int)
    rows, targets, scale = [], [], []
    for p in landmarks:
        p = np.asarray(p, np.float64)
        features, center, side = _point_features(p[indices])
        full = box_from_landmarks(p).astype(np.float64)
        size = full[2:] - full[:2]
        rows.append(features)
        targets.append(np.concatenate([(full[:2] + full[2:]) / 2 - center, size]) / side)
        scale.append(max(size) / side)
    x, y = np.asarray(rows), np.asarray(targets)
    matrix = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    rms = np.sqrt(np.mean(((y - x @ matrix) / np.asarray(scale)[:, None]) ** 2, axis=0))
    return matrix, dict(zip(("center_x", "center_y", "width", "height"), map(float, rms)))


def own_and_full_boxes(landmarks: Sequence[np.ndarray], indices) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) tight boxes of the subset ``indices`` and of all the points, per face."""
    indices = np.asarray(indices, int)
    own = np.stack([box_from_landmarks(np.asarray(p)[indices]) for p in landmarks])
    full = np.stack([box_from_landmarks(p) for p in landmarks])
    return own, full


def fit_crop_box(landmarks: Sequence[np.ndarray], indices, passes: int = 1
                 ) -> tuple[CropBox, dict]:
    """The ``CropBox`` of a subset model, fitted on faces annotated with all the points.

    Args:
        landmarks: (K, 2) arrays of the full scheme (e.g. 68 points), one per face: the
            training faces (keep the validation faces out to score it fairly).
        indices: the subset's points among the K (``fld.schemes.subset_indices``).
        passes: stored for the runtime (module docstring); with 2 or more, the
            ``points_map`` of the re-crops is fitted too.
    Returns:
        ``(crop_box, residuals)``: ``fld.runtime.detector.fit_box_mapping``'s RMS
        residuals (box-side fractions), ``faces``, and with passes >= 2 the points map's
        residuals under ``points_map``.
    """
    if len(landmarks) == 0:
        raise ValueError("fit_crop_box: no faces to fit on")
    if not 1 <= int(passes) <= MAX_PASSES:
        raise ValueError(f"fit_crop_box: passes must be 1..{MAX_PASSES}, got {passes}")
    own, full = own_and_full_boxes(landmarks, indices)
    mapping, residuals = fit_box_mapping(own, full)
    residuals = dict(residuals, faces=len(own))
    points_map = None
    if int(passes) >= 2:
        points_map, residuals["points_map"] = fit_points_map(landmarks, indices)
    return CropBox(mapping, int(passes), points_map), residuals
