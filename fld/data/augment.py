"""Batched, seeded augmentation ops in TensorFlow (graph-safe, used inside tf.data).

Geometry is one affine per face (crop framing x random rotation / scale / shift / flip),
applied once to the image, the landmarks and the drawn edge maps, so they cannot
disagree. Photometric ops (occlusion, blur, gamma, noise, gray) act on the image only.
Every op takes a stateless seed, so a seeded pipeline is deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges (defaults: METHOD.md section 6)."""

    flip_prob: float = 0.5
    rotation_sigma_deg: float = 18.0
    scale_sigma: float = 0.1
    shift_sigma: float = 0.05  # fraction of the crop side
    occlusion_prob: float = 0.4
    blur_prob: float = 0.3
    gamma_prob: float = 0.2
    noise_prob: float = 0.2
    gray_prob: float = 0.2

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _seeds(seed, n: int):
    """n independent stateless seeds (each shape (2,)) from one seed."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _chance(seed, batch: int, prob: float):
    return tf.random.stateless_uniform([batch], seed) < prob


def affine_params(seed, batch: int, size: int, cfg: AugmentConfig):
    """Random (B, 2, 3) affine matrices about the crop center, and (B,) flip flags."""
    s = _seeds(seed, 4)
    flip = _chance(s[0], batch, cfg.flip_prob)
    angle = tf.random.stateless_truncated_normal(
        [batch], s[1], stddev=cfg.rotation_sigma_deg * math.pi / 180.0)
    zoom = 1.0 + tf.random.stateless_truncated_normal([batch], s[2], stddev=cfg.scale_sigma)
    shift = tf.random.stateless_truncated_normal([batch, 2], s[3],
                                                 stddev=cfg.shift_sigma * size)
    center = size / 2.0 - 0.5
    sign = tf.where(flip, -1.0, 1.0)
    cos, sin = zoom * tf.cos(angle), zoom * tf.sin(angle)
    # p' = R S F (p - c) + c + t, with F = diag(sign, 1).
    a00, a01 = cos * sign, -sin
    a10, a11 = sin * sign, cos
    t0 = center + shift[:, 0] - (a00 + a01) * center
    t1 = center + shift[:, 1] - (a10 + a11) * center
    rows = tf.stack([tf.stack([a00, a01, t0], -1), tf.stack([a10, a11, t1], -1)], 1)
    return rows, flip


def compose(outer, inner):
    """(B, 2, 3) o (B or 1, 2, 3) affine composition (apply ``inner`` first)."""
    lin = tf.matmul(outer[:, :, :2], inner[:, :, :2])
    trans = tf.linalg.matvec(outer[:, :, :2], inner[:, :, 2]) + outer[:, :, 2]
    return tf.concat([lin, trans[..., None]], axis=-1)


def transform_points(matrices, points):
    """(B, 2, 3) affines applied to (B, K, 2) points."""
    return tf.einsum("bij,bkj->bki", matrices[:, :, :2], points) + matrices[:, None, :, 2]


def rescale_affine(matrices, codec):
    """The same geometric map expressed in the heatmap cells of ``codec``: with its pixel
    rule h = ``codec.to_heatmap`` (an affine map with unit linear part, scaled) on both
    sides, A_h = h o A o h^-1, whose translation is h(A(h^-1(0)))."""
    lin = matrices[:, :, :2]
    origin = codec.to_image(tf.zeros([tf.shape(lin)[0], 2]))           # h^-1(0)
    trans = codec.to_heatmap(tf.linalg.matvec(lin, origin) + matrices[:, :, 2])
    return tf.concat([lin, trans[..., None]], axis=-1)


def warp(images, matrices, size: int, interpolation: str = "BILINEAR"):
    """Resamples (B, H, W, C) images with (B, 2, 3) input->output affines."""
    full = tf.concat([matrices, tf.tile([[[0.0, 0.0, 1.0]]], [tf.shape(matrices)[0], 1, 1])], 1)
    inv = tf.linalg.inv(full)  # output -> input, as ImageProjectiveTransform wants
    flat = tf.concat([tf.reshape(inv[:, :2, :], [-1, 6]), tf.zeros([tf.shape(inv)[0], 2])], 1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=[size, size],
        fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")


def _gaussian_blur(images, sigma):
    radius = 3
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-x * x / (2.0 * sigma * sigma))
    k = k / tf.reduce_sum(k)
    channels = images.shape[-1]
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, channels, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(images, kx, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "SAME")


def _on_subset(images, flags, fn):
    """Applies ``fn(subset, index)`` only to the images whose flag is set.

    The costly ops (blur, gamma, noise) then run on ~p of the batch instead of all of
    it; ``index`` picks each chosen image's own random parameters.
    """
    index = tf.cast(tf.where(flags)[:, 0], tf.int32)
    changed = fn(tf.gather(images, index), index)
    return tf.tensor_scatter_nd_update(images, index[:, None], changed)


def photometric(images, seed, cfg: AugmentConfig):
    """Occlusion, blur, gamma, noise and gray on (B, S, S, 3) float images in [0, 255]."""
    b, size = tf.shape(images)[0], images.shape[1]
    s = _seeds(seed, 12)

    if cfg.occlusion_prob > 0:
        center = tf.random.stateless_uniform([b, 2], s[0]) * size
        half = tf.random.stateless_uniform([b, 2], s[1], 0.05, 0.2) * size
        color = tf.random.stateless_uniform([b, 1, 1, 3], s[2], 0.0, 255.0)
        grid = tf.range(size, dtype=tf.float32)

        def occlude(sub, i):
            c, h = tf.gather(center, i), tf.gather(half, i)
            in_x = tf.abs(grid[None, :] - c[:, :1]) <= h[:, :1]  # (n, W)
            in_y = tf.abs(grid[None, :] - c[:, 1:]) <= h[:, 1:]  # (n, H)
            box = (in_y[:, :, None] & in_x[:, None, :])[..., None]
            return tf.where(box, tf.gather(color, i), sub)

        images = _on_subset(images, _chance(s[3], b, cfg.occlusion_prob), occlude)
    if cfg.blur_prob > 0:
        sigma = tf.random.stateless_uniform([], s[4], 0.5, 2.0)
        images = _on_subset(images, _chance(s[5], b, cfg.blur_prob),
                            lambda sub, i: _gaussian_blur(sub, sigma))
    if cfg.gamma_prob > 0:
        gamma = tf.exp(tf.random.stateless_uniform([b, 1, 1, 1], s[6], -0.5, 0.5))
        def adjust_gamma(sub, i):
            return 255.0 * tf.pow(tf.clip_by_value(sub / 255.0, 0.0, 1.0), tf.gather(gamma, i))

        images = _on_subset(images, _chance(s[7], b, cfg.gamma_prob), adjust_gamma)
    if cfg.noise_prob > 0:
        std = tf.random.stateless_uniform([b, 1, 1, 1], s[8], 2.0, 12.0)

        def add_noise(sub, i):
            return sub + tf.gather(std, i) * tf.random.stateless_normal(tf.shape(sub), s[9])

        images = _on_subset(images, _chance(s[10], b, cfg.noise_prob), add_noise)
    if cfg.gray_prob > 0:
        weights = tf.constant([0.299, 0.587, 0.114])
        def to_gray(sub, i):
            return tf.repeat(tf.reduce_sum(sub * weights, -1, keepdims=True), 3, -1)

        images = _on_subset(images, _chance(s[11], b, cfg.gray_prob), to_gray)
    return tf.clip_by_value(images, 0.0, 255.0)


def permute_where(flags, values, perm: np.ndarray, axis: int):
    """Gathers ``values`` along ``axis`` with ``perm`` where the per-sample flag is set."""
    permuted = tf.gather(values, perm, axis=axis)
    shape = [-1] + [1] * (len(values.shape) - 1)
    return tf.where(tf.reshape(flags, shape), permuted, values)
