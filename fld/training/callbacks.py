"""Training callbacks: EMA swap, learning-rate logging, TensorBoard scalars and sample
images (the checkpoints and resume state: ``fld.training.checkpoint``).

All files are written atomically (``fld.fileio.atomic_path``).
"""

from __future__ import annotations

import io
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
