"""Losses for heatmap facial-landmark training (keras.ops only, backend-neutral).

Every loss returns per-sample values from ``call`` (shape (B,)) so that a training step can
reduce them by the global batch size under ``tf.distribute``.
"""

from fld.losses.aam import AAMLoss
from fld.losses.awing import AdaptiveWingLoss, awing_elementwise, foreground_weight_map
from fld.losses.distillation import HeatmapDistillationLoss
from fld.losses.mse import HeatmapMSELoss
from fld.losses.star import (
    STARLoss,
    heatmap_mean_and_covariance,
    star_loss_per_point,
    symmetric_eig2x2,
)

__all__ = [
    "AAMLoss",
    "AdaptiveWingLoss",
    "HeatmapDistillationLoss",
    "HeatmapMSELoss",
    "STARLoss",
    "awing_elementwise",
    "foreground_weight_map",
    "heatmap_mean_and_covariance",
    "star_loss_per_point",
    "symmetric_eig2x2",
]
