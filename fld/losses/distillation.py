"""Heatmap knowledge-distillation loss between student and teacher heatmaps.

Two forms (METHOD.md section 5; Hong & Lin, arXiv 2404.06029):

* ``"mse"`` (default, the authors' code): ``weight * mean((student - teacher)^2)`` over the
  fused heatmaps, weight 100.
* ``"l2_sum"`` (the paper's equation): ``weight * sum_k ||student_k - teacher_k||_2`` per
  sample, the (non-squared) L2 distance between each landmark's heatmaps, summed over
  landmarks; weight 1. The paper also sums over samples: ``call`` returns per-sample values,
  so pass ``reduction="sum"`` for the paper's batch sum (the LandmarkTrainer always averages over
  the global batch, so the batch size does not change the effective weight).
* ``"kl"``: ``weight * mean_k KL(p_k || q_k)``, where ``p_k`` and ``q_k`` are the teacher's
  and the student's landmark-k maps made into spatial distributions the way the
  ``soft_argmax`` decode (and STAR) reads them: ReLU, plus a floor of ``1e-4`` of the map's
  mean, divided by the sum. The per-channel spatial distribution follows channel-wise
  distillation for dense prediction (Shu et al., ICCV 2021); weight 1. Unlike the two
  squared forms it does not depend on the maps' raw magnitude, which the decode ignores,
  so its scale stays comparable with STAR's over training.
* ``"aam"``: ``weight * L_AAM(student point/edge maps, teacher point/edge maps)``, the AAM
  loss (Adaptive Wing, weights 10 and 10) with the teacher's sigmoid maps in place of the
  ground-truth Gaussians: heatmap distillation on the maps that are trained against
  Gaussian targets, as in fast pose distillation (Zhang et al., CVPR 2019), where the KD
  and ground-truth terms have the same form and weight 1 splits them equally. Needs the
  teacher's output dict (``per_sample``), not only its fused map.

``y_true`` is the teacher's heatmap, ``y_pred`` the student's, both (B, H, W, K).
"""

from __future__ import annotations

import keras
from keras import ops

FORMS = ("mse", "l2_sum", "kl", "aam")
DEFAULT_WEIGHTS = {"mse": 100.0, "l2_sum": 1.0, "kl": 1.0, "aam": 1.0}
FUSED_FORMS = ("mse", "l2_sum", "kl")   # forms computed on the fused maps alone
KL_FLOOR = 1e-4   # share of the map's mean added before normalizing (no log(0))


def _safe_norm(x, axis):
    """sqrt(sum x^2) with a zero (not NaN) gradient where x == 0."""
    sq = ops.sum(x * x, axis=axis)
    zero = sq <= 0.0
    return ops.where(zero, 0.0, ops.sqrt(ops.where(zero, 1.0, sq)))


def spatial_distribution(maps):
    """(B, H, W, K) maps -> (B, H*W, K) per-landmark spatial distributions (sum 1)."""
    flat = ops.reshape(ops.relu(maps), (ops.shape(maps)[0], -1, ops.shape(maps)[-1]))
    floor = KL_FLOOR * ops.mean(flat, axis=1, keepdims=True) + 1e-12
    flat = flat + floor
    return flat / ops.sum(flat, axis=1, keepdims=True)


@keras.saving.register_keras_serializable(package="fld")
class HeatmapDistillationLoss(keras.losses.Loss):
    """L_KD between teacher (``y_true``) and student (``y_pred``) heatmaps.

    Args:
        form: ``"mse"`` (code, default), ``"l2_sum"`` (summed per-landmark L2 distance) or
            ``"kl"`` (per-landmark spatial KL divergence) or ``"aam"`` (AAM loss against
            the teacher's point and edge maps).
        weight: multiplier; None picks the form's default (100 for ``mse``, 1 otherwise).
        name, reduction, dtype: as for ``keras.losses.Loss``.
    """

    def __init__(self, form="mse", weight=None, name="kd", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if form not in FORMS:
            raise ValueError(f"HeatmapDistillationLoss: form must be one of {FORMS}, got {form!r}")
        self.form = form
        self.weight = DEFAULT_WEIGHTS[form] if weight is None else float(weight)

    def per_sample(self, teacher_outputs: dict, student_outputs: dict, aam_loss=None):
        """(B,) weighted L_KD from the teacher's and the student's output dicts; the
        ``"aam"`` form needs the run's ``AAMLoss``."""
        if self.form == "aam":
            if aam_loss is None:
                raise ValueError("HeatmapDistillationLoss(form='aam') needs the AAMLoss")
            targets = {"heatmaps": teacher_outputs["points"], "edges": teacher_outputs["edges"]}
            return self.weight * aam_loss.per_sample(targets, student_outputs)
        return self.call(teacher_outputs["fused"], student_outputs["fused"])

    def call(self, y_true, y_pred):
        if self.form not in FUSED_FORMS:
            raise ValueError(f"HeatmapDistillationLoss(form={self.form!r}) works on output "
                             f"dicts: use per_sample(teacher_outputs, student_outputs, aam)")
        y_true = ops.convert_to_tensor(y_true)
        diff = ops.cast(y_pred, y_true.dtype) - y_true  # (B, H, W, K)
        if self.form == "mse":
            per_sample = ops.mean(ops.reshape(diff * diff, (ops.shape(diff)[0], -1)), axis=-1)
        elif self.form == "kl":
            p = spatial_distribution(y_true)
            q = spatial_distribution(ops.cast(y_pred, y_true.dtype))
            per_sample = ops.mean(ops.sum(p * (ops.log(p) - ops.log(q)), axis=1), axis=-1)
        else:
            per_sample = ops.sum(_safe_norm(diff, axis=(1, 2)), axis=-1)  # sum_k ||.||_2
        return self.weight * per_sample

    def get_config(self):
        config = super().get_config()
        config.update(form=self.form, weight=self.weight)
        return config
