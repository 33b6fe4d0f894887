"""A streaming Keras metric for the normalized mean error (NME).

The same formula as ``fld.metrics.nme`` (``fld.metrics.nme_terms``, run with
``keras.ops``): per face, the mean point-to-point error divided by the ground truth's
inter-ocular (outer eye corners) or inter-pupil distance; the metric's result is the mean
over all faces seen since the last reset. Runs on any Keras backend.
"""

from __future__ import annotations

import keras
from keras import ops

from fld.metrics import NORMS, nme_terms, normalizer_points
from fld.schemes import Scheme


@keras.saving.register_keras_serializable(package="fld")
class NormalizedMeanError(keras.metrics.Metric):
    """Mean per-face NME over a stream of (B, K, 2) landmark batches.

    Args:
        scheme: landmark scheme name, scheme JSON path, or ``Scheme``. The config
            stores the name (or path) so the metric can be rebuilt by ``get_scheme``.
        norm: ``"inter_ocular"`` or ``"inter_pupil"``.
        io_indices: optional (i, j): normalize by the distance of points i and j instead
            (inter-ocular only); for models whose points follow no named scheme.
        name: metric name.
        dtype: accumulator dtype.
    """

    def __init__(self, scheme: str | Scheme | None = "300w_68", norm: str = "inter_ocular",
                 name: str = "nme", dtype=None, io_indices=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        if norm not in NORMS:
            raise ValueError(f"unknown NME normalization {norm!r}: use one of {NORMS}")
        if io_indices is not None:
            if norm != "inter_ocular":
                raise ValueError("NormalizedMeanError: io_indices go with inter_ocular")
            self.io_indices = tuple(int(i) for i in io_indices)
            self.groups = ((self.io_indices[0],), (self.io_indices[1],))
        else:
            self.io_indices = None
            self.groups = normalizer_points(scheme, norm)
        self._scheme_spec = scheme.name if isinstance(scheme, Scheme) else scheme
        self.norm = norm
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, true_landmarks, pred_landmarks, sample_weight=None):
        """Adds a batch: (B, K, 2) ground truth and prediction; optional (B,) weights."""
        gt = ops.cast(true_landmarks, "float32")
        pred = ops.cast(pred_landmarks, "float32")
        error, normalizer = nme_terms(pred, gt, self.groups, ops)
        # A degenerate ground truth (eyes on one spot) gives a huge NME, not a NaN.
        per_face = error / ops.maximum(normalizer, 1e-12)
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
        return {**super().get_config(), "scheme": self._scheme_spec, "norm": self.norm,
                "io_indices": self.io_indices}
