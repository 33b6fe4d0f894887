"""A streaming Keras metric for the normalised mean error (NME).

Same definition as ``fld.metrics.nme`` (the numpy reference it is tested against):
per face, the mean point-to-point error divided by the ground truth's inter-ocular
(outer eye corners) or inter-pupil distance; the metric's result is the mean over all
faces seen since the last reset. ``keras.ops`` only, so it runs on any backend.
"""

from __future__ import annotations

import keras
from keras import ops

from fld.metrics import NORMS
from fld.schemes import Scheme, get_scheme


@keras.saving.register_keras_serializable(package="fld")
class NormalizedMeanError(keras.metrics.Metric):
    """Mean per-face NME over a stream of (B, K, 2) landmark batches.

    Args:
        scheme: landmark scheme name, scheme JSON path, or ``Scheme``. The config
            stores the name (or path) so the metric can be rebuilt by ``get_scheme``.
        norm: ``"inter_ocular"`` or ``"inter_pupil"``.
        name: metric name.
        dtype: accumulator dtype.
    """

    def __init__(self, scheme: str | Scheme = "300w_68", norm: str = "inter_ocular",
                 name: str = "nme", dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if norm not in NORMS:
            raise ValueError(f"unknown NME normalisation {norm!r}: use one of {NORMS}")
        self._scheme_spec = scheme.name if isinstance(scheme, Scheme) else str(scheme)
        self.scheme = get_scheme(scheme)
        self.norm = norm
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def _normalizer(self, gt):
        if self.norm == "inter_ocular":
            a, b = self.scheme.io_indices
            left, right = gt[:, a], gt[:, b]
        else:
            left = ops.mean(ops.take(gt, list(self.scheme.pupils[0]), axis=1), axis=1)
            right = ops.mean(ops.take(gt, list(self.scheme.pupils[1]), axis=1), axis=1)
        return ops.sqrt(ops.sum(ops.square(left - right), axis=-1))  # (B,)

    def update_state(self, true_landmarks, pred_landmarks, sample_weight=None):
        """Adds a batch: (B, K, 2) ground truth and prediction; optional (B,) weights."""
        gt = ops.cast(true_landmarks, "float32")
        pred = ops.cast(pred_landmarks, "float32")
        dist = ops.sqrt(ops.sum(ops.square(pred - gt), axis=-1))  # (B, K)
        # A degenerate ground truth (eyes on one spot) gives a huge NME, not a NaN.
        per_face = ops.mean(dist, axis=-1) / ops.maximum(self._normalizer(gt), 1e-12)
        if sample_weight is None:
            weight = ops.ones_like(per_face)
        else:
            weight = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            weight = ops.broadcast_to(weight, ops.shape(per_face))
        self.total.assign_add(ops.cast(ops.sum(per_face * weight), self.dtype))
        self.count.assign_add(ops.cast(ops.sum(weight), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def get_config(self):
        return {**super().get_config(), "scheme": self._scheme_spec, "norm": self.norm}
