"""Real face crops for int8 calibration and for checking a converted model.

The faces come from any annotated folder (or file) that ``fld.data.readers.read_annotations``
reads; each is cropped with THE crop rule (``fld.crop.crop_face`` on the annotation's box,
else the tight landmark box, as ``fld.data.pipeline.CropCache`` does for training) and
normalized as training normalizes (``x / 127.5 - 1``), so the converter calibrates on
exactly the inputs the model was trained on.

The faces are chosen deterministically and spread over the whole folder (records are
sorted by path, so every subset is represented), and the faces held out to check the
converted model are never among the calibration faces.

    records = read_calibration_records("../shared/data/300w/train", scheme)
    calibration, held_out = pick_calibration_faces(records, 300, 50)
    crops = face_crops(calibration, image_size=256)   # [(1, 256, 256, 3) float32]

Numpy and OpenCV only (no TensorFlow).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Iterable, Optional, Sequence

import numpy as np

from fld.crop import DEFAULT_CROP_SCALE, crop_face, normalize_image
from fld.data.readers import read_annotations
from fld.data.records import Record
from fld.images import ImageError, read_image_rgb


class CalibrationError(ValueError):
    """No usable calibration faces (missing or empty folder, unreadable images)."""


# A calibration face counts as an outlier when some layer peaks above this many times its
# median peak (``outlier_crops``).
DEFAULT_OUTLIER_FACTOR = 10.0

def read_calibration_records(path: str, scheme=None) -> list[Record]:
    """The annotated faces under ``path`` (adapted to ``scheme``), sorted by path.

    Raises CalibrationError naming ``path`` when it does not exist or holds no faces.
    """
    if not os.path.exists(path):
        raise CalibrationError(f"calibration folder not found: {path}")
    try:
        records = read_annotations(path, scheme=scheme)
    except (ValueError, FileNotFoundError) as e:  # AnnotationError is a ValueError
        raise CalibrationError(f"calibration data {path}: {e}") from None
    if not records:
        raise CalibrationError(f"calibration data {path}: no annotated faces")
    return records


def spread_indices(total: int, count: int) -> np.ndarray:
    """``count`` distinct indices spread evenly over ``range(total)`` (deterministic)."""
    count = max(0, min(int(count), int(total)))
    return np.floor((np.arange(count) + 0.5) * total / max(count, 1)).astype(int)


def pick_calibration_faces(records: Sequence[Record], num_calibration: int,
                           num_held_out: int) -> tuple[list[Record], list[Record]]:
    """Disjoint (calibration, held-out) faces, both spread over ``records``.

    With fewer records than asked for, the held-out set shrinks to a fifth of them
    (at least one face when there are two or more) and calibration gets the rest.
    """
    n = len(records)
    if num_calibration < 1:
        raise ValueError(f"num_calibration must be >= 1, got {num_calibration}")
    held = max(0, int(num_held_out))
    if n < num_calibration + held:
        held = min(held, max(1, n // 5) if n >= 2 else 0)
    chosen = spread_indices(n, min(n, num_calibration + held))
    held_positions = set(spread_indices(len(chosen), held).tolist())
    calibration = [records[i] for p, i in enumerate(chosen) if p not in held_positions]
    held_out = [records[i] for p, i in enumerate(chosen) if p in held_positions]
    return calibration, held_out


def read_rgb(path: str) -> Optional[np.ndarray]:
    """RGB uint8 image, or None when the file is missing or not decodable."""
    try:
        return read_image_rgb(path)
    except ImageError:
        return None


def face_crops(records: Iterable[Record], image_size: int,
               crop_scale: float = DEFAULT_CROP_SCALE, progress: bool = True,
               desc: str = "calibration crops", with_records: bool = False):
    """(1, S, S, 3) float32 crops in [-1, 1], one per readable record.

    Unreadable images are skipped with one warning; CalibrationError if none is readable.
    ``with_records``: return ``(crops, records)``, the records the crops came from.
    """
    from tqdm import tqdm

    records = list(records)
    crops, used, bad = [], [], []
    for record in tqdm(records, desc=desc, unit="face", file=sys.stderr, disable=None if progress else True):
        image = read_rgb(record.image_path)
        if image is None:
            bad.append(record.image_path)
            continue
        crop, _ = crop_face(image, record.face_box, image_size, crop_scale)
        crops.append(normalize_image(crop)[None])
        used.append(record)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s), e.g. {bad[:3]}", stacklevel=2)
    if records and not crops:
        raise CalibrationError(f"none of the {len(records)} calibration images is readable "
                               f"(first: {records[0].image_path})")
    return (crops, used) if with_records else crops


# --- calibration diagnostics: faces that would stretch a tensor's int8 range ---------


def layer_peaks(model, images: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Every layer's largest absolute output on every image, in inference mode.

    Returns ``(names, peaks)``: one name per probed tensor (``layer`` or ``layer:i`` for a
    layer with several outputs; layers of a nested backbone are probed too, in graph order)
    and ``peaks`` (images, tensors). Used to find faces that drive a layer far out of its
    usual range (``outlier_crops``, ``tools/probe_layers.py``).
    """
    import keras

    probes, names = [], []

    def tensors(layers):
        out = []
        for layer in layers:
            flat = keras.tree.flatten(layer.output)
            names.extend(layer.name if len(flat) == 1 else f"{layer.name}:{i}"
                         for i in range(len(flat)))
            out += flat
        return out

    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.layers:   # nested backbone: its layers
            probes.append(keras.Model(layer.input, tensors(layer.layers[1:])))
    probes.append(keras.Model(model.input, tensors(
        [x for x in model.layers[1:] if not isinstance(x, keras.Model)])))
    peaks = []
    for image in images:
        row = []
        for probe in probes:
            outputs = probe(np.asarray(image, np.float32), training=False)
            row += [float(np.abs(np.asarray(o)).max()) for o in keras.tree.flatten(outputs)]
        peaks.append(row)
    return names, np.asarray(peaks, np.float64).reshape(len(peaks), len(names))


