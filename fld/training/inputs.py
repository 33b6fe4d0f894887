"""What a training run reads: the annotated faces (cropped and cached), the frozen
teacher, and the weights a student starts from (``--init_from``: a ``.keras`` model or an
fld int8 ``.tflite``). Errors name the flag and the file.
"""

from __future__ import annotations

import dataclasses
import math
import os

from fld.training.config import TrainConfig

def augment_config(config: TrainConfig):
    """The flags' augmentation settings as ``fld.data.augment.AugmentConfig``."""
    from fld.data.augment import AugmentConfig

    return AugmentConfig(
        flip_prob=config.flip_prob, rotation_sigma_deg=config.rotation_sigma,
        scale_sigma=config.scale_sigma, shift_sigma=config.shift_sigma,
        occlusion_prob=config.occlusion_prob, blur_prob=config.blur_prob,
        gamma_prob=config.gamma_prob, noise_prob=config.noise_prob,
        gray_prob=config.gray_prob)


@dataclasses.dataclass
class Data:
    """Crop caches and codec of a run."""

    codec: object
    train: object  # CropCache
    val: object    # CropCache or None


def load_data(config: TrainConfig) -> Data:
    """Reads, splits (every ``val_every``-th face to validation), caps and caches faces."""
    from fld.codec import HeatmapCodec
    from fld.data.pipeline import CropCache
    from fld.data.readers import read_annotations
    from fld.data.records import split_records
    from fld.schemes import get_scheme

    if not config.data_dir:
        raise ValueError("--data_dir is required (folder of .pts files, .csv or WFLW .txt)")
    if not os.path.exists(config.data_dir):
        raise FileNotFoundError(f"--data_dir {config.data_dir!r} does not exist")
    scheme = get_scheme(config.scheme)
    records = read_annotations(config.data_dir, scheme=scheme, skip_bad=config.skip_bad)
    if not records:
        raise ValueError(f"--data_dir {config.data_dir!r} holds no annotated faces")
    train, val = split_records(records, every=config.val_every)
    if config.max_train_faces:
        train = train[:config.max_train_faces]
        if val and config.val_every > 1:
            val = val[:max(1, math.ceil(len(train) / (config.val_every - 1)))]
    if len(train) < config.batch_size:
        raise ValueError(f"{len(train)} training faces < --batch_size {config.batch_size}: "
                         f"lower the batch size or add faces")
    codec = HeatmapCodec(scheme, image_size=config.image_size)
    print(f"faces: {len(train)} train, {len(val)} validation (every {config.val_every}th) "
          f"from {config.data_dir}", flush=True)
    return Data(codec, CropCache.build(train, codec, skip_bad=config.skip_bad, progress=False),
                CropCache.build(val, codec, skip_bad=config.skip_bad, progress=False)
                if val else None)


def find_backbone(model):
    """The model's backbone layer: its ``backbone`` attribute or a layer named ``backbone``."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        names = [layer.name for layer in model.layers]
        backbone = model.get_layer("backbone") if "backbone" in names else None
    return backbone


def _load_keras_flag(flag: str, path: str, missing_hint: str = ""):
    """The .keras model a flag names; errors name the flag and the file."""
    from fld.keras_engine import load_keras_model

    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"--{flag} {path!r}: no such file{missing_hint}")
    if not path.endswith(".keras"):
        raise ValueError(f"--{flag} {path!r}: expected a Keras .keras file")
    try:
        return load_keras_model(path, compile=False, any_keras_model=True)
    except ValueError as e:  # the message names the file
        raise ValueError(f"--{flag} {e}") from None


def load_teacher(path: str, config: TrainConfig):
    """Loads the frozen teacher and checks it fits the student's input and scheme."""
    from fld.schemes import get_scheme

    teacher = _load_keras_flag("teacher", path,
                               " (give the teacher's best.keras from stage 1)")
    scheme = get_scheme(config.scheme)
    outputs = teacher.output
    if not isinstance(outputs, dict) or "fused" not in outputs:
        raise ValueError(f"--teacher {path!r}: outputs must be a dict with 'fused' "
                         f"(a fld.models.LandmarkDetector)")
    size = teacher.input_shape[1:3]
    if tuple(size) != (config.image_size, config.image_size):
        raise ValueError(f"--teacher {path!r}: input {size}, but --image_size "
                         f"{config.image_size}")
    k = outputs["fused"].shape[-1]
    teacher_scheme = getattr(teacher, "scheme", None)
    if k != scheme.num_points or (teacher_scheme is not None
                                  and getattr(teacher_scheme, "name", None) != scheme.name):
        raise ValueError(f"--teacher {path!r}: scheme mismatch: the teacher has {k} points"
                         f" (scheme {getattr(teacher_scheme, 'name', '?')!r}), --scheme "
                         f"{scheme.name!r} has {scheme.num_points}")
    return teacher


