"""Custom layers shared by the backbones and the heatmap generator.

Every layer here is written with ``keras.ops`` only, is registered for safe-mode
``.keras`` loading (package ``fld``), and lowers to TFLite builtin ops that have int8
kernels (checked by ``fld.export.audit`` in ``tests/test_export.py``).

A layer that does multiply-accumulates that are not a Conv2D / Dense weight product
(attention matmuls, weighted sums) reports them with ``count_macs()`` so that
``tools/model_summary.py`` can count them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def leaf_layers(model):
    """The layers of ``model``, those of nested models (a backbone) included, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


@keras.saving.register_keras_serializable(package="fld")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalization without affine parameters, int8-friendly.

    ``y = (x - mean_hw(x)) * rsqrt(mean_hw((x - mean)^2) + epsilon)`` per sample and
    channel. Written as MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL, all of which have
    int8 TFLite kernels: ``keras.layers.GroupNormalization`` / ``LayerNormalization``
    instead leave float NEG / SQUARE islands in an int8 model, and int8 SQRT (v2) is
    rejected by tflite-runtime 2.14.

    Args:
        epsilon: added to the variance.
    Input/output: (B, H, W, C).
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        centered = x - mean
        variance = ops.mean(centered * centered, axis=(1, 2), keepdims=True)
        return centered * ops.rsqrt(variance + self.epsilon)

    def count_macs(self) -> int:
        # square + scale: two multiplies per element.
        return 2 * int(np.prod(self.input.shape[1:]))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="fld")
class SampleNormalization(keras.layers.Layer):
    """GroupNorm with one group (the MobileViT-v2 reference's token norm), int8-friendly.

    Each sample is normalized over all its non-batch elements, then scaled and shifted
    per channel: ``y = (x - mean(x)) * rsqrt(mean((x - mean)^2) + epsilon) * gamma + beta``.
    Unlike BatchNorm, the scale follows the sample: a sample whose activations grow is
    brought back to unit variance, in training and inference alike. Same int8 ops as
    ``InstanceNormalization`` (MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL) plus the
    affine MUL / ADD.

    Args:
        epsilon: added to the variance.
    Input/output: (B, ..., C).
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        axes = tuple(range(1, len(x.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        centered = x - mean
        variance = ops.mean(centered * centered, axis=axes, keepdims=True)
        return centered * ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def count_macs(self) -> int:
        # square, scale, gamma: three multiplies per element.
        return 3 * int(np.prod(self.input.shape[1:]))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="fld")
class FixedPointwise(keras.layers.Layer):
    """A fixed (non-trainable) 1x1 convolution ``y = x @ matrix + bias`` over channels.

    Used for the AAM's edge-to-point transform (ADNet, ICCV 2021): ``matrix`` (E, K)
    has ``matrix[e, p] = 1`` when point p lies on edge e and ``bias[p] = 1`` for points
    on no edge (``fld.schemes.Scheme.edge_to_point``). The values live in the config, so
    ``from_config`` rebuilds the same transform; it lowers to an int8 CONV_2D.

    Args:
        matrix: (C_in, C_out) nested list or array.
        bias: (C_out,) nested list or array.
    Input: (B, H, W, C_in). Output: (B, H, W, C_out).
    """

    def __init__(self, matrix, bias, **kwargs):
        super().__init__(**kwargs)
        self.matrix = np.asarray(matrix, np.float32)
        self.bias = np.asarray(bias, np.float32)
        if self.matrix.ndim != 2 or self.bias.shape != (self.matrix.shape[1],):
            raise ValueError(
                f"FixedPointwise: matrix must be (C_in, C_out) and bias (C_out,), got "
                f"{self.matrix.shape} and {self.bias.shape}"
            )

    def build(self, input_shape):
        c_in, c_out = self.matrix.shape
        if input_shape[-1] != c_in:
            raise ValueError(f"FixedPointwise: expects {c_in} channels, got {input_shape[-1]}")
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, c_in, c_out), trainable=False,
            initializer=keras.initializers.Constant(self.matrix.reshape(1, 1, c_in, c_out)),
        )
        self.offset = self.add_weight(
            name="offset", shape=(c_out,), trainable=False,
            initializer=keras.initializers.Constant(self.bias),
        )

    def call(self, x):
        return ops.conv(x, self.kernel, strides=1, padding="valid") + self.offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.matrix.shape[1],)

    def count_macs(self) -> int:
        return int(np.prod(self.input.shape[1:-1])) * int(self.matrix.size)

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix.tolist(),
                "bias": self.bias.tolist()}
