"""The MobileViT-v2 attention's input projection written as two convolutions for export.

The reference form ("fused") projects the tokens to query, keys and values with one 1x1
conv and slices its output; in an int8 ``.tflite`` that costs three STRIDED_SLICEs and a
RELU per attention block, and XNNPACK takes no int8 RELU, so each one runs in TFLite's
builtin kernel between two delegate partitions (~10% of the fast model's invoke:
docs/experiments/2026-12-07-fast-preset-profile.md). The "split" form computes the same
function with a q+k conv and a v conv whose ReLU fuses into it
(``fld.models.mobilevitv2.ATTENTION_FORMS``). Training keeps the fused form; ``tools/
convert.py`` exports the split one, and ``fld.export.tflite_weights`` merges the two
kernels back when it reads a ``.tflite``.
"""

from __future__ import annotations

import numpy as np

# The split form's two layers per block, named after the fused layer "<prefix>_qkv".
QK_SUFFIX, V_SUFFIX, QKV_SUFFIX = "_qk", "_v", "_qkv"


def _weighted_layers(model) -> dict:
    from fld.models.layers import leaf_layers

    return {layer.name: layer for layer in leaf_layers(model) if layer.weights}


def split_attention(model, check: bool = True):
    """``model`` (a MobileViT-v2 ``LandmarkDetector`` in the fused form) rebuilt in the
    split form with the same weights; any other model is returned as it is.

    ``check``: verify on a random batch that both give the same outputs (to 1e-4 of the
    output range), else ValueError: a wrong split must never reach a ``.tflite``."""
    import keras

    from fld.models import LandmarkDetector

    if not isinstance(model, LandmarkDetector) or \
            getattr(model.backbone, "attention_form", None) != "fused":
        return model
    config = {**model.get_config(), "attention_form": "split"}
    config.pop("name", None)
    split = LandmarkDetector(**config, name=model.name)
    source = _weighted_layers(model)
    for name, layer in _weighted_layers(split).items():
        if name in source:
            layer.set_weights(source[name].get_weights())
            continue
        for suffix in (QK_SUFFIX, V_SUFFIX):
            if name.endswith(suffix) and name[:-len(suffix)] + QKV_SUFFIX in source:
                kernel, bias = source[name[:-len(suffix)] + QKV_SUFFIX].get_weights()
                d = (kernel.shape[-1] - 1) // 2
                part = slice(0, 1 + d) if suffix == QK_SUFFIX else slice(1 + d, None)
                layer.set_weights([kernel[..., part], bias[part]])
                break
        else:
            raise ValueError(f"split_attention: no weights for layer {name!r}")
    if check:
        size = model.image_size
        images = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        want, got = model(images, training=False), split(images, training=False)
        for key in want:
            a, b = keras.ops.convert_to_numpy(want[key]), keras.ops.convert_to_numpy(got[key])
            scale = max(float(np.abs(a).max()), 1e-6)
            if float(np.abs(a - b).max()) > 1e-4 * scale:
                raise ValueError(f"split_attention: output {key!r} differs by "
                                 f"{float(np.abs(a - b).max()):.3g} (range {scale:.3g})")
    return split


def merge_split_kernels(found: dict) -> dict:
    """``fld.export.tflite_weights.read_tflite_tensors``'s layers with every split pair
    ``<prefix>_qk`` + ``<prefix>_v`` merged into the fused ``<prefix>_qkv`` layer."""
    merged = dict(found)
    for name in [n for n in found if n.endswith(QK_SUFFIX)]:
        prefix = name[:-len(QK_SUFFIX)]
        value = found.get(prefix + V_SUFFIX)
        if value is None or "kernel" not in found[name] or "kernel" not in value:
            continue
        qk = found[name]
        merged[prefix + QKV_SUFFIX] = {
            "kernel": np.concatenate([qk["kernel"], value["kernel"]], axis=-1),
            "bias": (None if qk["bias"] is None or value["bias"] is None
                     else np.concatenate([qk["bias"], value["bias"]])),
            "op": qk["op"], "bias_owners": set()}
        del merged[name], merged[prefix + V_SUFFIX]
    return merged
