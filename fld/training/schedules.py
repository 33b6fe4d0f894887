"""Learning-rate schedules: linear warm-up then cosine decay (METHOD.md section 6).

    lr(step) = peak * step / warmup_steps                          step < warmup_steps
    lr(step) = final + (peak - final) * 0.5 * (1 + cos(pi * t))   t = (step - warmup) / (total - warmup)

with ``final = peak * final_fraction`` and ``t`` clipped to [0, 1], so the rate stays at
``final`` after ``total_steps``. ``step`` is the optimizer's iteration count (starts at 0),
so it continues where it left off when training resumes from a checkpoint.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fld")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak``, then cosine decay to ``peak * final_fraction``.

    Args:
        peak: the learning rate reached after warm-up.
        total_steps: steps of the whole run (warm-up included).
        warmup_steps: steps of the linear warm-up (0 = start at ``peak``).
        final_fraction: the last learning rate as a fraction of ``peak``.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
                 final_fraction: float = 0.0):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"WarmupCosine: need 0 <= warmup_steps ({warmup_steps}) <= "
                             f"total_steps ({total_steps}) and total_steps >= 1")
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, final = self.peak, self.peak * self.final_fraction
        warm = float(max(self.warmup_steps, 1))
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        t = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = final + (peak - final) * 0.5 * (1.0 + ops.cos(math.pi * t))
        if self.warmup_steps == 0:
            return cosine
        return ops.where(step < self.warmup_steps, peak * step / warm, cosine)

    def get_config(self):
        return dict(peak=self.peak, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, final_fraction=self.final_fraction)
