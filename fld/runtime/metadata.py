"""Model metadata carried inside the ``.tflite`` file, and a TensorFlow-free reader.

A converted landmark model carries everything the runtime needs to use it correctly
(input size, heatmap stride, landmark scheme, crop rule, normalization, decoding, the
detector-box mapping, a subset model's crop box) as UTF-8 JSON in a TFLite flatbuffer ``metadata`` entry named
``fld``. ``fld.export.metadata.embed_metadata`` writes it (TensorFlow side);
``read_metadata`` below reads it with a small hand-written flatbuffer reader, so the
runtime needs neither TensorFlow nor the ``flatbuffers`` package.

The keys are defined once, by ``ModelInfo`` (``to_dict`` / ``from_dict``), versioned
``"format": "fld/1"``.

The flatbuffer side (the identifier, the ``metadata`` entries) is ``fld.runtime.tflite_file``;
``MetadataError`` is re-exported here.

No TensorFlow: ``json`` (plus ``fld.schemes`` / ``fld.codec``, numpy).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from typing import Optional, Sequence

from fld.codec import (DECODE_METHODS, DEFAULT_DECODE, DEFAULT_DECODE_RADIUS, DEFAULT_STRIDE,
                       HeatmapCodec)
from fld.crop import DEFAULT_CROP_SCALE
from fld.runtime.crop_box import MAX_PASSES, CropBox
from fld.runtime.tflite_file import MetadataError, read_metadata_entries
from fld.schemes import Scheme

METADATA_NAME = "fld"
FORMAT = "fld/1"
NORMALIZATION = "x/127.5-1"
# The key of the same field in format-1 files written before the American spelling; read only.
LEGACY_NORMALIZATION_KEY = "normalisation"
QUANTIZATIONS = ("int8", "float16", "dynamic", "none")   # export modes, also the flags'


# --- the keys ---------------------------------------------------------------------------


# Limits on what a model file's metadata may say (checked on read: a value outside them
# would make the runtime allocate without bound, divide by zero or return garbage).
LIMITS = {
    "image_size": (8, 4096),        # pixels; also a multiple of the stride
    "stride": (1, 64),
    "crop_scale": (0.5, 4.0),       # crop side / box side
    "decode.radius": (0, None),     # cells; at most the heatmap side (set per model)
    "box_mapping.dx": (-1.0, 1.0),  # box-side fractions
    "box_mapping.dy": (-1.0, 1.0),
    "box_mapping.sx": (0.1, 10.0),
    "box_mapping.sy": (0.1, 10.0),
    "crop_box.dx": (-1.0, 1.0),     # box-side fractions, as box_mapping's
    "crop_box.dy": (-1.0, 1.0),
    "crop_box.sx": (0.1, 10.0),
    "crop_box.sy": (0.1, 10.0),
    "crop_box.passes": (1, MAX_PASSES),
    "fine_output.ratio": (1.0, 1e4),   # exclusive at 1
}
MAX_METADATA_BYTES = 1 << 20


def _checked(value, field: str, integer: bool, high=None):
    """``value`` as an int / float within ``LIMITS[field]`` (``high`` overrides the top),
    or MetadataError naming the field."""
    low, top = LIMITS[field]
    top = top if high is None else high
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer
                                                 else numbers.Real):
        raise MetadataError(f"metadata field '{field}' must be {kind}, got {value!r:.60}")
    if not math.isfinite(value) or value < low or (top is not None and value > top) or \
            (field == "fine_output.ratio" and value <= low):
        raise MetadataError(f"metadata field '{field}' = {value!r:.60} is outside "
                            f"[{low}, {top}]")
    return value


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the runtime must know about a landmark model.

    Attributes:
        image_size: side S of the square input crop (input tensor (1, S, S, 3); (2, S, S,
            3) with ``flip_pair``).
        stride: input pixels per heatmap cell (output (1, S/stride, S/stride, K), batch
            2 with ``flip_pair``).
        scheme: the landmark scheme (K = ``scheme.num_points``).
        crop_scale: the crop rule's margin (``fld.crop.crop_matrix``'s ``scale``).
        normalization: input pixel normalization; only ``"x/127.5-1"`` is defined.
        output: which model output the file holds (``"fused"`` heatmaps).
        decode_method / decode_radius: host-side decoding (``fld.codec.decode_numpy``).
        quantization: ``int8`` / ``float16`` / ``dynamic`` / ``none``.
        box_mapping: optional (dx, dy, sx, sy) mapping of the Haar face detector's
            boxes onto landmark boxes (see ``fld.runtime.detector.BoxMapping``).
        fine_output: int8 two-range output (``fld.export.capped_fused_model``): the name
            of the second output tensor, which holds the same maps times ``ratio`` with
            its own int8 range (clipped where the first output's values exceed
            1/ratio of its top), and ``ratio``. None = one output tensor.
        flip_pair: the model takes a batch of two, the crop and its mirror image, and
            returns both crops' maps (``fld.export.convert``'s ``flip_pair``): flip test
            in one invoke; the runtime mirrors the second prediction back and averages.
        crop_box: optional ``fld.runtime.crop_box.CropBox``: a subset-points model's
            map from the tight box of its own points onto the box its training crops
            framed, and the runtime's passes (``Landmarker.crop`` / ``predict``). None =
            the box is cropped as given (every file written before it).
        extra: any other keys found in the JSON (kept on a round trip).
    """

    image_size: int
    scheme: Scheme
    stride: int = DEFAULT_STRIDE
    crop_scale: float = DEFAULT_CROP_SCALE
    normalization: str = NORMALIZATION
    output: str = "fused"
    decode_method: str = DEFAULT_DECODE
    decode_radius: int = DEFAULT_DECODE_RADIUS
    quantization: str = "int8"
    box_mapping: Optional[tuple[float, float, float, float]] = None
    fine_output: Optional[tuple[str, float]] = None
    flip_pair: bool = False
    crop_box: Optional[CropBox] = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _checked(self.image_size, "image_size", integer=True)
        _checked(self.stride, "stride", integer=True)
        if self.image_size % self.stride:
            raise MetadataError(f"metadata field 'image_size' = {self.image_size} is not a "
                                f"multiple of stride {self.stride}")
        _checked(self.crop_scale, "crop_scale", integer=False)
        _checked(self.decode_radius, "decode.radius", integer=True,
                 high=self.image_size // self.stride)
        if self.normalization != NORMALIZATION:
            raise MetadataError(f"unknown normalization {self.normalization!r} "
                                f"(this runtime knows {NORMALIZATION!r})")
        if self.quantization not in QUANTIZATIONS:
            raise MetadataError(f"unknown quantization {self.quantization!r}: "
                                f"use one of {QUANTIZATIONS}")
        if self.decode_method not in DECODE_METHODS:
            raise MetadataError(f"unknown decode method {self.decode_method!r}: use one of "
                                f"{DECODE_METHODS}")
        if self.box_mapping is not None:
            if len(self.box_mapping) != 4:
                raise MetadataError(f"metadata field 'box_mapping' needs 4 numbers (dx, dy, "
                                    f"sx, sy), got {self.box_mapping}")
            for name, value in zip(("dx", "dy", "sx", "sy"), self.box_mapping):
                _checked(value, f"box_mapping.{name}", integer=False)
        if self.fine_output is not None:
            if len(self.fine_output) != 2 or not isinstance(self.fine_output[0], str):
                raise MetadataError(f"metadata field 'fine_output' needs (tensor name, "
                                    f"ratio), got {self.fine_output}")
            _checked(self.fine_output[1], "fine_output.ratio", integer=False)
        if self.crop_box is not None:
            for name, value in zip(("dx", "dy", "sx", "sy"), self.crop_box.mapping.as_tuple()):
                _checked(value, f"crop_box.{name}", integer=False)
            _checked(self.crop_box.passes, "crop_box.passes", integer=True)
            rows = None if self.crop_box.points_map is None else len(self.crop_box.points_map)
            if rows is not None and rows != 2 * self.scheme.num_points + 1:
                raise MetadataError(f"metadata field 'crop_box.points_map' has {rows} rows, "
                                    f"scheme {self.scheme.name!r} needs "
                                    f"{2 * self.scheme.num_points + 1}")

    @property
    def heatmap_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_points(self) -> int:
        return self.scheme.num_points

    @functools.cached_property
    def codec(self) -> HeatmapCodec:
        """The heatmap codec of this model (scheme, input size, stride): its cell <->
        crop-pixel rule and decoders are the ones training used."""
        return HeatmapCodec(self.scheme, image_size=self.image_size, stride=self.stride)

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({
            "format": FORMAT,
            "image_size": self.image_size,
            "stride": self.stride,
            "scheme": self.scheme.to_dict(),
            "crop_scale": self.crop_scale,
            "normalization": self.normalization,
            "output": self.output,
            "decode": {"method": self.decode_method, "radius": self.decode_radius},
            "quantization": self.quantization,
        })
        if self.box_mapping is not None:
            out["box_mapping"] = [float(v) for v in self.box_mapping]
        if self.fine_output is not None:
            out["fine_output"] = {"tensor": str(self.fine_output[0]),
                                  "ratio": float(self.fine_output[1])}
        if self.flip_pair:
            out["flip_pair"] = True
        if self.crop_box is not None:
            out["crop_box"] = self.crop_box.to_dict()
        return out

    @classmethod
    def from_dict(cls, meta: dict) -> "ModelInfo":
        """Parses the JSON dict; raises MetadataError on a wrong format or key."""
        if not isinstance(meta, dict):
            raise MetadataError(f"fld metadata must be a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT:
            raise MetadataError(f"fld metadata format {meta.get('format')!r} is not "
                                f"{FORMAT!r} (written by a newer or older fld?)")
        known = {"format", "image_size", "stride", "scheme", "crop_scale", "normalization",
                 LEGACY_NORMALIZATION_KEY,
                 "output", "decode", "quantization", "box_mapping", "fine_output",
                 "flip_pair", "crop_box"}
        try:
            decode = meta.get("decode") or {}
            mapping = meta.get("box_mapping")
            fine = meta.get("fine_output")
            crop_box = meta.get("crop_box")
            return cls(
                image_size=meta["image_size"],
                scheme=Scheme.from_dict(meta["scheme"]),
                stride=meta.get("stride", DEFAULT_STRIDE),
                crop_scale=meta.get("crop_scale", DEFAULT_CROP_SCALE),
                normalization=str(meta.get("normalization",
                                           meta.get(LEGACY_NORMALIZATION_KEY, NORMALIZATION))),
                output=str(meta.get("output", "fused")),
                decode_method=str(decode.get("method", DEFAULT_DECODE)),
                decode_radius=decode.get("radius", DEFAULT_DECODE_RADIUS),
                quantization=str(meta.get("quantization", "none")),
                box_mapping=None if mapping is None else tuple(mapping),
                fine_output=(None if fine is None else (fine["tensor"], fine["ratio"])),
                flip_pair=_flag(meta.get("flip_pair", False), "flip_pair"),
                crop_box=None if crop_box is None else CropBox.from_dict(crop_box),
                extra={k: v for k, v in meta.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, MetadataError):
                raise
            raise MetadataError(f"malformed fld metadata ({type(e).__name__}: {e})") from None


def _flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise MetadataError(f"malformed fld metadata ({key} must be true or false, got "
                            f"{value!r})")
    return value


def read_metadata(tflite_bytes: bytes, source: str = "model") -> dict:
    """The ``fld`` metadata of a TFLite model as a dict (the parsed JSON).

    Raises MetadataError when the bytes are not a TFLite model or carry no ``fld``
    entry (``source`` names the file in the message).
    """
    entries = read_metadata_entries(tflite_bytes, source)
    if METADATA_NAME not in entries:
        found = ", ".join(sorted(entries)) or "none"
        raise MetadataError(
            f"{source}: no '{METADATA_NAME}' metadata in this TFLite model (entries: {found}); "
            f"convert it with fld's exporter or add it with "
            f"fld.export.metadata.embed_metadata")
    return parse_metadata_json(entries[METADATA_NAME], source)


def parse_metadata_json(data: bytes, source: str = "model") -> dict:
    """The ``fld`` metadata payload (UTF-8 JSON, at most ``MAX_METADATA_BYTES``) -> dict;
    NaN / Infinity and pathological nesting are MetadataErrors naming ``source``."""
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"{source}: '{METADATA_NAME}' metadata is {len(data)} bytes "
                            f"(more than {MAX_METADATA_BYTES}): not written by fld")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise MetadataError(
            f"{source}: '{METADATA_NAME}' metadata is not UTF-8 JSON ({e})") from None
    except RecursionError:
        raise MetadataError(f"{source}: '{METADATA_NAME}' metadata JSON is nested too "
                            f"deeply: not written by fld") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number fld writes")


def read_model_info(tflite_bytes: bytes, source: str = "model") -> ModelInfo:
    """``ModelInfo`` parsed from a model's ``fld`` metadata."""
    try:
        return ModelInfo.from_dict(read_metadata(tflite_bytes, source))
    except MetadataError as e:
        message = str(e)
        prefixed = message if message.startswith(source) else f"{source}: {message}"
        raise MetadataError(prefixed) from None


def make_model_info(scheme, image_size: int = 256, stride: int = DEFAULT_STRIDE,
                    quantization: str = "int8", crop_scale: float = DEFAULT_CROP_SCALE,
                    decode_method: str = DEFAULT_DECODE, decode_radius: int = DEFAULT_DECODE_RADIUS,
                    box_mapping: Optional[Sequence[float]] = None) -> ModelInfo:
    """Convenience constructor taking a scheme name / path / ``Scheme``."""
    from fld.schemes import get_scheme

    return ModelInfo(image_size=image_size, scheme=get_scheme(scheme), stride=stride,
                     crop_scale=crop_scale, decode_method=decode_method,
                     decode_radius=decode_radius, quantization=quantization,
                     box_mapping=None if box_mapping is None else tuple(box_mapping))
