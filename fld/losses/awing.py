"""Adaptive Wing loss with the foreground weight map.

Wang, Bo & Fuxin, "Adaptive Wing Loss for Robust Face Alignment via Heatmap Regression",
ICCV 2019. Per map element, with delta = prediction - target and y = target
(METHOD.md section 5):

    |delta| <  theta:  omega * ln(1 + |delta / epsilon|^(alpha - y))
    |delta| >= theta:  A |delta| - C
    A = omega / (1 + (theta/epsilon)^(alpha - y)) * (alpha - y)
        * (theta/epsilon)^(alpha - y - 1) / epsilon
    C = theta * A - omega * ln(1 + (theta/epsilon)^(alpha - y))

Each element is weighted ``foreground_weight`` (11) where the 3x3 gray-dilated target is
>= ``foreground_threshold`` (0.2), else 1, and the weighted values are averaged over elements.
keras.ops only (backend-neutral). Maps are NHWC.
"""

from __future__ import annotations

import keras
from keras import ops


def foreground_weight_map(target, weight=11.0, threshold=0.2):
    """Weight ``weight`` where the 3x3-dilated ``target`` (NHWC) is >= threshold, else 1.

    The dilation is a 3x3 max-pool, stride 1, 'same' padding (the reference uses
    ``scipy.ndimage.grey_dilation`` with the same footprint).
    """
    target = ops.convert_to_tensor(target)
    dilated = ops.max_pool(target, pool_size=3, strides=1, padding="same")
    return ops.cast(ops.where(dilated >= threshold, weight, 1.0), target.dtype)


def awing_elementwise(target, pred, omega=14.0, theta=0.5, epsilon=1.0, alpha=2.1):
    """The unweighted Adaptive Wing value of every element (same shape as the inputs)."""
    target = ops.convert_to_tensor(target)
    pred = ops.cast(pred, target.dtype)
    abs_delta = ops.abs(pred - target)
    power = alpha - target
    ratio = theta / epsilon
    a = omega / (1.0 + ops.power(ratio, power)) * power * ops.power(ratio, power - 1.0) / epsilon
    c = theta * a - omega * ops.log1p(ops.power(ratio, power))
    # Guard the power at 0: d/dx x^p is infinite at 0 when p < 1 (targets > 1). The floor
    # changes the value by < omega * 1e-12^1.1, i.e. nothing, and keeps gradients finite.
    # Clamping to theta keeps the untaken branch of `where` finite as well.
    small = ops.clip(abs_delta / epsilon, 1e-12, ratio)
    nonlinear = omega * ops.log1p(ops.power(small, power))
    linear = a * abs_delta - c
    return ops.where(abs_delta < theta, nonlinear, linear)


@keras.saving.register_keras_serializable(package="fld")
class AdaptiveWingLoss(keras.losses.Loss):
    """Weighted Adaptive Wing loss between heatmap-like maps (NHWC, targets in [0, 1]).

    ``call`` returns one value per sample (the weighted mean over that sample's elements);
    Keras' default reduction then averages over the batch, i.e. the mean over all elements.

    Args:
        omega, theta, epsilon, alpha: the AWing constants (defaults: 14, 0.5, 1, 2.1).
        foreground_weight: weight of foreground elements (11 = 1 + the reference's 10);
            set 1 to disable the weight map.
        foreground_threshold: dilated-target threshold for foreground (0.2).
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(
        self,
        omega=14.0,
        theta=0.5,
        epsilon=1.0,
        alpha=2.1,
        foreground_weight=11.0,
        foreground_threshold=0.2,
        name="awing",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.omega = float(omega)
        self.theta = float(theta)
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)
        self.foreground_weight = float(foreground_weight)
        self.foreground_threshold = float(foreground_threshold)

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.cast(y_pred, y_true.dtype)
        values = awing_elementwise(y_true, y_pred, self.omega, self.theta, self.epsilon, self.alpha)
        if self.foreground_weight != 1.0:
            values = values * foreground_weight_map(
                y_true, self.foreground_weight, self.foreground_threshold
            )
        return ops.mean(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            omega=self.omega,
            theta=self.theta,
            epsilon=self.epsilon,
            alpha=self.alpha,
            foreground_weight=self.foreground_weight,
            foreground_threshold=self.foreground_threshold,
        )
        return config
