"""Multiply-accumulates (MACs) of a Keras landmark model, per image.

What is counted (one MAC = one multiply + add, for a single image):
- Conv2D: out_h * out_w * out_c * k_h * k_w * in_c / groups;
- DepthwiseConv2D: out_h * out_w * channels * multiplier * k_h * k_w;
- Conv2DTranspose: in_h * in_w * in_c * k_h * k_w * out_c;
- Dense: tokens * in * out;
- layers with ``count_macs()``: attention (qkv/proj weights, q.k^T and attn.v matmuls,
  the SwinV2 position-bias MLP), separable-attention weighted sums, instance-norm
  multiplies, the AAM's fixed 1x1 transform.
Not counted: BatchNorm (folded into the preceding conv at export), activations,
residual adds, softmax, LayerNorm, resizes and reshapes.
"""

from __future__ import annotations

import collections


def layer_macs(layer) -> tuple[str, int]:
    """(kind, MACs per image) of one non-model layer; kind is None when not counted."""
    import keras
    import numpy as np

    if hasattr(layer, "count_macs"):
        return type(layer).__name__, int(layer.count_macs())
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        return "DepthwiseConv2D", int(np.prod(out[1:])) * kh * kw
    if isinstance(layer, keras.layers.Conv2DTranspose):
        inp = layer.input.shape
        kh, kw = layer.kernel_size
        return "Conv2DTranspose", int(np.prod(inp[1:])) * kh * kw * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        in_c = layer.input.shape[-1] // layer.groups
        return "Conv2D", int(np.prod(out[1:])) * kh * kw * in_c
    if isinstance(layer, keras.layers.Dense):
        inp = layer.input.shape
        return "Dense", int(np.prod(inp[1:])) * layer.units
    return None, 0


def count_macs(model) -> collections.Counter:
    """MACs per image by layer kind, recursing into nested functional models."""
    import keras

    totals = collections.Counter()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            totals.update(count_macs(layer))
            continue
        kind, macs = layer_macs(layer)
        if kind:
            totals[kind] += macs
    return totals
