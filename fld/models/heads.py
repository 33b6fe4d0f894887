"""The heatmap generator shared by both backbones: a decoder to stride 4 and the three
heads with the Anisotropic Attention Module (ADNet, Huang et al., ICCV 2021).

Heads (METHOD.md Sec. 4), all 1x1 convolutions on the stride-4 map:
- ``heatmaps``: K channels -> instance norm (no affine) -> ReLU;
- ``points``:   K channels -> sigmoid;
- ``edges``:    E channels -> sigmoid.
AAM: ``mask = E2H(edges) * points`` with the fixed edge-to-point 1x1 transform of the
scheme, ``fused = mask * heatmaps`` (what is decoded and distilled).

Decoders (``decoder=`` argument):
- ``"transposed"`` (teacher, METHOD.md): P5 -> 1x1 conv to ``channels`` -> transposed
  conv x4 (BN, ReLU) -> transposed conv x2 (BN, ReLU): stride 32 -> 8 -> 4 for any size.
- ``"nearest"`` (student reference): P5 upsampled x8 by nearest neighbor. All heads
  are per-pixel (1x1 convs, sigmoid, ReLU, AAM) and instance-norm statistics are
  unchanged by nearest replication, so the heads run on the stride-32 map and their
  outputs are upsampled: identical results at 1/64 of the head cost.
- ``"fpn"`` (student default, learned, int8-friendly): P5 projected to ``channels``, then
  three stages ``up x2 (nearest) + 1x1 lateral of P4 / P3 / P2 -> depthwise 3x3 -> 1x1``
  (BN + ReLU each): stride 32 -> 16 -> 8 -> 4. Gives the heads real stride-4 detail; the
  nearest decoder can only place a peak on an 8x8-pixel grid of the heatmap.
"""

from __future__ import annotations

from keras import layers

from fld.models.layers import FixedPointwise, InstanceNormalization
from fld.schemes import Scheme

DECODERS = ("transposed", "nearest", "fpn")


def _bn_relu(x, name):
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def transposed_decoder(pyramid: dict, channels: int = 256, name: str = "decoder"):
    """Teacher decoder: (B, S/32, S/32, C5) -> (B, S/4, S/4, channels)."""
    x = layers.Conv2D(channels, 1, name=f"{name}_in")(pyramid["P5"])
    x = layers.Conv2DTranspose(channels, 4, strides=4, use_bias=False, name=f"{name}_up1")(x)
    x = _bn_relu(x, f"{name}_up1")                                     # stride 8
    x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", use_bias=False,
                               name=f"{name}_up2")(x)
    return _bn_relu(x, f"{name}_up2")                                  # stride 4


def fpn_decoder(pyramid: dict, channels: int = 64, name: str = "decoder"):
    """Learned student decoder: (P2..P5) -> (B, S/4, S/4, channels), int8-friendly ops
    only (CONV_2D, DEPTHWISE_CONV_2D, RESIZE_NEAREST_NEIGHBOR, ADD, RELU)."""
    x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_in")(pyramid["P5"])
    x = _bn_relu(x, f"{name}_in")                                      # stride 32
    for level in ("P4", "P3", "P2"):
        prefix = f"{name}_{level.lower()}"
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_up")(x)
        lateral = layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_lateral")(pyramid[level])
        lateral = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{prefix}_lateral_bn")(lateral)
        x = layers.Add(name=f"{prefix}_add")([x, lateral])
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{prefix}_dw")(x)
        x = _bn_relu(x, f"{prefix}_dw")
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_pw")(x)
        x = _bn_relu(x, f"{prefix}_pw")                                # stride 16, 8, 4
    return x


def landmark_heads(features, scheme: Scheme, name: str = "head") -> dict:
    """The three heads and the AAM fusion on a feature map (B, h, w, C)."""
    k, e = scheme.num_points, scheme.num_edges
    heatmaps = layers.Conv2D(k, 1, name=f"{name}_heatmaps_conv")(features)
    heatmaps = InstanceNormalization(name=f"{name}_heatmaps_norm")(heatmaps)
    heatmaps = layers.ReLU(name="heatmaps")(heatmaps)                  # (B, h, w, K)
    points = layers.Conv2D(k, 1, activation="sigmoid", name="points")(features)
    outputs = {"heatmaps": heatmaps, "points": points}
    if e:
        edges = layers.Conv2D(e, 1, activation="sigmoid", name="edges")(features)  # (B, h, w, E)
        matrix, bias = scheme.edge_to_point()
        edge_attention = FixedPointwise(matrix, bias, name=f"{name}_edge_to_point")(edges)
        mask = layers.Multiply(name=f"{name}_mask")([edge_attention, points])
        outputs["edges"] = edges
    else:  # a scheme without edge groups: the point map alone is the mask.
        mask = points
    outputs["fused"] = layers.Multiply(name="fused")([mask, heatmaps])
    return outputs


def heatmap_generator(pyramid: dict, scheme: Scheme, decoder: str = "fpn",
                      channels: int = 64, return_features: bool = False) -> dict:
    """Decoder + heads: pyramid dict (P2..P5) -> dict of stride-4 maps.

    Args:
        pyramid: backbone outputs ``P2..P5`` (strides 4..32).
        scheme: landmark scheme (K points, E edges).
        decoder: one of ``DECODERS``.
        channels: decoder width (ignored by ``"nearest"``).
        return_features: also return the decoder's stride-4 map as ``features``
            (for feature distillation).
    Returns:
        dict with ``heatmaps`` (B, S/4, S/4, K), ``points`` (K), ``edges`` (E, when the
        scheme has edges), ``fused`` (K) and optionally ``features``.
    """
    if decoder == "transposed":
        features = transposed_decoder(pyramid, channels)
    elif decoder == "fpn":
        features = fpn_decoder(pyramid, channels)
    elif decoder == "nearest":
        low = landmark_heads(pyramid["P5"], scheme, name="head")       # stride 32
        up = {key: layers.UpSampling2D(8, interpolation="nearest", name=f"{key}_x8")(value)
              for key, value in low.items()}
        if return_features:
            up["features"] = layers.UpSampling2D(8, name="features")(pyramid["P5"])
        return up
    else:
        raise ValueError(f"unknown decoder {decoder!r}: use one of {DECODERS}")
    outputs = landmark_heads(features, scheme)
    if return_features:
        outputs["features"] = layers.Identity(name="features")(features)
    return outputs
