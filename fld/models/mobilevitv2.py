"""MobileViT-v2 backbone (Mehta & Rastegari, "Separable Self-attention for Mobile Vision
Transformers", arXiv 2206.02680), Keras 3, built for full-integer int8 export.

Layout (width multiplier a; 0.5 = the paper's student)::

    stem    3x3 conv s2, BN, SiLU                      16 ch  (a=0.5)   stride 2
    layer1  1 MV2 block (expand 2)                     32             stride 2
    layer2  2 MV2 blocks, first s2                     64             stride 4   -> P2
    layer3  MV2 s2 + MobileViT-v2 block (d=64,  2 attn) 128           stride 8   -> P3
    layer4  MV2 s2 + MobileViT-v2 block (d=96,  4 attn) 192           stride 16  -> P4
    layer5  MV2 s2 + MobileViT-v2 block (d=128, 3 attn) 256           stride 32  -> P5

Deviations from the reference, for int8 on tflite-runtime <= 2.14:
- The reference normalizes the attention tokens with GroupNorm(1 group). Keras'
  Group/LayerNormalization leave float islands (NEG, SQUARE) in an int8 TFLite model.
  ``token_norm="group"`` (presets ``mobilevitv2_*_gn``) uses ``SampleNormalization``, a
  GroupNorm(1) written with int8 ops. ``token_norm="batch"`` (the plain presets) uses
  BatchNormalization: a per-channel MUL/ADD at inference, the cheapest choice, but it
  does not bound the separable attention, whose output is quadratic in its input
  (relu(value) * sum(key * softmax(query))): a face that enlarges the residual stream
  in inference mode is amplified block after block
  (docs/experiments/2026-12-03-build-measurements.md, "Token norm"). Prefer
  the ``_gn`` presets; the plain ones stay for the models trained with them.
- Unfold/fold of 2x2 patches uses only 4-D/5-D transposes (tflite-runtime <= 2.11
  cannot run a 6-D TRANSPOSE; the authors' fix splits the 6-D permute in the same way).
- Tokens are kept NHWC-like as (B, P, N, d) with P = 4 pixels per patch and N patches,
  so the 1x1 projections are plain CONV_2D ops and the token softmax is on the last axis.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from fld.models.layers import SampleNormalization

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Rounds channels to a multiple of ``divisor`` (MobileNet rule, never below 90%)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


@keras.saving.register_keras_serializable(package="fld")
class PatchUnfold(keras.layers.Layer):
    """(B, H, W, C) -> (B, p*p, N, C): pixel j of every p x p patch, N = HW / p^2.

    Two 5-D transposes instead of one 6-D permute (tflite-runtime <= 2.11 rule).

    Args:
        patch_size: p.
    """

    def __init__(self, patch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, x):
        p = self.patch_size
        _, h, w, c = x.shape
        nh, nw = h // p, w // p
        x = ops.reshape(x, (-1, nh, p, nw, p * c))          # (B, nh, ph, nw, pw*C)
        x = ops.transpose(x, (0, 2, 1, 3, 4))               # (B, ph, nh, nw, pw*C)
        x = ops.reshape(x, (-1, p, nh * nw, p, c))          # (B, ph, N, pw, C)
        x = ops.transpose(x, (0, 1, 3, 2, 4))               # (B, ph, pw, N, C)
        return ops.reshape(x, (-1, p * p, nh * nw, c))      # (B, P, N, C)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = self.patch_size
        return (b, p * p, (h // p) * (w // p), c)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="fld")
class PatchFold(keras.layers.Layer):
    """Inverse of ``PatchUnfold``: (B, p*p, N, C) -> (B, H, W, C).

    Args:
        patch_size: p.
        height, width: H and W of the folded map.
    """

    def __init__(self, patch_size: int, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.patch_size, self.height, self.width = patch_size, height, width

    def call(self, x):
        p, c = self.patch_size, x.shape[-1]
        nh, nw = self.height // p, self.width // p
        x = ops.reshape(x, (-1, p, p, nh * nw, c))          # (B, ph, pw, N, C)
        x = ops.transpose(x, (0, 1, 3, 2, 4))               # (B, ph, N, pw, C)
        x = ops.reshape(x, (-1, p, nh, nw, p * c))          # (B, ph, nh, nw, pw*C)
        x = ops.transpose(x, (0, 2, 1, 3, 4))               # (B, nh, ph, nw, pw*C)
        return ops.reshape(x, (-1, self.height, self.width, c))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size,
                "height": self.height, "width": self.width}


@keras.saving.register_keras_serializable(package="fld")
class SeparableAttentionContext(keras.layers.Layer):
    """The weight-free core of separable self-attention (arXiv 2206.02680, Sec. 3.2).

    Input: ``qkv`` (B, P, N, 1 + 2d) from the input projection (the ``"fused"``
    attention form), or ``[qk, relu_v]`` ((B, P, N, 1 + d) and (B, P, N, d): the
    ``"split"`` form, whose value projection has the ReLU fused into it). With the
    1-channel query ``q``, keys ``k`` and values ``v``:
    ``scores = softmax_N(q)``; ``context = sum_N(scores * k)`` (B, P, 1, d);
    ``out = relu(v) * context`` (B, P, N, d). Cost is linear in N.
    """

    def call(self, qkv):
        if isinstance(qkv, (list, tuple)):   # split form: the values arrive activated
            qk, active_value = qkv
            _, p, n, c = qk.shape
            query, key = qk[..., :1], qk[..., 1:]
        else:
            _, p, n, c = qkv.shape
            d = (c - 1) // 2
            query, key = qkv[..., :1], qkv[..., 1:1 + d]
            active_value = ops.relu(qkv[..., 1 + d:])
        scores = ops.softmax(ops.reshape(query, (-1, p, n)), axis=-1)   # over tokens
        # sum_N(scores * key) as a (1, N) x (N, d) product: in int8 a BATCH_MATMUL sums in
        # int32, where a MUL then SUM rounds every scores * key term to the int8 grid of the
        # largest one first (same float function).
        scores = ops.reshape(scores, (-1, p, 1, n))
        context = ops.matmul(scores, key)                                # (B, P, 1, d)
        return active_value * context                                    # (B, P, N, d)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[1])
        return tuple(input_shape[:-1]) + ((input_shape[-1] - 1) // 2,)

    def count_macs(self) -> int:
        if isinstance(self.input, (list, tuple)):        # split: [qk, relu_v]
            _, p, n, d = self.input[1].shape
        else:
            _, p, n, c = self.input.shape
            d = (c - 1) // 2
        return 2 * p * n * d  # weighted sum + broadcast product


def _conv_bn(x, filters, kernel, strides=1, activation=None, name=""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_act")(x) if activation else x


def _inverted_residual(x, filters, strides, expand_ratio, name):
    """MobileNet-v2 block: 1x1 expand (BN, SiLU), 3x3 depthwise (BN, SiLU), 1x1 (BN)."""
    in_channels = x.shape[-1]
    hidden = make_divisible(round(in_channels * expand_ratio), 8)
    y = x
    if expand_ratio != 1:
        y = _conv_bn(y, hidden, 1, activation="silu", name=f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               name=f"{name}_dw_conv")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_dw_bn")(y)
    y = layers.Activation("silu", name=f"{name}_dw_act")(y)
    y = _conv_bn(y, filters, 1, name=f"{name}_project")
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


TOKEN_NORMS = ("batch", "group")
# The attention's input projection: one 1x1 conv to q, k and v, sliced ("fused", the
# reference), or q+k and v as two convs with v's ReLU fused into its conv ("split": the
# same function, and no int8 RELU op outside XNNPACK in a .tflite; fld.export.split_attention).
ATTENTION_FORMS = ("fused", "split")


def _token_norm(x, name, kind="batch"):
    # GroupNorm(1) in the reference (see the module docstring).
    if kind == "group":
        return SampleNormalization(epsilon=BN_EPSILON, name=name)(x)
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _mobilevit_block(x, attn_dim, num_attn_blocks, patch_size, ffn_multiplier, name,
                     token_norm="batch", attention_form="fused"):
    """MobileViT-v2 block: local 3x3 depthwise + 1x1, separable-attention transformer
    on unfolded patches (pre-norm), fold, 1x1 projection (BN). No input fusion (v2)."""
    _, h, w, channels = x.shape
    ffn_dim = int((ffn_multiplier * attn_dim) // 16 * 16)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_local_dw")(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_local_bn")(y)
    y = layers.Activation("silu", name=f"{name}_local_act")(y)
    y = layers.Conv2D(attn_dim, 1, use_bias=False, name=f"{name}_local_pw")(y)   # (B, H, W, d)
    y = PatchUnfold(patch_size, name=f"{name}_unfold")(y)                        # (B, P, N, d)
    for i in range(num_attn_blocks):
        prefix = f"{name}_attn{i}"
        a = _token_norm(y, f"{prefix}_norm1", token_norm)
        if attention_form == "split":
            a = [layers.Conv2D(1 + attn_dim, 1, name=f"{prefix}_qk")(a),
                 layers.Conv2D(attn_dim, 1, activation="relu", name=f"{prefix}_v")(a)]
        else:
            a = layers.Conv2D(1 + 2 * attn_dim, 1, name=f"{prefix}_qkv")(a)
        a = SeparableAttentionContext(name=f"{prefix}_context")(a)
        a = layers.Conv2D(attn_dim, 1, name=f"{prefix}_out")(a)
        y = layers.Add(name=f"{prefix}_add1")([y, a])
        f = _token_norm(y, f"{prefix}_norm2", token_norm)
        f = layers.Conv2D(ffn_dim, 1, activation="silu", name=f"{prefix}_ffn1")(f)
        f = layers.Conv2D(attn_dim, 1, name=f"{prefix}_ffn2")(f)
        y = layers.Add(name=f"{prefix}_add2")([y, f])
    y = _token_norm(y, f"{name}_global_norm", token_norm)
    y = PatchFold(patch_size, h, w, name=f"{name}_fold")(y)                      # (B, H, W, d)
    return _conv_bn(y, channels, 1, name=f"{name}_proj")


def stage_config(width_multiplier: float) -> dict:
    """Channels and attention dims of the five layers for a width multiplier."""
    a = width_multiplier
    return {
        "stem_channels": make_divisible(min(max(32 * a, 16), 64)),
        "channels": [make_divisible(c * a) for c in (64, 128, 256, 384, 512)],
        "attn_dims": [make_divisible(d * a) for d in (128, 192, 256)],
    }


@keras.saving.register_keras_serializable(package="fld")
class MobileViTV2Backbone(keras.Model):
    """MobileViT-v2 feature pyramid.

    Args:
        width_multiplier: 0.5 .. 2.0 (0.5 = paper's student, ~1.1 M parameters).
        image_size: input side in pixels, a multiple of 64 (P5 must hold 2x2 patches).
        num_attn_blocks: attention blocks in layers 3, 4, 5.
        ffn_multiplier: FFN width as a multiple of the attention dim.
        patch_size: unfold patch side.
        expand_ratio: MV2 block expansion.
        token_norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm(1), the reference's).
        attention_form: ``"fused"`` or ``"split"`` (``ATTENTION_FORMS``).
    Input: float32 (B, S, S, 3) images in [-1, 1].
    Output: dict ``P2..P5`` at strides 4, 8, 16, 32.
    """

    def __init__(
        self,
        width_multiplier: float = 0.5,
        image_size: int = 256,
        num_attn_blocks=(2, 4, 3),
        ffn_multiplier: float = 2.0,
        patch_size: int = 2,
        expand_ratio: float = 2.0,
        token_norm: str = "batch",
        attention_form: str = "fused",
        **kwargs,
    ):
        if attention_form not in ATTENTION_FORMS:
            raise ValueError(f"MobileViTV2Backbone: attention_form must be one of "
                             f"{ATTENTION_FORMS}, got {attention_form!r}")
        if token_norm not in TOKEN_NORMS:
            raise ValueError(f"MobileViTV2Backbone: token_norm must be one of {TOKEN_NORMS}, "
                             f"got {token_norm!r}")
        if image_size % (32 * patch_size):
            raise ValueError(f"MobileViTV2Backbone: image_size {image_size} must be a "
                             f"multiple of {32 * patch_size}")
        cfg = stage_config(width_multiplier)
        # === Layers / functional graph ===
        images = keras.Input((image_size, image_size, 3), name="images")
        x = _conv_bn(images, cfg["stem_channels"], 3, strides=2, activation="silu", name="stem")
        x = _inverted_residual(x, cfg["channels"][0], 1, expand_ratio, "layer1_mv2_0")
        for i in range(2):
            x = _inverted_residual(x, cfg["channels"][1], 2 if i == 0 else 1, expand_ratio,
                                   f"layer2_mv2_{i}")
        pyramid = {"P2": x}                                                     # stride 4
        for level, (channels, dim, depth) in enumerate(
            zip(cfg["channels"][2:], cfg["attn_dims"], num_attn_blocks)
        ):
            name = f"layer{level + 3}"
            x = _inverted_residual(x, channels, 2, expand_ratio, f"{name}_mv2")
            x = _mobilevit_block(x, dim, depth, patch_size, ffn_multiplier, f"{name}_mvit",
                                 token_norm, attention_form)
            pyramid[f"P{level + 3}"] = x                                        # stride 8..32
        super().__init__(inputs=images, outputs=pyramid, **kwargs)
        # === Config ===
        self.width_multiplier = width_multiplier
        self.image_size = image_size
        self.num_attn_blocks = tuple(num_attn_blocks)
        self.ffn_multiplier = ffn_multiplier
        self.patch_size = patch_size
        self.expand_ratio = expand_ratio
        self.token_norm = token_norm
        self.attention_form = attention_form
        self.pyramid_channels = {k: v.shape[-1] for k, v in pyramid.items()}

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "width_multiplier": self.width_multiplier, "image_size": self.image_size,
            "num_attn_blocks": list(self.num_attn_blocks),
            "ffn_multiplier": self.ffn_multiplier, "patch_size": self.patch_size,
            "expand_ratio": self.expand_ratio, "token_norm": self.token_norm,
            "attention_form": self.attention_form,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


MOBILEVITV2_PRESETS = {
    f"mobilevitv2_{int(round(a * 100)):03d}{suffix}": {"width_multiplier": a, "token_norm": norm}
    for a in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    for suffix, norm in (("", "batch"), ("_gn", "group"))
}
