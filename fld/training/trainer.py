"""Training orchestration for both stages: config -> data -> models -> optimizers -> fit.

    config = TrainConfig(data_dir="../shared/data/300w/train", work_dir="runs/teacher",
                         model="swinv2_tiny_window8_256")
    result = train(config)          # stage 1 (or a student alone)
    train(dataclasses.replace(config, model="mobilevitv2_050", teacher="runs/teacher/best.keras",
                              work_dir="runs/student"))   # stage 2: distillation

``TrainConfig`` is the single source of the command-line flags: ``define_flags()``
declares one absl flag per field and ``config_from_flags()`` reads them back, so
``tools/train.py`` and ``tools/distill.py`` share every definition.

Work directory: ``flags.txt`` (the resolved flags, re-runnable with ``--flagfile``),
``state.npz`` (resume state, see ``fld.training.callbacks``), ``best.keras`` (the student
only, EMA weights when EMA is on), ``history.csv``, ``samples.png`` and ``logs/``
(TensorBoard: losses, validation NME, learning rates, sample predictions).

Running the same command again after an interruption resumes from ``state.npz``: the
epoch (and the steps already done in it) continue, nothing is repeated. Each epoch's
data order and augmentation depend only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Optional

from fld.cli import short_error
from fld.fileio import check_model_file, check_writable_dir

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multi_worker")
KD_FORMS = ("mse", "paper")
VAL_DECODE_METHODS = ("argmax", "soft_argmax", "local_soft_argmax")  # fld.codec.decode_ops


def _field(default, help: str, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run (one absl flag each, same names)."""

    # data
    data_dir: Optional[str] = _field(None, "Annotated faces: folder of .pts, .csv or WFLW .txt.")
    scheme: str = _field("300w_68", "Landmark scheme name or scheme .json path.")
    val_every: int = _field(10, "Hold out every N-th face for validation (0 = no validation).")
    max_train_faces: int = _field(0, "Use at most this many training faces (0 = all; smoke runs).")
    image_size: int = _field(256, "Input crop side in pixels.")
    # model
    model: str = _field("mobilevitv2_050", "Model preset (see fld.models.list_presets()).")
    teacher: Optional[str] = _field(None, "Teacher .keras file (stage 2, tools/distill.py).")
    init_from: Optional[str] = _field(None, "Start the student from this .keras model's weights, or "
                                      "an fld int8 .tflite's (dequantised; e.g. the shipped "
                                      "fld/runtime/assets/default_68.tflite) "
                                      "(layers matched by name and shape; e.g. fine-tune or "
                                      "distil a trained student, or reuse a backbone for a new "
                                      "scheme). A resumed run's state wins over it.")
    # optimisation
    batch_size: int = _field(32, "Global batch size (summed over replicas).")
    epochs: int = _field(100, "Epochs to train (a resumed run continues up to this).")
    steps_per_epoch: int = _field(0, "Cap on optimizer steps per epoch (0 = one pass).")
    lr_backbone: float = _field(2e-4, "Peak AdamW learning rate of the backbone.")
    wd_backbone: float = _field(1e-4, "AdamW weight decay of the backbone.")
    lr_head: float = _field(1e-3, "Peak AdamW learning rate of the heads.")
    wd_head: float = _field(2e-5, "AdamW weight decay of the heads.")
    warmup_epochs: float = _field(1.0, "Linear warm-up length in epochs (then cosine to 0).")
    ema_momentum: float = _field(0.999, "EMA decay of the weights (0 = no EMA).")
    # losses
    star_weight: float = _field(1.0, "Weight of L_STAR on the fused heatmap.")
    point_weight: float = _field(10.0, "AAM weight of the point maps.")
    edge_weight: float = _field(10.0, "AAM weight of the edge maps.")
    kd_weight: Optional[float] = _field(None, "L_KD weight (default: 100 for mse, 1 for paper).")
    kd_form: str = _field("mse", "L_KD form: mse (authors' code) or paper (L2 sum).",
                          enum=KD_FORMS)
    # augmentation (fld.data.augment.AugmentConfig)
    flip_prob: float = _field(0.5, "Horizontal flip probability.")
    rotation_sigma: float = _field(18.0, "Rotation standard deviation in degrees.")
    scale_sigma: float = _field(0.1, "Scale standard deviation (around 1).")
    shift_sigma: float = _field(0.05, "Shift standard deviation as a fraction of the crop.")
    occlusion_prob: float = _field(0.4, "Random occluding box probability.")
    blur_prob: float = _field(0.3, "Gaussian blur probability.")
    gamma_prob: float = _field(0.2, "Gamma change probability.")
    noise_prob: float = _field(0.2, "Gaussian noise probability.")
    grey_prob: float = _field(0.2, "Greyscale probability.")
    # run
    seed: int = _field(0, "Seed of weights, data order and augmentation.")
    skip_bad: bool = _field(False, "Skip (and count) faces with a bad annotation or an "
                                   "unreadable image instead of stopping at the first.")
    work_dir: Optional[str] = _field(None, "Output folder (checkpoints, logs); reused to resume.")
    strategy: str = _field("default", "tf.distribute strategy.", enum=STRATEGIES)
    jit_compile: bool = _field(False, "Compile the train step with XLA.")
    checkpoint_every_steps: int = _field(200, "Also save the resume state every N steps.")
    decode: str = _field("soft_argmax", "Heatmap decode for the validation NME (soft_argmax "
                         "= the fused map's mean, what STAR trains).",
                         enum=VAL_DECODE_METHODS)
    num_sample_images: int = _field(4, "Validation faces drawn to TensorBoard each epoch.")
    threads: int = _field(0, "TF intra-op threads (0 = TensorFlow's default).")


