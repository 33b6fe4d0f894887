"""One training model for both stages: supervised (teacher=None) and distillation.

Stage 1 trains the teacher, stage 2 the student (METHOD.md sections 5-6; Hong & Lin,
arXiv 2404.06029):

    L = star_weight * L_STAR(fused, landmarks) + L_AAM(points, edges)
        [+ L_KD(student fused, teacher fused)  when a teacher is given]

L_AAM carries its own weights (10 and 10); L_KD carries ``kd_weight`` (default 100 for the
code's MSE form). Every term is computed per sample, multiplied by the sample weight, summed
and divided by the GLOBAL batch size (summed over replicas), so gradients summed across
``tf.distribute`` replicas equal those of one big batch. The teacher is frozen and always run
with ``training=False`` (keras-io's knowledge-distillation example does the same).

Validation NME decodes ``fused`` with ``fld.codec.decode_ops`` (by default ``soft_argmax``:
the fused map's mean, which is what STAR trains). With ``ema_momentum > 0`` the LandmarkTrainer
keeps an exponential moving average of the student's trainable weights in its own non-
trainable variables, updated at the end of every ``train_step`` (so they live, and are
checkpointed, with the optimizer state); ``ema_weights()`` swaps them in, e.g. for
validation and for saving the best student.

Construct the LandmarkTrainer (and the models) under ``strategy.scope()`` when distributing.
``trainer_model.student`` is the plain Keras model to save and export. TensorFlow backend only
(``tf.GradientTape``).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from fld.codec import VALIDATION_DECODE, decode_ops
from fld.losses import AAMLoss, HeatmapDistillationLoss, STARLoss
from fld.training.nme_metric import NormalizedMeanError


@keras.saving.register_keras_serializable(package="fld")
class LandmarkTrainer(keras.Model):
    """Trains ``student`` with STAR + AAM losses, plus heatmap KD from a frozen ``teacher``.

    Data: ``(images, targets[, sample_weight])`` with targets a dict holding ``heatmaps``
    (B,H,W,K), ``edges`` (B,H,W,E) and ``landmarks`` (B,K,2, heatmap pixels). Models output a
    dict with ``points``, ``edges`` and ``fused`` (B,H,W,K).

    Metrics: ``loss``, ``star``, ``aam`` and (with a teacher) ``kd``, each the weighted term
    as it enters ``loss``; validation adds ``nme`` (``decode_method`` decode of ``fused``,
    inter-ocular) when ``io_indices`` or ``scheme`` is given.

    Optional two learning rates: ``compile(optimizer=..., backbone_optimizer=...)`` updates
    the variables of ``backbone`` (a layer of the student; by default ``student.backbone``
    if the student has that attribute) with ``backbone_optimizer`` and the rest with
    ``optimizer`` (the reference: backbone AdamW lr 2e-4 wd 1e-4, heads lr 1e-3 wd 2e-5).

    Args:
        student: Keras model to train.
        teacher: optional Keras model; frozen here (``trainable = False``).
        scheme: optional landmark scheme (name, path or ``fld.schemes.Scheme``) for NME.
        io_indices: optional (i, j) NME normalization points; overrides ``scheme``.
        star_weight: weight of L_STAR (1).
        point_weight, edge_weight: L_AAM weights (10, 10).
        kd_weight: L_KD weight; None = the form's default (100 for ``mse``, 1 otherwise).
        kd_form: ``"mse"`` (authors' code, default), ``"l2_sum"`` (the paper's equation) or
            ``"kl"`` (spatial KL divergence per landmark) or ``"aam"`` (the AAM loss of the
            student's point and edge maps against the teacher's); ``fld.losses.distillation``.
        star_eigen_weight: STAR's eigenvalue-restriction weight (1).
        backbone: optional layer of the student whose variables use ``backbone_optimizer``.
        ema_momentum: EMA decay of the student's trainable weights (0 = no EMA). The decay
            used at update n is ``min(ema_momentum, (1 + n) / (10 + n))`` (a warm-up, as in
            timm's ModelEmaV2 / TF's ExponentialMovingAverage with num_updates), so
            short runs do not validate weights that are mostly the initialization.
        decode_method: ``fld.codec.decode_ops`` method for the validation NME.
    """

    def __init__(
        self,
        student,
        teacher=None,
        scheme=None,
        io_indices=None,
        star_weight=1.0,
        point_weight=10.0,
        edge_weight=10.0,
        kd_weight=None,
        kd_form="mse",
        star_eigen_weight=1.0,
        backbone=None,
        ema_momentum=0.0,
        decode_method=VALIDATION_DECODE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_momentum) < 1.0:
            raise ValueError(f"LandmarkTrainer: ema_momentum must be in [0, 1), got {ema_momentum}")
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        io_indices_arg = io_indices
        if io_indices is None and scheme is not None:
            from fld.schemes import get_scheme

            io_indices = get_scheme(scheme).io_indices
        self.io_indices = None if io_indices is None else tuple(int(i) for i in io_indices)
        self.star_weight = float(star_weight)
        self.star_loss = STARLoss(w=star_eigen_weight)
        self.aam_loss = AAMLoss(point_weight=point_weight, edge_weight=edge_weight)
        self.kd_loss = HeatmapDistillationLoss(form=kd_form, weight=kd_weight)
        backbone = backbone if backbone is not None else getattr(student, "backbone", None)
        # Stored without Keras/TF tracking: the layer already belongs to the student.
        object.__setattr__(self, "_backbone", backbone)
        self.backbone_optimizer = None
        names = ["loss", "star", "aam"] + (["kd"] if teacher is not None else [])
        self._config = dict(
            scheme=scheme if isinstance(scheme, str) else None,
            io_indices=self.io_indices,
            star_weight=star_weight,
            point_weight=point_weight,
            edge_weight=edge_weight,
            kd_weight=kd_weight,
            kd_form=kd_form,
            star_eigen_weight=star_eigen_weight,
            ema_momentum=ema_momentum,
            decode_method=decode_method,
        )
        self.decode_method = decode_method
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.nme_tracker = None
        if scheme is not None or self.io_indices:
            self.nme_tracker = NormalizedMeanError(scheme=scheme, io_indices=io_indices_arg,
                                                   name="nme")
        self.ema_momentum = float(ema_momentum)
        self.ema_vars = []
        if self.ema_momentum > 0:
            # ONLY_FIRST_REPLICA: every replica holds the same (synchronized) weights, so a
            # replica-context assign needs no all-reduce.
            self.ema_vars = [
                self.add_weight(shape=v.shape, dtype=v.dtype, trainable=False,
                                initializer=keras.initializers.Constant(np.asarray(v.numpy())),
                                aggregation="only_first_replica", name=f"ema_{i}")
                for i, v in enumerate(student.trainable_variables)
            ]
            self.ema_updates = self.add_weight(
                shape=(), dtype="float32", trainable=False, initializer="zeros",
                aggregation="only_first_replica", name="ema_updates")

    # --- Keras plumbing -------------------------------------------------------------
    def get_config(self):
        """Config with the student/teacher serialized (``backbone`` is not kept)."""
        config = super().get_config()
        config.update(self._config)
        config["student"] = keras.saving.serialize_keras_object(self.student)
        config["teacher"] = (
            None if self.teacher is None else keras.saving.serialize_keras_object(self.teacher)
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        if config.get("teacher") is not None:
            config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        extra = [self.nme_tracker] if self.nme_tracker is not None else []
        return list(self.trackers.values()) + extra

    def compile(self, optimizer="adam", backbone_optimizer=None, **kwargs):
        """Keras ``compile`` plus an optional separate optimizer for the backbone."""
        super().compile(optimizer=optimizer, **kwargs)
        self.backbone_optimizer = None
        if backbone_optimizer is not None:
            if self._backbone is None:
                raise ValueError("LandmarkTrainer: backbone_optimizer needs a backbone layer")
            self.backbone_optimizer = keras.optimizers.get(backbone_optimizer)
            backbone_vars, head_vars = self._split(self.student.trainable_variables)
            self.backbone_optimizer.build(backbone_vars)
            self.optimizer.build(head_vars)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's pre-fit build, skipped when the student and the optimizer are built.

        Under a tf.distribute strategy Keras 3 first reduces a data batch with
        ``strategy.reduce``, which MultiWorkerMirroredStrategy rejects (keras-team/keras#20585);
        here nothing is left to build (a built student; ``compile`` builds the optimizers).
        """
        if self.student.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # --- EMA --------------------------------------------------------------------------
    def _update_ema(self):
        """ema <- d * ema + (1 - d) * w, d = min(momentum, (1 + n) / (10 + n))."""
        n = self.ema_updates.value
        decay = ops.minimum(self.ema_momentum, (1.0 + n) / (10.0 + n))
        for ema, var in zip(self.ema_vars, self.student.trainable_variables):
            ema.assign(decay * ema.value + (1.0 - decay) * ops.cast(var.value, ema.dtype))
        self.ema_updates.assign(n + 1.0)

    def swap_ema_weights(self):
        """Exchanges the student's trainable weights with their EMA (call twice to undo).

        Cross-replica context only (between steps, e.g. from a callback).
        """
        if not self.ema_vars:
            return
        for ema, var in zip(self.ema_vars, self.student.trainable_variables):
            current = np.asarray(var.numpy())
            var.assign(np.asarray(ema.numpy()))
            ema.assign(current)

    @contextlib.contextmanager
    def ema_weights(self):
        """Context in which the student holds its EMA weights (a no-op without EMA)."""
        self.swap_ema_weights()
        try:
            yield self.student
        finally:
            self.swap_ema_weights()

    def _split(self, items):
        """Split a list aligned with the student's trainable variables: (backbone, head)."""
        ids = {id(v) for v in self._backbone.trainable_variables}
        flags = [id(v) in ids for v in self.student.trainable_variables]
        return [i for i, f in zip(items, flags) if f], [i for i, f in zip(items, flags) if not f]

    # --- losses ---------------------------------------------------------------------
    def _per_sample_terms(self, targets, outputs, teacher_maps):
        """Weighted loss terms, each (B,)."""
        terms = {
            "star": self.star_weight * self.star_loss.call(targets["landmarks"], outputs["fused"]),
            "aam": self.aam_loss.per_sample(targets, outputs),
        }
        if teacher_maps is not None:
            terms["kd"] = self.kd_loss.per_sample(teacher_maps, outputs, self.aam_loss)
        return terms

    def _teacher_maps(self, x):
        """The frozen teacher's output maps for ``x`` (inference mode, no gradient)."""
        if self.teacher is None:
            return None
        out = self.teacher(x, training=False)
        return {k: ops.stop_gradient(ops.cast(out[k], "float32"))
                for k in ("fused", "points", "edges") if k in out}

    def _compute(self, x, y, sample_weight, teacher_maps, training):
        outputs = self.student(x, training=training)
        terms = self._per_sample_terms(y, outputs, teacher_maps)
        if sample_weight is not None:
            sw = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            terms = {k: v * sw for k, v in terms.items()}
        terms["loss"] = sum(terms.values())
        return outputs, terms

    @staticmethod
    def _global_batch_size(per_sample):
        """Samples in this step summed over all replicas (exact for uneven last batches)."""
        local = ops.cast(ops.shape(per_sample)[0], "float32")
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return local
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)

    def _update_trackers(self, terms):
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])

    # --- steps ----------------------------------------------------------------------
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.student.trainable_variables
        teacher_maps = self._teacher_maps(x)  # outside the tape: nothing to record
        with tf.GradientTape() as tape:
            _, terms = self._compute(x, y, sample_weight, teacher_maps, training=True)
            loss = ops.sum(terms["loss"]) / self._global_batch_size(terms["loss"])
            if self.student.losses:  # regularizers: per replica, scaled like Keras does
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                loss = loss + ops.sum(self.student.losses) / replicas
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        if self.backbone_optimizer is None:
            self.optimizer.apply(grads, variables)
        else:
            bb_grads, head_grads = self._split(grads)
            bb_vars, head_vars = self._split(variables)
            self.backbone_optimizer.apply(bb_grads, bb_vars)
            self.optimizer.apply(head_grads, head_vars)
        if self.ema_vars:
            self._update_ema()
        self._update_trackers(terms)
        return self._step_logs(m for m in self.metrics if m is not self.nme_tracker)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        outputs, terms = self._compute(x, y, sample_weight, self._teacher_maps(x), training=False)
        self._update_trackers(terms)
        if self.nme_tracker is not None:
            pred = decode_ops(ops.cast(outputs["fused"], "float32"), self.decode_method)
            self.nme_tracker.update_state(y["landmarks"], pred, sample_weight=sample_weight)
        return self._step_logs(self.metrics)

    @staticmethod
    def _step_logs(metrics):
        """The step's metric results; shape (1,) across workers, where Keras 3 reduces step
        outputs with a MEAN over axis 0 that rejects scalars (keras-team/keras#20585)."""
        strategy = tf.distribute.get_strategy()
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
            strategy.extended._in_multi_worker_mode()
        return {m.name: ops.reshape(m.result(), (1,)) if multi_worker else m.result()
                for m in metrics}
