"""Training callbacks: EMA swap, learning-rate logging, checkpoints/resume, sample images.

All files are written atomically (``fld.fileio.atomic_path``): a kill -9 at any moment
leaves the previous complete file or the new one.

The resumable state is ONE file, ``state.npz``: every student weight (BN statistics
included), the Distiller's EMA variables, the variables of both optimizers (iteration
counts, moments) and a JSON ``meta`` record (epochs done, steps done in the current
epoch, best validation score, the per-epoch history). Being one file, it cannot be half
updated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import keras
import numpy as np
from keras import ops

from fld.fileio import atomic_path


class EMASwap(keras.callbacks.Callback):
    """Validates with the EMA weights: swaps them in for ``evaluate`` and back after."""

    def __init__(self, distiller):
        super().__init__()
        self.distiller = distiller

    def on_test_begin(self, logs=None):
        self.distiller.swap_ema_weights()

    def on_test_end(self, logs=None):
        self.distiller.swap_ema_weights()


def current_learning_rate(optimizer) -> float:
    """The optimizer's learning rate at its current iteration, as a float."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``lr_head`` (and ``lr_backbone``) to the epoch logs (place before TensorBoard)."""

    def __init__(self, distiller):
        super().__init__()
        self.distiller = distiller

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lr_head"] = current_learning_rate(self.distiller.optimizer)
        if self.distiller.backbone_optimizer is not None:
            logs["lr_backbone"] = current_learning_rate(self.distiller.backbone_optimizer)


# --- resumable state ----------------------------------------------------------------------


def _state_groups(distiller) -> dict:
    """Name -> list of variables saved in the training state (fixed order)."""
    groups = {"student": list(distiller.student.weights), "optimizer": distiller.optimizer.variables}
    if distiller.backbone_optimizer is not None:
        groups["backbone_optimizer"] = distiller.backbone_optimizer.variables
    if distiller.ema_vars:
        groups["ema"] = list(distiller.ema_vars) + [distiller.ema_updates]
    return groups


def save_training_state(distiller, path: str, meta: dict) -> None:
    """Writes every variable of the training state plus ``meta`` to ``path`` (.npz)."""
    arrays = {"meta": np.array(json.dumps(meta))}
    for group, variables in _state_groups(distiller).items():
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:05d}"] = np.asarray(ops.convert_to_numpy(v.value))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_training_state(distiller, path: str) -> dict:
    """Restores the variables written by ``save_training_state``; returns its ``meta``.

    The optimizers must be built (``Distiller.compile`` with a backbone optimizer builds
    both; otherwise ``optimizer.build(student.trainable_variables)``). Raises ValueError
    if the file does not match the model (other preset, scheme or EMA setting).
    """
    with np.load(path, allow_pickle=False) as data:
        stored = {k: data[k] for k in data.files}
    for group, variables in _state_groups(distiller).items():
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
        distiller: the ``Distiller`` being trained.
        work_dir: folder of ``state.npz``, ``best.keras`` and ``history.csv``.
        steps_per_epoch: optimizer steps in one full epoch.
        every_steps: mid-epoch state interval (0 = only at epoch ends).
        monitor: log key of the score to minimise (``val_nme``; falls back to ``loss``
            when the logs lack it).
        write: False on non-chief workers (nothing is written).
    """

    def __init__(self, distiller, work_dir: str, steps_per_epoch: int, every_steps: int = 0,
                 monitor: str = "val_nme", write: bool = True):
        super().__init__()
        self.distiller = distiller
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
            for name, t in self.distiller.trackers.items()}
        return dict(epoch=epochs_done, step=steps_done, best=self.best,
                    best_epoch=self.best_epoch, history=self.history, partial_sums=partial,
                    iterations=int(ops.convert_to_numpy(self.distiller.optimizer.iterations)))

    def restore(self) -> dict | None:
        """Loads ``state.npz`` if present; returns its meta (None = fresh start)."""
        if not os.path.exists(self.state_path):
            return None
        meta = load_training_state(self.distiller, self.state_path)
        self.best = float(meta["best"])
        self.best_epoch = int(meta["best_epoch"])
        self.history = list(meta["history"])
        self._partial = dict(meta.get("partial_sums") or {}) if meta.get("step") else {}
        return meta

    def save_state(self, epochs_done: int, steps_done: int) -> None:
        if self.write:
            save_training_state(self.distiller, self.state_path, self.meta(epochs_done, steps_done))

    # callback hooks
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        for name, (total, count) in self._partial.items():   # after fit's metric reset
            tracker = self.distiller.trackers.get(name)
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
                with self.distiller.ema_weights() as student, atomic_path(self.best_path) as tmp:
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


# --- TensorBoard (core TF only: the ``tensorboard`` package is not required) ----------------


def _plugin_metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar into the default writer (``tf.summary.write``, no tensorboard)."""
    import tensorflow as tf

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_plugin_metadata("scalars"))