# --- flags -------------------------------------------------------------------------------


def define_flags(flag_values=None) -> None:
    """Declares one absl flag per ``TrainConfig`` field (shared by the train CLIs)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    for f in dataclasses.fields(TrainConfig):
        helptext, enum = f.metadata["help"], f.metadata.get("enum")
        kind = f.type.replace("Optional[", "").rstrip("]")
        if enum:
            flags.DEFINE_enum(f.name, f.default, list(enum), helptext, flag_values=fv)
        elif kind == "bool":
            flags.DEFINE_bool(f.name, f.default, helptext, flag_values=fv)
        elif kind == "int":
            flags.DEFINE_integer(f.name, f.default, helptext, flag_values=fv)
        elif kind == "float":
            flags.DEFINE_float(f.name, f.default, helptext, flag_values=fv)
        else:
            flags.DEFINE_string(f.name, f.default, helptext, flag_values=fv)


def config_from_flags(flag_values=None) -> TrainConfig:
    """The ``TrainConfig`` of parsed flags."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    return TrainConfig(**{f.name: fv[f.name].value for f in dataclasses.fields(TrainConfig)})


def config_to_flagfile(config: TrainConfig, command: str = "") -> str:
    """The config as an absl flagfile (``--name=value`` lines; unset values left out)."""
    lines = [f"# Resolved flags of this run. Re-run: {command} --flagfile=<this file>"
             if command else "# Resolved flags of this run (use with --flagfile)."]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{f.name}")
        else:
            lines.append(f"--{f.name}={value}")
    return "\n".join(lines) + "\n"


# --- building blocks ------------------------------------------------------------------------


