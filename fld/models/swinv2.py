"""SwinV2 backbone (Liu et al., "Swin Transformer V2: Scaling Up Capacity and
Resolution", arXiv 2111.09883), Keras 3 / ``keras.ops``.

What makes it V2 (paper Sec. 3):
- residual post-norm: ``x = x + LN(attn(x)); x = x + LN(mlp(x))`` (Eq. 1 area, Fig. 1);
- scaled cosine attention: ``cos(q, k) / tau + B`` with a learnable per-head
  ``1 / tau = exp(min(logit_scale, log 100))`` (Eq. 2);
- log-spaced continuous position bias: a 2-layer MLP (2 -> 512 -> heads) on
  ``sign(d) * log2(1 + |d|) / log2(8)`` of the relative coordinates normalized to
  [-8, 8] (Eq. 3, 4), squashed to ``16 * sigmoid``;
- shifted windows on every second block and 2x2 patch merging (Linear 4C -> 2C, then LN).

The teacher is exported in float only, so this module uses standard Keras layers
(LayerNormalization, GELU) and 6-D window partition transposes.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

LN_EPSILON = 1e-5


def _relative_coords_table(window: int, pretrained_window: int) -> np.ndarray:
    """(1, (2w-1)^2, 2) log-spaced relative coordinates (arXiv 2111.09883, Eq. 4)."""
    r = np.arange(-(window - 1), window, dtype=np.float32)
    table = np.stack(np.meshgrid(r, r, indexing="ij"), axis=-1)          # (2w-1, 2w-1, 2)
    norm = (pretrained_window - 1) if pretrained_window > 0 else (window - 1)
    table = table / max(norm, 1) * 8.0
    table = np.sign(table) * np.log2(np.abs(table) + 1.0) / np.log2(8.0)
    return table.reshape(1, -1, 2).astype(np.float32)


def _relative_position_index(window: int) -> np.ndarray:
    """(w^2 * w^2,) index into the coords table for every (query, key) token pair."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)                                        # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).reshape(-1).astype(np.int32)