def init_student_weights(student, path: str, train_cache=None) -> dict:
    """Copies the weights of ``path`` into ``student``, layer by layer.

    ``path`` is a .keras model, or an fld int8 ``.tflite`` (e.g. the shipped default
    model): its weights are dequantized and its folded BatchNorms unfolded
    (``fld.export.tflite_weights``), then those BatchNorms get the statistics of 64 faces of
    ``train_cache`` (a ``CropCache``) so that training mode starts from the exported
    function.
    Layers are matched by name; a layer is copied only when all its weight shapes agree
    (so a backbone carries over to a model with another scheme's heads). Returns
    ``{"copied": [...], "skipped": [...], "copied_params": n}``; raises if the file is not
    a loadable model or no layer matched.
    """
    import numpy as np

    if path and path.endswith(".tflite"):
        return _init_from_tflite(student, path, train_cache)
    if path and os.path.isfile(path) and not path.endswith(".keras"):
        raise ValueError(f"--init_from {path!r}: expected a .keras model or an fld .tflite")
    source = _load_keras_flag("init_from", path)

    from fld.models.layers import leaf_layers

    def weighted_layers(model):
        return {layer.name: layer for layer in leaf_layers(model) if layer.weights}

    source_layers = weighted_layers(source)
    copied, skipped, params = [], [], 0
    for name, layer in weighted_layers(student).items():
        other = source_layers.get(name)
        if other is None or [tuple(w.shape) for w in other.weights] != \
                [tuple(w.shape) for w in layer.weights]:
            skipped.append(name)
            continue
        layer.set_weights(other.get_weights())
        copied.append(name)
        params += sum(int(np.prod(w.shape)) for w in layer.weights)
    if not copied:
        raise ValueError(f"--init_from {path!r}: no layer matches the student by name and "
                         f"shape (another model family?)")
    return {"copied": copied, "skipped": skipped, "copied_params": params}


def _init_from_tflite(student, path: str, cache) -> dict:
    import cv2
    import numpy as np

    from fld.export.calibration import spread_indices
    from fld.crop import normalize_image
    from fld.export.tflite_weights import load_tflite_weights, recalibrate_batchnorm

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--init_from {path!r}: no such file")
    try:
        report = load_tflite_weights(student, path)
    except ValueError as e:
        raise ValueError(f"--init_from {e}") from e
    if report["folded_bn"]:
        if cache is None or not len(cache.images):
            raise ValueError(f"--init_from {path!r}: a .tflite needs training faces to "
                             f"recalibrate its {len(report['folded_bn'])} folded BatchNorms")
        size = int(student.input_shape[1])
        picked = spread_indices(len(cache.images), 64)
        crops = np.stack([normalize_image(cv2.warpAffine(cache.images[i], cache.to_output,
                                                         (size, size), flags=cv2.INTER_LINEAR))
                          for i in picked])
        recalibrate_batchnorm(student, report["folded_bn"], crops)
    return report