def make_strategy(name: str):
    """tf.distribute strategy by name (``default`` = the current, single device)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use one of {STRATEGIES}")


def is_chief(strategy) -> bool:
    """True unless this is a non-chief worker of a multi-worker run (which writes nothing)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def augment_config(config: TrainConfig):
    """The flags' augmentation settings as ``fld.data.augment.AugmentConfig``."""
    from fld.data.augment import AugmentConfig

    return AugmentConfig(
        flip_prob=config.flip_prob, rotation_sigma_deg=config.rotation_sigma,
        scale_sigma=config.scale_sigma, shift_sigma=config.shift_sigma,
        occlusion_prob=config.occlusion_prob, blur_prob=config.blur_prob,
        gamma_prob=config.gamma_prob, noise_prob=config.noise_prob,
        grey_prob=config.grey_prob)


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
    import keras

    import fld.models  # noqa: F401 - registers the model classes for deserialisation

    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"--{flag} {path!r}: no such file{missing_hint}")
    try:
        check_model_file(path, "keras")
    except ValueError as e:
        raise ValueError(f"--{flag} {e}") from None
    if not path.endswith(".keras"):
        raise ValueError(f"--{flag} {path!r}: expected a Keras .keras file")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"--{flag} {path!r}: not a loadable Keras model "
                         f"({short_error(e)})") from None


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
    model): its weights are dequantised and its folded BatchNorms unfolded
    (``fld.export.tflite_weights``), then those BatchNorms get the statistics of 64 faces of
    ``train_cache`` (a ``CropCache``) so that training mode starts from the exported
    function.
    Layers are matched by name; a layer is copied only when all its weight shapes agree
    (so a backbone carries over to a model with another scheme's heads). Returns
    ``{"copied": [...], "skipped": [...], "copied_params": n}``; raises if the file is not
    a loadable model or no layer matched.
    """
    import keras
    import numpy as np

    if path and path.endswith(".tflite"):
        return _init_from_tflite(student, path, train_cache)
    if path and os.path.isfile(path) and not path.endswith(".keras"):
        raise ValueError(f"--init_from {path!r}: expected a .keras model or an fld .tflite")
    source = _load_keras_flag("init_from", path)

    def leaf_layers(model):  # layers of nested models (the backbone) included
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                yield from leaf_layers(layer)
            else:
                yield layer

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


def build_distiller(config: TrainConfig, steps_per_epoch: int, strategy, student=None):
    """Student (+ teacher), Distiller and its two AdamW optimizers, inside the strategy scope.

    ``student`` overrides the preset (tests pass tiny models): a model, or a function
    returning one, called inside the scope.
    """
    import keras

    from fld.training.distiller import Distiller
    from fld.training.schedules import WarmupCosine

    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total, int(round(config.warmup_epochs * steps_per_epoch)))
    with strategy.scope():
        if student is None:
            from fld.models import LandmarkDetector

            student = LandmarkDetector(preset=config.model, image_size=config.image_size,
                                       scheme=config.scheme, name="student")
        elif not isinstance(student, keras.Model):
            student = student()
        teacher = load_teacher(config.teacher, config) if config.teacher else None
        if teacher is not None and teacher.output["fused"].shape[1:] != \
                student.output["fused"].shape[1:]:
            raise ValueError(f"teacher fused maps {teacher.output['fused'].shape[1:]} != "
                             f"student's {student.output['fused'].shape[1:]}")
        backbone = find_backbone(student)
        distiller = Distiller(
            student, teacher, scheme=config.scheme, star_weight=config.star_weight,
            point_weight=config.point_weight, edge_weight=config.edge_weight,
            kd_weight=config.kd_weight, kd_form=config.kd_form, backbone=backbone,
            ema_momentum=config.ema_momentum, decode_method=config.decode)
        head_opt = keras.optimizers.AdamW(
            WarmupCosine(config.lr_head, total, warmup), weight_decay=config.wd_head,
            name="head_adamw")
        backbone_opt = None
        if backbone is not None:
            backbone_opt = keras.optimizers.AdamW(
                WarmupCosine(config.lr_backbone, total, warmup),
                weight_decay=config.wd_backbone, name="backbone_adamw")
        else:
            log.warning("no backbone layer found: one optimizer (head settings) for all")
        distiller.compile(optimizer=head_opt, backbone_optimizer=backbone_opt,
                          jit_compile=config.jit_compile)
        if backbone_opt is None:
            head_opt.build(student.trainable_variables)
    return distiller


def epoch_dataset(data: Data, config: TrainConfig, epoch: int, steps: int, skip: int = 0):
    """The training batches of one epoch: order and augmentation seeded by (seed, epoch)."""
    from fld.data.pipeline import make_dataset

    ds = make_dataset(data.train, data.codec, batch_size=config.batch_size, training=True,
                      augment_config=augment_config(config),
                      seed=config.seed * 1_000_003 + epoch)
    return ds.take(steps).skip(skip)


# --- the run --------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    best_score: float
    best_epoch: int
    best_path: str
    history: list
    distiller: object


def _check_resumed_flags(path: str, config: TrainConfig) -> None:
    """Warns about settings that changed since the run in ``work_dir`` started."""
    if not os.path.exists(path):
        return
    old = {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("--") and "=" in line:
            name, value = line[2:].strip().split("=", 1)
            old[name] = value
    new = {k: str(v) for k, v in dataclasses.asdict(config).items() if v is not None}
    changed = [k for k in old if k in new and old[k] != new[k] and k not in ("epochs",)]
    if changed:
        log.warning("resuming with changed flags: %s", ", ".join(
            f"{k}: {old[k]} -> {new[k]}" for k in changed))


def _check_workers_agree(strategy, done: int, work_dir: str) -> None:
    """Raises unless every worker of a multi-worker run resumes from the same step."""
    import numpy as np
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or \
            strategy.num_replicas_in_sync == 1:
        return
    seen = np.asarray(strategy.gather(strategy.run(lambda: tf.constant([done])), axis=0))
    if len(set(seen.tolist())) > 1:
        raise RuntimeError(f"workers resume from different steps {seen.tolist()}: every "
                           f"worker must read the chief's state.npz from --work_dir "
                           f"{work_dir!r} (a folder shared by all workers)")


def train(config: TrainConfig, student=None, command: str = "", verbose=None) -> TrainResult:
    """Trains (stage 1) or distils (stage 2, ``config.teacher`` set); resumes if possible.

    Returns the best validation NME (or training loss without validation), its epoch,
    the path of ``best.keras``, the history and the Distiller.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from fld.fileio import write_text_atomic
    from fld.training import callbacks as cb

    if not config.work_dir:
        raise ValueError("--work_dir is required")
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    work_dir = config.work_dir  # written by the chief only; every worker resumes from it
    if chief:
        check_writable_dir(work_dir, "--work_dir")
        flags_path = os.path.join(work_dir, "flags.txt")
        _check_resumed_flags(flags_path, config)
        write_text_atomic(flags_path, config_to_flagfile(config, command))

    data = load_data(config)
    steps = len(data.train) // config.batch_size
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    distiller = build_distiller(config, steps, strategy, student=student)

    if config.init_from:
        init = init_student_weights(distiller.student, config.init_from, data.train)
        print(f"init_from {config.init_from}: {len(init['copied'])} layers copied "
              f"({init['copied_params']:,} weights), {len(init['skipped'])} left at their "
              f"initial values" + (f" ({', '.join(init['skipped'][:8])}"
                                   f"{', ...' if len(init['skipped']) > 8 else ''})"
                                   if init["skipped"] else ""), flush=True)
        if distiller.ema_vars:  # the average starts from the copied weights
            for ema, var in zip(distiller.ema_vars, distiller.student.trainable_variables):
                ema.assign(var.value)
    checkpoint = cb.TrainingCheckpoint(distiller, work_dir, steps,
                                       every_steps=config.checkpoint_every_steps, write=chief)
    meta = checkpoint.restore()
    first_epoch, skip = (0, 0) if meta is None else (meta["epoch"], meta["step"])
    _check_workers_agree(strategy, first_epoch * steps + skip, work_dir)
    if meta is not None:
        print(f"resuming from {checkpoint.state_path}: epoch {first_epoch + 1}, "
              f"{skip} of {steps} steps done, optimizer step {meta['iterations']}", flush=True)

    from fld.data.pipeline import make_dataset

    val_ds = None
    log_dir = os.path.join(work_dir, "logs")
    callbacks = [cb.EMASwap(distiller)] if distiller.ema_vars else []
    callbacks += [cb.LearningRateLogger(distiller), checkpoint]
    if data.val is not None:
        val_ds = make_dataset(data.val, data.codec, batch_size=config.batch_size,
                              training=False)
        sample_images, sample_targets = next(iter(val_ds.take(1)))
        n = max(0, config.num_sample_images)
        if n and chief:
            callbacks.append(cb.SampleImages(
                distiller, np.asarray(sample_images)[:n],
                np.asarray(sample_targets["landmarks"])[:n], data.codec, log_dir,
                os.path.join(work_dir, "samples.png"), decode_method=config.decode))
    if chief:
        callbacks.append(cb.ScalarLogger(log_dir))
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    for epoch in range(first_epoch, config.epochs):
        # One fit call per epoch: each epoch's data is seeded by (seed, epoch) and a resumed
        # epoch skips the steps already done. The progress bar counts the whole run.
        checkpoint.skip = skip
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
            epochs=config.epochs, steps=steps - skip, model=distiller)
        distiller.fit(epoch_dataset(data, config, epoch, steps, skip), epochs=epoch + 1,
                      initial_epoch=epoch, validation_data=val_ds, callbacks=callback_list,
                      verbose=verbose, shuffle=False)
        skip = 0
    best_path = os.path.join(config.work_dir, "best.keras")
    name = "val_nme" if data.val is not None else "train loss"
    print(f"done in {time.perf_counter() - start:.0f} s: best {name} "
          f"{checkpoint.best:.5f} at epoch {checkpoint.best_epoch}; best model: {best_path}",
          flush=True)
    return TrainResult(checkpoint.best, checkpoint.best_epoch, best_path, checkpoint.history,
                       distiller)


def config_json(config: TrainConfig) -> str:
    """The config as JSON (for logs and tests)."""
    return json.dumps(dataclasses.asdict(config), indent=1)