def outlier_crops(model, images: Sequence[np.ndarray],
                  factor: float = DEFAULT_OUTLIER_FACTOR) -> list[int]:
    """Indices of calibration images on which some layer's output peaks above ``factor``
    times that layer's median peak over all the images.

    int8 calibration takes each tensor's range from its min and max over the images, so
    one image that drives a layer far out of its usual range (measured: one 300-W face
    sent the student's layer-4 attention to 494 against a typical 0.7) stretches that
    tensor's scale until the usual values get a few levels: the converted student then
    scored 12.8% instead of 7.4%. Leave such images out of calibration.

    Args:
        model: the Keras model to convert (layers of a nested backbone are probed too).
        images: (1, S, S, 3) float32 crops.
        factor: how far above the median peak counts as an outlier.
    """
    if not images:
        return []
    _, peaks = layer_peaks(model, images)                       # (images, tensors)
    typical = np.maximum(np.median(peaks, axis=0), 1e-6)
    return [int(i) for i in np.flatnonzero((peaks > factor * typical).any(axis=1))]


def drop_outliers(model, crops: list, records: list, factor: float = DEFAULT_OUTLIER_FACTOR):
    """``crops`` without their outliers (``outlier_crops``), and a note saying what was
    left out (empty when nothing was). When more than half would count (an untrained
    model), keeps them all: such ranges are the model's, not one face's."""
    outliers = set(outlier_crops(model, crops, factor)) if factor else set()
    if len(outliers) > len(crops) // 2:
        return list(crops), (f"calibration: {len(outliers)} of {len(crops)} faces would count "
                             f"as outliers (an untrained model?): keeping them all")
    if not outliers:
        return list(crops), ""
    names = ", ".join(records[i].image_path for i in sorted(outliers))
    return ([c for i, c in enumerate(crops) if i not in outliers],
            f"calibration: left out {len(outliers)} face(s) driving a layer above "
            f"{factor:g}x its median peak: {names}")

