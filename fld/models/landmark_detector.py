"""``LandmarkDetector``: backbone + heatmap generator, built from a preset name, an
image size and a landmark scheme; and the preset table ``PRESETS``."""

from __future__ import annotations

import keras

from fld.models.heads import heatmap_generator
from fld.models.mobilevitv2 import MOBILEVITV2_PRESETS, MobileViTV2Backbone
from fld.models.swinv2 import SWINV2_PRESETS, SwinV2Backbone
from fld.schemes import Scheme, get_scheme, subset_indices

BACKBONES = {"swinv2": SwinV2Backbone, "mobilevitv2": MobileViTV2Backbone}

# name -> backbone family, backbone arguments, default decoder and its width.
PRESETS = {
    **{name: {"backbone": "swinv2", "config": cfg, "decoder": "transposed",
              "decoder_channels": 64 if name == "swinv2_cpu_window8_256" else 256}
       for name, cfg in SWINV2_PRESETS.items()},
    **{name: {"backbone": "mobilevitv2", "config": cfg, "decoder": "fpn",
              "decoder_channels": 64}
       for name, cfg in MOBILEVITV2_PRESETS.items()},
}


def list_presets() -> list[str]:
    """Names accepted by ``LandmarkDetector(preset=...)`` and ``build_backbone``."""
    return sorted(PRESETS)


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}: use one of {list_presets()}")
    return PRESETS[name]


def build_backbone(preset: str, image_size: int = 256, **overrides) -> keras.Model:
    """The backbone of a preset (a functional model returning ``P2..P5``); ``overrides``:
    backbone arguments in place of the preset's (e.g. ``attention_form="split"``)."""
    spec = _preset(preset)
    return BACKBONES[spec["backbone"]](image_size=image_size, name="backbone",
                                       **{**spec["config"], **overrides})


def _scheme_from_config(value) -> Scheme:
    return Scheme.from_dict(value) if isinstance(value, dict) else get_scheme(value)


@keras.saving.register_keras_serializable(package="fld")
class LandmarkDetector(keras.Model):
    """Backbone + heatmap generator (heads with AAM), a functional Keras model.

    Args:
        preset: a name from ``list_presets()``.
        image_size: input side S in pixels (a multiple of 64 for MobileViT-v2, of 32
            for SwinV2).
        scheme: scheme name, scheme JSON path, or a ``Scheme``.
        decoder: ``"transposed"``, ``"nearest"`` or ``"fpn"`` (default: the preset's).
        decoder_channels: decoder width (default: the preset's).
        return_features: also output the decoder's stride-4 ``features``.
        attention_form: MobileViT-v2 presets only: ``"fused"`` (default) or ``"split"``
            (``fld.models.mobilevitv2.ATTENTION_FORMS``: the same function; the export
            writes the split form, ``fld.export.split_attention``).
    Input: float32 (B, S, S, 3) NHWC images normalized to [-1, 1].
    Output: dict of float32 stride-4 maps: ``heatmaps`` (B, S/4, S/4, K), ``points``
        (K), ``edges`` (E), ``fused`` (K) [, ``features``].
    """

    def __init__(self, preset: str = "mobilevitv2_050", image_size: int = 256,
                 scheme="300w_68", decoder: str | None = None,
                 decoder_channels: int | None = None, return_features: bool = False,
                 attention_form: str | None = None, **kwargs):
        spec = _preset(preset)
        if attention_form is not None and spec["backbone"] != "mobilevitv2":
            raise ValueError(f"attention_form applies to MobileViT-v2 presets, not {preset!r}")
        scheme_obj = _scheme_from_config(scheme)
        decoder = decoder or spec["decoder"]
        decoder_channels = decoder_channels or spec["decoder_channels"]
        # === Functional graph ===
        backbone = build_backbone(preset, image_size, **(
            {} if attention_form is None else {"attention_form": attention_form}))
        images = keras.Input((image_size, image_size, 3), name="images")
        pyramid = backbone(images)
        outputs = heatmap_generator(pyramid, scheme_obj, decoder, decoder_channels,
                                    return_features)
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        # === Config ===
        self.preset = preset
        self.image_size = image_size
        self.scheme = scheme_obj
        self.decoder = decoder
        self.decoder_channels = decoder_channels
        self.return_features = return_features
        self.attention_form = attention_form
        self.backbone = backbone

    def get_config(self):
        builtin = get_scheme(self.scheme.name) if _is_builtin(self.scheme.name) else None
        return {
            "name": self.name, "trainable": self.trainable,
            "preset": self.preset, "image_size": self.image_size,
            "scheme": self.scheme.name if builtin == self.scheme
            else self.scheme.to_dict(),
            "decoder": self.decoder, "decoder_channels": self.decoder_channels,
            "return_features": self.return_features,
            **({} if self.attention_form is None else {"attention_form": self.attention_form}),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _is_builtin(name: str) -> bool:
    try:
        get_scheme(name)
        return True
    except ValueError:
        return False


def select_points(model: LandmarkDetector, scheme) -> keras.Model:
    """``model`` restricted to a subset scheme of its points (e.g. pair_51 from 300w_68).

    The AAM heads work per landmark channel (instance norm, mask and fusion), so keeping
    the subset's channels of ``fused`` gives exactly what the full model predicts for those
    points. Returns a functional model with the one output ``{"fused": ...}`` and a
    ``scheme`` attribute, which ``fld.export`` and ``fld.keras_engine`` accept.
    """
    target = _scheme_from_config(scheme)
    indices = [int(i) for i in subset_indices(model.scheme, target)]
    fused = keras.ops.take(model.output["fused"], indices, axis=-1)
    subset = keras.Model(model.inputs[0], {"fused": fused}, name=f"{model.name}_{target.name}")
    subset.scheme = target
    subset.point_indices = indices  # fld.export.capped_fused_model rebuilds the output
    return subset