def write_png(tag: str, png: bytes, step: int) -> None:
    """A TensorBoard image (encoded PNG) into the default writer."""
    import tensorflow as tf

    shape = tf.shape(tf.image.decode_png(png))
    tensor = tf.stack([tf.strings.as_string(shape[1]), tf.strings.as_string(shape[0]),
                       tf.constant(png)])
    tf.summary.write(tag, tensor, step=step, metadata=_plugin_metadata("images"))


class ScalarLogger(keras.callbacks.Callback):
    """Epoch logs to TensorBoard: ``<log_dir>/train`` and ``val_*`` to ``<log_dir>/validation``.

    The layout of ``keras.callbacks.TensorBoard`` (same tags, ``epoch_`` prefix), written
    with core TensorFlow so the ``tensorboard`` package is only needed for viewing.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, name):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            split = "validation" if key.startswith("val_") else "train"
            tag = "epoch_" + (key[4:] if split == "validation" else key)
            with self._writer(split).as_default():
                write_scalar(tag, float(ops.convert_to_numpy(value)), epoch + 1)
        for writer in self._writers.values():
            writer.flush()


# --- sample predictions ---------------------------------------------------------------------


def draw_predictions_png(images, true_xy, pred_xy, columns: int = 4, title: str = "") -> bytes:
    """A PNG grid of faces with true (green) and predicted (red) points, as bytes.

    ``images`` (N, S, S, 3) in [-1, 1]; points (N, K, 2) in input pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig = Figure(figsize=(2.5 * columns, 2.5 * rows), dpi=80)
    FigureCanvasAgg(fig)
    size = images.shape[1]
    for i in range(n):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(np.clip((np.asarray(images[i]) + 1.0) / 2.0, 0, 1),
                  extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        ax.scatter(true_xy[i, :, 0], true_xy[i, :, 1], s=5, c="lime", linewidths=0)
        ax.scatter(pred_xy[i, :, 0], pred_xy[i, :, 1], s=5, c="red", linewidths=0)
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


class SampleImages(keras.callbacks.Callback):
    """Every epoch: a few validation faces with predicted vs true points.

    Written to TensorBoard (``<log_dir>/images``, tag ``val_predictions``) and to
    ``png_path`` (the latest epoch). Predictions use the EMA weights when EMA is on and
    the codec's sub-pixel decode.

    Args:
        distiller: the ``Distiller``.
        images: (N, S, S, 3) validation images in [-1, 1].
        landmarks: (N, K, 2) their landmarks in heatmap cells (the pipeline's target).
        codec: the ``HeatmapCodec`` (decode and heatmap -> pixel mapping).
        log_dir: TensorBoard folder (None: no TensorBoard image).
        png_path: PNG file of the latest epoch (None: none).
        decode_method: ``fld.codec`` decode of the fused heatmaps.
    """

    def __init__(self, distiller, images, landmarks, codec, log_dir=None, png_path=None,
                 decode_method="soft_argmax"):
        super().__init__()
        self.decode_method = decode_method
        self.distiller = distiller
        self.images = np.asarray(images, np.float32)
        self.true_xy = codec.to_image(np.asarray(landmarks, np.float32))
        self.codec = codec
        self.log_dir = log_dir
        self.png_path = png_path
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        with self.distiller.ema_weights() as student:
            fused = ops.convert_to_numpy(student(self.images, training=False)["fused"])
        pred = self.codec.decode_to_image(fused, self.decode_method)
        png = draw_predictions_png(self.images, self.true_xy, pred,
                                   title=f"epoch {epoch + 1}: green true, red predicted")
        if self.png_path:
            with atomic_path(self.png_path) as tmp:
                with open(tmp, "wb") as f:
                    f.write(png)
        if self.log_dir:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "images"))
            with self._writer.as_default():
                write_png("val_predictions", png, epoch + 1)
            self._writer.flush()
