"""Training callbacks: EMA swap, learning-rate logging, TensorBoard scalars and sample
images (the checkpoints and resume state: ``fld.training.checkpoint``).

All files are written atomically (``fld.fileio.atomic_path``).
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

from fld import drawing
from fld.codec import VALIDATION_DECODE
from fld.fileio import atomic_path


class EMASwap(keras.callbacks.Callback):
    """Validates with the EMA weights: swaps them in for ``evaluate`` and back after."""

    def __init__(self, trainer_model):
        super().__init__()
        self.trainer_model = trainer_model

    def on_test_begin(self, logs=None):
        self.trainer_model.swap_ema_weights()

    def on_test_end(self, logs=None):
        self.trainer_model.swap_ema_weights()


def current_learning_rate(optimizer) -> float:
    """The optimizer's learning rate at its current iteration, as a float."""
    return float(ops.convert_to_numpy(optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``lr_head`` (and ``lr_backbone``) to the epoch logs (place before TensorBoard)."""

    def __init__(self, trainer_model):
        super().__init__()
        self.trainer_model = trainer_model

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lr_head"] = current_learning_rate(self.trainer_model.optimizer)
        if self.trainer_model.backbone_optimizer is not None:
            logs["lr_backbone"] = current_learning_rate(self.trainer_model.backbone_optimizer)


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


class SampleImages(keras.callbacks.Callback):
    """Every epoch: a few validation faces with predicted vs true points.

    Written to TensorBoard (``<log_dir>/images``, tag ``val_predictions``) and to
    ``png_path`` (the latest epoch). Predictions use the EMA weights when EMA is on and
    the codec's sub-pixel decode.

    Args:
        trainer_model: the ``LandmarkTrainer``.
        images: (N, S, S, 3) validation images in [-1, 1].
        landmarks: (N, K, 2) their landmarks in heatmap cells (the pipeline's target).
        codec: the ``HeatmapCodec`` (decode and heatmap -> pixel mapping).
        log_dir: TensorBoard folder (None: no TensorBoard image).
        png_path: PNG file of the latest epoch (None: none).
        decode_method: ``fld.codec`` decode of the fused heatmaps.
    """

    def __init__(self, trainer_model, images, landmarks, codec, log_dir=None, png_path=None,
                 decode_method=VALIDATION_DECODE):
        super().__init__()
        self.decode_method = decode_method
        self.trainer_model = trainer_model
        self.images = np.asarray(images, np.float32)
        self.true_xy = codec.to_image(np.asarray(landmarks, np.float32))
        self.codec = codec
        self.log_dir = log_dir
        self.png_path = png_path
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        with self.trainer_model.ema_weights() as student:
            fused = ops.convert_to_numpy(student(self.images, training=False)["fused"])
        pred = self.codec.decode_to_image(fused, self.decode_method)
        png = drawing.predictions_grid_png(self.images, self.true_xy, pred,
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