def _shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """(nW, N, N) additive mask: -100 between tokens from different shifted regions."""
    region = np.zeros((height, width), np.int32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[hs, ws] = label
            label += 1
    region = region.reshape(height // window, window, width // window, window)
    region = region.transpose(0, 2, 1, 3).reshape(-1, window * window)   # (nW, N)
    same = region[:, :, None] == region[:, None, :]
    return np.where(same, 0.0, -100.0).astype(np.float32)


@keras.saving.register_keras_serializable(package="fld")
class WindowAttentionV2(keras.layers.Layer):
    """(Shifted) window multi-head attention with scaled cosine attention and the
    log-spaced continuous position bias.

    Args:
        num_heads: attention heads.
        window_size: window side (clipped to the map side by the builder).
        shift_size: cyclic shift (0 for regular windows).
        pretrained_window_size: window of a checkpoint to transfer from (0: own).
        cpb_hidden: hidden width of the position-bias MLP.
    Input/output: (B, H, W, C).
    """

    def __init__(self, num_heads: int, window_size: int, shift_size: int = 0,
                 pretrained_window_size: int = 0, cpb_hidden: int = 512, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.pretrained_window_size = pretrained_window_size
        self.cpb_hidden = cpb_hidden

    def build(self, input_shape):
        _, height, width, dim = input_shape
        w = self.window_size
        if height % w or width % w:
            raise ValueError(f"WindowAttentionV2: map {height}x{width} not divisible by window {w}")
        self.dim = dim
        self.qkv = layers.Dense(3 * dim, use_bias=False, name="qkv")
        self.qkv.build((None, dim))
        self.q_bias = self.add_weight(name="q_bias", shape=(dim,), initializer="zeros")
        self.v_bias = self.add_weight(name="v_bias", shape=(dim,), initializer="zeros")
        self.logit_scale = self.add_weight(
            name="logit_scale", shape=(self.num_heads, 1, 1),
            initializer=keras.initializers.Constant(math.log(10.0)),
        )
        self.cpb_fc1 = layers.Dense(self.cpb_hidden, activation="relu", name="cpb_fc1")
        self.cpb_fc1.build((None, 2))
        self.cpb_fc2 = layers.Dense(self.num_heads, use_bias=False, name="cpb_fc2")
        self.cpb_fc2.build((None, self.cpb_hidden))
        self.proj = layers.Dense(dim, name="proj")
        self.proj.build((None, dim))
        # Constants: numpy, folded into the graph.
        self._coords_table = _relative_coords_table(w, self.pretrained_window_size)
        self._position_index = _relative_position_index(w)
        self._mask = (_shift_mask(height, width, w, self.shift_size)
                      if self.shift_size > 0 else None)

    def _partition(self, x, height, width):
        w, c = self.window_size, self.dim
        x = ops.reshape(x, (-1, height // w, w, width // w, w, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, w * w, c))                             # (B*nW, N, C)

    def _merge(self, x, height, width):
        w, c = self.window_size, self.dim
        x = ops.reshape(x, (-1, height // w, width // w, w, w, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height, width, c))

    def _position_bias(self):
        table = self.cpb_fc2(self.cpb_fc1(ops.convert_to_tensor(self._coords_table)))
        table = ops.reshape(table, (-1, self.num_heads))                  # ((2w-1)^2, h)
        bias = ops.take(table, self._position_index, axis=0)              # (N*N, h)
        n = self.window_size ** 2
        bias = ops.transpose(ops.reshape(bias, (n, n, self.num_heads)), (2, 0, 1))
        return 16.0 * ops.sigmoid(bias)                                   # (h, N, N)

    def call(self, x):
        _, height, width, dim = x.shape
        heads, n = self.num_heads, self.window_size ** 2
        s = self.shift_size
        if s:
            x = ops.roll(x, shift=(-s, -s), axis=(1, 2))
        windows = self._partition(x, height, width)                       # (B*nW, N, C)
        qkv_bias = ops.concatenate([self.q_bias, ops.zeros_like(self.v_bias), self.v_bias])
        qkv = self.qkv(windows) + qkv_bias                                 # (B*nW, N, 3C)
        qkv = ops.reshape(qkv, (-1, n, 3, heads, dim // heads))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))                          # (3, B*nW, h, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q / ops.maximum(ops.norm(q, axis=-1, keepdims=True), 1e-12)
        k = k / ops.maximum(ops.norm(k, axis=-1, keepdims=True), 1e-12)
        scale = ops.exp(ops.minimum(self.logit_scale, math.log(100.0)))
        attn = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale       # (B*nW, h, N, N)
        attn = attn + self._position_bias()
        if self._mask is not None:
            num_windows = self._mask.shape[0]
            attn = ops.reshape(attn, (-1, num_windows, heads, n, n)) + self._mask[:, None]
            attn = ops.reshape(attn, (-1, heads, n, n))
        attn = ops.softmax(attn, axis=-1)
        out = ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3))             # (B*nW, N, h, hd)
        out = self.proj(ops.reshape(out, (-1, n, dim)))
        out = self._merge(out, height, width)
        if s:
            out = ops.roll(out, shift=(s, s), axis=(1, 2))
        return out

    def count_macs(self) -> int:
        """qkv + proj Dense, q.k^T and attn.v matmuls, per image (the CPB MLP runs once
        per forward on a (2w-1)^2 table and is counted too)."""
        _, height, width, dim = self.input.shape
        tokens, n = height * width, self.window_size ** 2
        dense = tokens * dim * 4 * dim
        matmuls = 2 * tokens * n * dim
        cpb = (2 * self.window_size - 1) ** 2 * (2 * self.cpb_hidden + self.cpb_hidden * self.num_heads)
        return dense + matmuls + cpb

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads,
                "window_size": self.window_size, "shift_size": self.shift_size,
                "pretrained_window_size": self.pretrained_window_size,
                "cpb_hidden": self.cpb_hidden}


@keras.saving.register_keras_serializable(package="fld")
class PatchMergingReshape(keras.layers.Layer):
    """(B, H, W, C) -> (B, H/2, W/2, 4C): the 2x2 neighborhood concatenated
    (the weight-free half of SwinV2 patch merging)."""

    def call(self, x):
        _, h, w, c = x.shape
        x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        return ops.reshape(x, (-1, h // 2, w // 2, 4 * c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, h // 2, w // 2, 4 * c)


def _swin_block(x, num_heads, window, shift, mlp_ratio, name):
    """SwinV2 block with residual post-norm."""
    dim = x.shape[-1]
    a = WindowAttentionV2(num_heads, window, shift, name=f"{name}_attn")(x)
    a = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm1")(a)
    x = layers.Add(name=f"{name}_add1")([x, a])
    m = layers.Dense(int(dim * mlp_ratio), activation="gelu", name=f"{name}_mlp_fc1")(x)
    m = layers.Dense(dim, name=f"{name}_mlp_fc2")(m)
    m = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_norm2")(m)
    return layers.Add(name=f"{name}_add2")([x, m])


@keras.saving.register_keras_serializable(package="fld")
class SwinV2Backbone(keras.Model):
    """SwinV2 feature pyramid, one builder for all sizes.

    Args:
        embed_dim: channels after the 4x4 patch embedding (doubled per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: attention window; a stage whose map is not larger than the window
            uses the whole map as one window and no shift.
        image_size: input side, a multiple of 32 (and of 32 * window at stage 1 sizes).
        mlp_ratio: MLP hidden width / channels.
    Input: float32 (B, S, S, 3) images in [-1, 1].
    Output: dict ``P2..P5`` at strides 4, 8, 16, 32 (P5 after a final LayerNorm).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size: int = 8,
        image_size: int = 256,
        mlp_ratio: float = 4.0,
        **kwargs,
    ):
        if image_size % 32:
            raise ValueError(f"SwinV2Backbone: image_size {image_size} must be a multiple of 32")
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError("SwinV2Backbone: depths and num_heads need 4 stages")
        # === Layers / functional graph ===
        images = keras.Input((image_size, image_size, 3), name="images")
        x = layers.Conv2D(embed_dim, 4, strides=4, name="patch_embed")(images)  # (B, S/4, S/4, C)
        x = layers.LayerNormalization(epsilon=LN_EPSILON, name="patch_embed_norm")(x)
        pyramid = {}
        for stage, (depth, heads) in enumerate(zip(depths, num_heads)):
            if stage > 0:
                x = PatchMergingReshape(name=f"stage{stage}_merge")(x)            # (B, H/2, W/2, 4C)
                x = layers.Dense(embed_dim * 2 ** stage, use_bias=False,
                                 name=f"stage{stage}_reduce")(x)
                x = layers.LayerNormalization(epsilon=LN_EPSILON, name=f"stage{stage}_merge_norm")(x)
            side = x.shape[1]
            window = min(window_size, side)
            for block in range(depth):
                shift = window // 2 if (block % 2 and side > window) else 0
                x = _swin_block(x, heads, window, shift, mlp_ratio, f"stage{stage}_block{block}")
            if stage == 3:
                x = layers.LayerNormalization(epsilon=LN_EPSILON, name="final_norm")(x)
            pyramid[f"P{stage + 2}"] = x                                           # stride 4 * 2^stage
        super().__init__(inputs=images, outputs=pyramid, **kwargs)
        # === Config ===
        self.embed_dim = embed_dim
        self.depths = tuple(depths)
        self.num_heads = tuple(num_heads)
        self.window_size = window_size
        self.image_size = image_size
        self.mlp_ratio = mlp_ratio
        self.pyramid_channels = {k: v.shape[-1] for k, v in pyramid.items()}

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "embed_dim": self.embed_dim, "depths": list(self.depths),
            "num_heads": list(self.num_heads), "window_size": self.window_size,
            "image_size": self.image_size, "mlp_ratio": self.mlp_ratio,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


SWINV2_PRESETS = {
    # The paper's teacher (SwinV2-B, 87 M parameters).
    "swinv2_base_window16_256": dict(embed_dim=128, depths=(2, 2, 18, 2),
                                     num_heads=(4, 8, 16, 32), window_size=16),
    "swinv2_tiny_window8_256": dict(embed_dim=96, depths=(2, 2, 6, 2),
                                    num_heads=(3, 6, 12, 24), window_size=8),
    # Small enough to train on a 2-core CPU (a few million parameters).
    "swinv2_cpu_window8_256": dict(embed_dim=32, depths=(2, 2, 4, 2),
                                   num_heads=(1, 2, 4, 8), window_size=8),
}
