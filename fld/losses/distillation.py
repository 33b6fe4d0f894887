"""Heatmap knowledge-distillation loss between student and teacher heatmaps.

Two forms (METHOD.md section 5; Hong & Lin, arXiv 2404.06029):

* ``"mse"`` (default, the authors' code): ``weight * mean((student - teacher)^2)`` over the
  fused heatmaps, weight 100.
* ``"l2_sum"`` (the paper's equation): ``weight * sum_k ||student_k - teacher_k||_2`` per
  sample, the (non-squared) L2 distance between each landmark's heatmaps, summed over
  landmarks; weight 1. The paper also sums over samples: ``call`` returns per-sample values,
  so pass ``reduction="sum"`` for the paper's batch sum (the LandmarkTrainer always averages over
  the global batch, so the batch size does not change the effective weight).

``y_true`` is the teacher's heatmap, ``y_pred`` the student's, both (B, H, W, K).
"""

from __future__ import annotations

import keras
from keras import ops

FORMS = ("mse", "l2_sum")
DEFAULT_WEIGHTS = {"mse": 100.0, "l2_sum": 1.0}


def _safe_norm(x, axis):
    """sqrt(sum x^2) with a zero (not NaN) gradient where x == 0."""
    sq = ops.sum(x * x, axis=axis)
    zero = sq <= 0.0
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, sq)))


@keras.saving.register_keras_serializable(package="fld")
class HeatmapDistillationLoss(keras.losses.Loss):
    """L_KD between teacher (``y_true``) and student (``y_pred``) heatmaps.

    Args:
        form: ``"mse"`` (code, default) or ``"l2_sum"`` (summed per-landmark L2 distance).
        weight: multiplier; None picks the form's default (100 for ``mse``, 1 for ``l2_sum``).
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(self, form="mse", weight=None, name="kd", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if form not in FORMS:
            raise ValueError(f"HeatmapDistillationLoss: form must be one of {FORMS}, got {form!r}")
        self.form = form
        self.weight = DEFAULT_WEIGHTS[form] if weight is None else float(weight)

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        diff = ops.cast(y_pred, y_true.dtype) - y_true  # (B, H, W, K)
        if self.form == "mse":
            per_sample = ops.mean(ops.reshape(diff * diff, (ops.shape(diff)[0], -1)), axis=-1)
        else:
            per_sample = ops.sum(_safe_norm(diff, axis=(1, 2)), axis=-1)  # sum_k ||.||_2
        return self.weight * per_sample

    def get_config(self):
        config = super().get_config()
        config.update(form=self.form, weight=self.weight)
        return config
