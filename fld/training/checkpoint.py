"""Checkpoints and resume: the best model, ``history.csv`` and the resumable state.

All files are written atomically (``fld.fileio.atomic_path``): a kill -9 at any moment
leaves the previous complete file or the new one.

The resumable state is ONE file, ``state.npz``: every student weight (BN statistics
included), the LandmarkTrainer's EMA variables, the variables of both optimizers (iteration
counts, moments) and a JSON ``meta`` record (epochs done, steps done in the current
epoch and that epoch's loss sums so far, best validation score, the per-epoch history).
Being one file, it cannot be half updated.
"""

from __future__ import annotations

import csv
import json
import math
import os

import keras
import numpy as np
from keras import ops

from fld.fileio import atomic_path


def _state_groups(trainer_model) -> dict:
    """Name -> list of variables saved in the training state (fixed order)."""
    groups = {"student": list(trainer_model.student.weights), "optimizer": trainer_model.optimizer.variables}
    if trainer_model.backbone_optimizer is not None:
        groups["backbone_optimizer"] = trainer_model.backbone_optimizer.variables
    if trainer_model.ema_vars:
        groups["ema"] = list(trainer_model.ema_vars) + [trainer_model.ema_updates]
    return groups


def save_training_state(trainer_model, path: str, meta: dict) -> None:
    """Writes every variable of the training state plus ``meta`` to ``path`` (.npz)."""
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, variables in _state_groups(trainer_model).items():
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:05d}"] = np.asarray(ops.convert_to_numpy(v.value))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_training_state(trainer_model, path: str) -> dict:
    """Restores the variables written by ``save_training_state``; returns its ``meta``.

    The optimizers must be built (``LandmarkTrainer.compile`` with a backbone optimizer builds
    both; otherwise ``optimizer.build(student.trainable_variables)``). Raises ValueError
    if the file does not match the model (other preset, scheme or EMA setting).
    """
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in data.files}
    for group, variables in _state_groups(trainer_model).items():
        keys = sorted(k for k in stored if k.startswith(group + "/"))
        if len(keys) != len(variables):
            raise ValueError(f"{path}: holds {len(keys)} {group} variables, the model has "
                             f"{len(variables)} (different model, scheme or EMA setting?)")
        for key, v in zip(keys, variables):
            if tuple(stored[key].shape) != tuple(v.shape):
                raise ValueError(f"{path}: {group} variable {v.path} has shape {v.shape}, "
                                 f"the checkpoint {stored[key].shape}")
            v.assign(stored[key])
    return json.loads(str(stored["meta"]))


class TrainingCheckpoint(keras.callbacks.Callback):
    """Best model, history and the resumable state.

    - every epoch: appends the epoch's logs to ``history.csv``; if ``monitor`` improved
      (lower is better), saves the student (EMA weights when EMA is on) to ``best_path``;
      then saves the full state (``state_path``) with ``epoch`` = epochs done.
    - every ``every_steps`` optimizer steps inside an epoch: saves the state with the
      steps done in that epoch (the trainer skips them on resume).

    Args:
        trainer_model: the ``LandmarkTrainer`` being trained.
        work_dir: folder of ``state.npz``, ``best.keras`` and ``history.csv``.
        steps_per_epoch: optimizer steps in one full epoch.
        every_steps: mid-epoch state interval (0 = only at epoch ends).
        monitor: log key of the score to minimize (``val_nme``; falls back to ``loss``
            when the logs lack it).
        write: False on non-chief workers (nothing is written).
    """

    def __init__(self, trainer_model, work_dir: str, steps_per_epoch: int, every_steps: int = 0,
                 monitor: str = "val_nme", write: bool = True):
        super().__init__()
        self.trainer_model = trainer_model
        self.state_path = os.path.join(work_dir, "state.npz")
        self.best_path = os.path.join(work_dir, "best.keras")
        self.history_path = os.path.join(work_dir, "history.csv")
        self.steps_per_epoch = int(steps_per_epoch)
        self.every_steps = int(every_steps)
        self.monitor = monitor
        self.write = write
        self.epoch = 0          # the epoch being trained
        self.skip = 0           # steps of this epoch done before this fit call
        self.best = math.inf
        self.best_epoch = -1
        self.history: list[dict] = []
        self._partial: dict = {}   # restored mid-epoch loss sums, put back at epoch start

    # state <-> meta
    def meta(self, epochs_done: int, steps_done: int) -> dict:
        # Mid-epoch, the training-loss means so far (each tracker's total and count), so
        # that a resumed epoch logs the loss of all its steps, not only those after resume.
        partial = {} if steps_done == 0 else {
            name: [float(ops.convert_to_numpy(t.total)), float(ops.convert_to_numpy(t.count))]
            for name, t in self.trainer_model.trackers.items()}
        return dict(epoch=epochs_done, step=steps_done, best=self.best,
                    best_epoch=self.best_epoch, history=self.history, partial_sums=partial,
                    iterations=int(ops.convert_to_numpy(self.trainer_model.optimizer.iterations)))

    def restore(self) -> dict | None:
        """Loads ``state.npz`` if present; returns its meta (None = fresh start)."""
        if not os.path.exists(self.state_path):
            return None
        meta = load_training_state(self.trainer_model, self.state_path)
        self.best = float(meta["best"])
        self.best_epoch = int(meta["best_epoch"])
        self.history = list(meta["history"])
        self._partial = dict(meta.get("partial_sums") or {}) if meta.get("step") else {}
        return meta

    def save_state(self, epochs_done: int, steps_done: int) -> None:
        meta = self.meta(epochs_done, steps_done)   # every worker: the loss sums are all-reduced
        if self.write:
            save_training_state(self.trainer_model, self.state_path, meta)

    # callback hooks
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        for name, (total, count) in self._partial.items():   # after fit's metric reset
            tracker = self.trainer_model.trackers.get(name)
            if tracker is not None:
                tracker.total.assign(total)
                tracker.count.assign(count)
        self._partial = {}

    def on_train_batch_end(self, batch, logs=None):
        done = self.skip + batch + 1
        if self.every_steps and done % self.every_steps == 0 and done < self.steps_per_epoch:
            self.save_state(self.epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1}
        row.update({k: float(ops.convert_to_numpy(v)) for k, v in logs.items()})
        self.history.append(row)
        key = self.monitor if self.monitor in logs else "loss"
        score = float(ops.convert_to_numpy(logs.get(key, math.inf)))
        if score < self.best:
            self.best, self.best_epoch = score, epoch + 1
            if self.write:
                with self.trainer_model.ema_weights() as student, atomic_path(self.best_path) as tmp:
                    student.save(tmp)
        if self.write:
            self._write_history()
        self.save_state(epoch + 1, 0)
        self.skip = 0

    def _write_history(self):
        keys = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        with atomic_path(self.history_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, keys)
                writer.writeheader()
                writer.writerows(self.history)
