"""Training orchestration for both stages: config -> data -> models -> optimizers -> fit.

    config = TrainConfig(data_dir="../shared/data/300w/train", work_dir="runs/teacher",
                         model="swinv2_tiny_window8_256")
    result = train(config)          # stage 1 (or a student alone)
    train(dataclasses.replace(config, model="mobilevitv2_050", teacher="runs/teacher/best.keras",
                              work_dir="runs/student"))   # stage 2: distillation

Settings: ``fld.training.config`` (``TrainConfig``, the flags); what a run reads (faces,
teacher, ``--init_from`` weights): ``fld.training.inputs``; the resumable state:
``fld.training.checkpoint``. Their public names are re-exported here.

Work directory: ``flags.txt`` (the resolved flags, re-runnable with ``--flagfile``),
``state.npz`` (resume state, see ``fld.training.checkpoint``), ``best.keras`` (the student
only, EMA weights when EMA is on), ``history.csv``, ``samples.png`` and ``logs/``
(TensorBoard: losses, validation NME, learning rates, sample predictions).

Running the same command again after an interruption resumes from ``state.npz``: the
epoch (and the steps already done in it) continue, nothing is repeated. Each epoch's
data order and augmentation depend only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import time

from fld.fileio import check_writable_dir
from fld.training.config import (  # noqa: F401  (re-exported: the trainer's public API)
    KD_FORMS, STRATEGIES, TrainConfig, config_from_flags, config_json,
    config_to_flagfile, define_flags)
from fld.training.inputs import (  # noqa: F401
    Data, augment_config, find_backbone, init_student_weights, load_data, load_teacher)

log = logging.getLogger(__name__)

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


# Replicated strategies need TensorFlow's oneDNN graph rewrite off: TF 2.21 turns it on by
# default on CPUs with AVX-512 VNNI / AMX, and with it a replica on a second device
# (MirroredStrategy's /cpu:1, a worker's /task:1) can be fed a wrong tensor ("input depth
# must be evenly divisible by filter depth: 3 vs 8" in a nested model's conv). Measured:
# docs/experiments/2026-12-07-multi-worker-onednn.md.
REPLICATED_STRATEGIES = ("mirrored", "multi_worker")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs the oneDNN graph rewrite."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:   # a TensorFlow without the probe: trust the switch
        return os.environ.get(ONEDNN_ENV, "1") != "0"
    return bool(_pywrap_util_port.IsMklEnabled())


def restart_without_onednn(strategy_name: str, execve=os.execve) -> None:
    """For a replicated ``--strategy``: re-runs this command in a fresh process with
    ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow reads it once, at start-up) unless the rewrite
    is already off. Returns only when nothing needs restarting."""
    if strategy_name not in REPLICATED_STRATEGIES or os.environ.get(ONEDNN_ENV) == "0" \
            or not onednn_enabled():
        return
    print(f"--strategy {strategy_name}: restarting with {ONEDNN_ENV}=0 (TensorFlow's oneDNN "
          f"graph rewrite breaks replicas on a second device)", flush=True)
    execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, **{ONEDNN_ENV: "0"}))


def is_chief(strategy) -> bool:
    """True unless this is a non-chief worker of a multi-worker run (which writes nothing)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


def build_landmark_trainer(config: TrainConfig, steps_per_epoch: int, strategy, student=None):
    """Student (+ teacher), LandmarkTrainer and its two AdamW optimizers, inside the strategy scope.

    ``student`` overrides the preset (tests pass tiny models): a model, or a function
    returning one, called inside the scope.
    """
    import keras

    from fld.training.landmark_trainer import LandmarkTrainer
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
        trainer_model = LandmarkTrainer(
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
        trainer_model.compile(optimizer=head_opt, backbone_optimizer=backbone_opt,
                          jit_compile=config.jit_compile)
        if backbone_opt is None:
            head_opt.build(student.trainable_variables)
    return trainer_model


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
    trainer_model: object


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
    """Trains (stage 1) or distills (stage 2, ``config.teacher`` set); resumes if possible.

    Returns the best validation NME (or training loss without validation), its epoch,
    the path of ``best.keras``, the history and the LandmarkTrainer.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from fld.fileio import write_text_atomic
    from fld.training import callbacks as cb
    from fld.training.checkpoint import TrainingCheckpoint

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
    trainer_model = build_landmark_trainer(config, steps, strategy, student=student)

    if config.init_from:
        init = init_student_weights(trainer_model.student, config.init_from, data.train)
        print(f"init_from {config.init_from}: {len(init['copied'])} layers copied "
              f"({init['copied_params']:,} weights), {len(init['skipped'])} left at their "
              f"initial values" + (f" ({', '.join(init['skipped'][:8])}"
                                   f"{', ...' if len(init['skipped']) > 8 else ''})"
                                   if init["skipped"] else ""), flush=True)
        if trainer_model.ema_vars:  # the average starts from the copied weights
            for ema, var in zip(trainer_model.ema_vars, trainer_model.student.trainable_variables):
                ema.assign(var.value)
    checkpoint = TrainingCheckpoint(trainer_model, work_dir, steps,
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
    callbacks = [cb.EMASwap(trainer_model)] if trainer_model.ema_vars else []
    callbacks += [cb.LearningRateLogger(trainer_model), checkpoint]
    if data.val is not None:
        val_ds = make_dataset(data.val, data.codec, batch_size=config.batch_size,
                              training=False)
        sample_images, sample_targets = next(iter(val_ds.take(1)))
        n = max(0, config.num_sample_images)
        if n and chief:
            callbacks.append(cb.SampleImages(
                trainer_model, np.asarray(sample_images)[:n],
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
            epochs=config.epochs, steps=steps - skip, model=trainer_model)
        trainer_model.fit(epoch_dataset(data, config, epoch, steps, skip), epochs=epoch + 1,
                      initial_epoch=epoch, validation_data=val_ds, callbacks=callback_list,
                      verbose=verbose, shuffle=False)
        skip = 0
    best_path = os.path.join(config.work_dir, "best.keras")
    name = "val_nme" if data.val is not None else "train loss"
    print(f"done in {time.perf_counter() - start:.0f} s: best {name} "
          f"{checkpoint.best:.5f} at epoch {checkpoint.best_epoch}; best model: {best_path}",
          flush=True)
    return TrainResult(checkpoint.best, checkpoint.best_epoch, best_path, checkpoint.history,
                       trainer_model)


def tool_main(stage: int):
    """The ``main`` of ``tools/train.py`` (stage 1: no teacher) or ``tools/distill.py``
    (stage 2: ``--teacher`` required), reading the flags of ``define_flags``."""
    from absl import app, flags

    required = ("work_dir", "data_dir") + (("teacher",) if stage == 2 else ())
    flags.mark_flags_as_required(required)

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        config = config_from_flags()
        if stage == 1 and config.teacher:
            raise app.UsageError("--teacher is for stage 2: use tools/distill.py")
        restart_without_onednn(config.strategy)
        train(config, command="python " + shlex.join(sys.argv[:1]))

    return main

