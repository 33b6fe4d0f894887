"""Plain heatmap mean-squared error: a baseline supervised loss (no weighting)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fld")
class HeatmapMSELoss(keras.losses.Loss):
    """``weight * mean((pred - target)^2)`` per sample over (H, W, K); NHWC heatmaps.

    Args:
        weight: multiplier (1).
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(self, weight=1.0, name="heatmap_mse", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        diff = ops.cast(y_pred, y_true.dtype) - y_true
        return self.weight * ops.mean(ops.reshape(diff * diff, (ops.shape(diff)[0], -1)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight)
        return config
