"""Model metadata carried inside the ``.tflite`` file, and a TensorFlow-free reader.

A converted landmark model carries everything the runtime needs to use it correctly
(input size, heatmap stride, landmark scheme, crop rule, normalisation, decoding, the
detector-box mapping) as UTF-8 JSON in a TFLite flatbuffer ``metadata`` entry named
``fld``. ``fld.export_metadata.embed_metadata`` writes it (TensorFlow side);
``read_metadata`` below reads it with a small hand-written flatbuffer reader, so the
runtime needs neither TensorFlow nor the ``flatbuffers`` package.

The keys are defined once, by ``ModelInfo`` (``to_dict`` / ``from_dict``), versioned
``"format": "fld/1"``.

Flatbuffer layout used (TFLite schema, tensorflow/lite/schema/schema.fbs; binary format:
https://flatbuffers.dev/internals/): the file starts with a uint32 offset to the root
``Model`` table and the 4-byte identifier ``TFL3``. ``Model`` field 4 = ``buffers``
(vector of ``Buffer`` tables), field 6 = ``metadata`` (vector of ``Metadata`` tables
``{name: string (field 0), buffer: uint32 (field 1)}``). ``Buffer`` field 0 = ``data``
([ubyte]); for models over 2 GB the data lives after the flatbuffer at field 1
``offset`` (uint64, from the start of the file) with field 2 ``size`` (uint64).

No TensorFlow: ``struct`` and ``json`` (plus ``fld.schemes`` / ``fld.codec``, numpy).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Optional, Sequence

from fld.codec import DECODE_METHODS
from fld.crop import DEFAULT_CROP_SCALE
from fld.schemes import Edge, Scheme

METADATA_NAME = "fld"
FORMAT = "fld/1"
NORMALISATION = "x/127.5-1"
QUANTIZATIONS = ("int8", "float16", "dynamic", "none")
TFLITE_IDENTIFIER = b"TFL3"


class MetadataError(ValueError):
    """A file that is not a TFLite model, or has no (or malformed) ``fld`` metadata."""


# --- the keys ---------------------------------------------------------------------------


def scheme_to_dict(scheme: Scheme) -> dict:
    """A scheme as plain JSON types (edges as ``{name, points, closed}``)."""
    return {
        "name": scheme.name,
        "num_points": scheme.num_points,
        "flip_perm": list(scheme.flip_perm),
        "io_indices": list(scheme.io_indices),
        "pupils": [list(p) for p in scheme.pupils],
        "edges": [{"name": e.name, "points": list(e.points), "closed": e.closed}
                  for e in scheme.edges],
    }


def scheme_from_dict(spec: dict) -> Scheme:
    """Rebuilds a ``Scheme`` from ``scheme_to_dict``'s output (validated by Scheme)."""
    return Scheme(
        name=str(spec["name"]),
        num_points=int(spec["num_points"]),
        flip_perm=tuple(int(i) for i in spec["flip_perm"]),
        io_indices=tuple(int(i) for i in spec["io_indices"]),
        pupils=tuple(tuple(int(i) for i in p) for p in spec["pupils"]),
        edges=tuple(Edge(str(e["name"]), tuple(int(i) for i in e["points"]),
                         bool(e.get("closed", False))) for e in spec.get("edges", [])),
    )


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
        normalisation: input pixel normalisation; only ``"x/127.5-1"`` is defined.
        output: which model output the file holds (``"fused"`` heatmaps).
        decode_method / decode_radius: host-side decoding (``fld.codec.decode_numpy``).
        quantization: ``int8`` / ``float16`` / ``dynamic`` / ``none``.
        box_mapping: optional (dx, dy, sx, sy) mapping of the default face detector's
            boxes onto landmark boxes (see ``fld.runtime.detector.BoxMapping``).
        fine_output: int8 two-range output (``fld.export.capped_fused_model``): the name
            of the second output tensor, which holds the same maps times ``ratio`` with
            its own int8 range (clipped where the first output's values exceed
            1/ratio of its top), and ``ratio``. None = one output tensor.
        flip_pair: the model takes a batch of two, the crop and its mirror image, and
            returns both crops' maps (``fld.export.convert``'s ``flip_pair``): flip test
            in one invoke; the runtime mirrors the second prediction back and averages.
        extra: any other keys found in the JSON (kept on a round trip).
    """

    image_size: int
    scheme: Scheme
    stride: int = 4
    crop_scale: float = DEFAULT_CROP_SCALE
    normalisation: str = NORMALISATION
    output: str = "fused"
    decode_method: str = "local_soft_argmax"
    decode_radius: int = 2
    quantization: str = "int8"
    box_mapping: Optional[tuple[float, float, float, float]] = None
    fine_output: Optional[tuple[str, float]] = None
    flip_pair: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.image_size <= 0 or self.stride <= 0 or self.image_size % self.stride:
            raise MetadataError(f"image_size {self.image_size} must be a positive multiple "
                                f"of stride {self.stride}")
        if self.normalisation != NORMALISATION:
            raise MetadataError(f"unknown normalisation {self.normalisation!r} "
                                f"(this runtime knows {NORMALISATION!r})")
        if self.quantization not in QUANTIZATIONS:
            raise MetadataError(f"unknown quantization {self.quantization!r}: "
                                f"use one of {QUANTIZATIONS}")
        if self.decode_method not in DECODE_METHODS:
            raise MetadataError(f"unknown decode method {self.decode_method!r}: use one of "
                                f"{DECODE_METHODS}")
        if self.box_mapping is not None and len(self.box_mapping) != 4:
            raise MetadataError(f"box_mapping needs 4 numbers, got {self.box_mapping}")
        if self.fine_output is not None and (len(self.fine_output) != 2
                                             or not float(self.fine_output[1]) > 1):
            raise MetadataError(f"fine_output needs (tensor name, ratio > 1), got "
                                f"{self.fine_output}")

    @property
    def heatmap_size(self) -> int:
        return self.image_size // self.stride

    @property
    def num_points(self) -> int:
        return self.scheme.num_points

    def to_dict(self) -> dict:
        out = dict(self.extra)
        out.update({
            "format": FORMAT,
            "image_size": self.image_size,
            "stride": self.stride,
            "scheme": scheme_to_dict(self.scheme),
            "crop_scale": self.crop_scale,
            "normalisation": self.normalisation,
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
        return out

    @classmethod
    def from_dict(cls, meta: dict) -> "ModelInfo":
        """Parses the JSON dict; raises MetadataError on a wrong format or key."""
        if not isinstance(meta, dict):
            raise MetadataError(f"fld metadata must be a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT:
            raise MetadataError(f"fld metadata format {meta.get('format')!r} is not "
                                f"{FORMAT!r} (written by a newer or older fld?)")
        known = {"format", "image_size", "stride", "scheme", "crop_scale", "normalisation",
                 "output", "decode", "quantization", "box_mapping", "fine_output",
                 "flip_pair"}
        try:
            decode = meta.get("decode") or {}
            mapping = meta.get("box_mapping")
            fine = meta.get("fine_output")
            return cls(
                image_size=int(meta["image_size"]),
                scheme=scheme_from_dict(meta["scheme"]),
                stride=int(meta.get("stride", 4)),
                crop_scale=float(meta.get("crop_scale", DEFAULT_CROP_SCALE)),
                normalisation=str(meta.get("normalisation", NORMALISATION)),
                output=str(meta.get("output", "fused")),
                decode_method=str(decode.get("method", "local_soft_argmax")),
                decode_radius=int(decode.get("radius", 2)),
                quantization=str(meta.get("quantization", "none")),
                box_mapping=None if mapping is None else tuple(float(v) for v in mapping),
                fine_output=(None if fine is None
                             else (str(fine["tensor"]), float(fine["ratio"]))),
                flip_pair=_flag(meta.get("flip_pair", False), "flip_pair"),
                extra={k: v for k, v in meta.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, MetadataError):
                raise
            raise MetadataError(f"malformed fld metadata ({type(e).__name__}: {e})") from None


def _flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise MetadataError(f"malformed fld metadata ({key} must be true or false, got "
                            f"{value!r})")
    return value


# --- the flatbuffer reader --------------------------------------------------------------


class _Reader:
    """Minimal read-only flatbuffer access (little-endian, bounds-checked)."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)

    def _unpack(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise MetadataError(f"truncated or corrupt flatbuffer (read at {pos})")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def table_field(self, table: int, field: int) -> Optional[int]:
        """Absolute position of a table's field, or None when absent (default)."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        entry = 4 + 2 * field
        if entry + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + entry)
        return table + offset if offset else None

    def scalar(self, table: int, field: int, fmt: str, default=0):
        pos = self.table_field(table, field)
        return default if pos is None else self._unpack(fmt, pos)

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, field: int) -> tuple[int, int]:
        """(start of elements, length) of a vector field; (0, 0) when absent."""
        pos = self.table_field(table, field)
        if pos is None:
            return 0, 0
        vec = self.indirect(pos)
        return vec + 4, self.u32(vec)

    def tables(self, table: int, field: int) -> list[int]:
        start, length = self.vector(table, field)
        return [self.indirect(start + 4 * i) for i in range(length)]

    def string(self, table: int, field: int) -> Optional[str]:
        start, length = self.vector(table, field)
        if self.table_field(table, field) is None:
            return None
        return self.bytes_at(start, length).decode("utf-8", "replace")

    def bytes_at(self, start: int, length: int) -> bytes:
        if start < 0 or start + length > len(self.data):
            raise MetadataError(
                f"truncated or corrupt flatbuffer (bytes {start}..{start + length})")
        return bytes(self.data[start:start + length])


def check_tflite(tflite_bytes: bytes, source: str = "model") -> None:
    """Raises MetadataError unless the bytes carry the TFLite identifier ``TFL3``."""
    if len(tflite_bytes) < 8 or bytes(tflite_bytes[4:8]) != TFLITE_IDENTIFIER:
        raise MetadataError(f"{source}: not a TFLite model (no 'TFL3' identifier at bytes 4..8)")


def read_metadata_entries(tflite_bytes: bytes, source: str = "model") -> dict[str, bytes]:
    """All ``metadata`` entries of a TFLite model as {name: buffer bytes}."""
    check_tflite(tflite_bytes, source)
    reader = _Reader(tflite_bytes)
    try:
        model = reader.indirect(0)
        buffers = reader.tables(model, 4)
        entries = {}
        for entry in reader.tables(model, 6):
            name = reader.string(entry, 0)
            index = reader.scalar(entry, 1, "<I")
            if name is None or index >= len(buffers):
                continue
            buffer = buffers[index]
            start, length = reader.vector(buffer, 0)
            if length:
                entries[name] = reader.bytes_at(start, length)
            else:  # data stored after the flatbuffer (models > 2 GB)
                offset = reader.scalar(buffer, 1, "<Q")
                size = reader.scalar(buffer, 2, "<Q")
                entries[name] = reader.bytes_at(offset, size) if offset > 1 else b""
        return entries
    except MetadataError as e:
        raise MetadataError(f"{source}: {e}") from None


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
            f"fld.export_metadata.embed_metadata")
    try:
        return json.loads(entries[METADATA_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetadataError(
            f"{source}: '{METADATA_NAME}' metadata is not UTF-8 JSON ({e})") from None


def read_model_info(tflite_bytes: bytes, source: str = "model") -> ModelInfo:
    """``ModelInfo`` parsed from a model's ``fld`` metadata."""
    try:
        return ModelInfo.from_dict(read_metadata(tflite_bytes, source))
    except MetadataError as e:
        message = str(e)
        prefixed = message if message.startswith(source) else f"{source}: {message}"
        raise MetadataError(prefixed) from None


def make_model_info(scheme, image_size: int = 256, stride: int = 4,
                    quantization: str = "int8", crop_scale: float = DEFAULT_CROP_SCALE,
                    decode_method: str = "local_soft_argmax", decode_radius: int = 2,
                    box_mapping: Optional[Sequence[float]] = None) -> ModelInfo:
    """Convenience constructor taking a scheme name / path / ``Scheme``."""
    from fld.schemes import get_scheme

    return ModelInfo(image_size=image_size, scheme=get_scheme(scheme), stride=stride,
                     crop_scale=crop_scale, decode_method=decode_method,
                     decode_radius=decode_radius, quantization=quantization,
                     box_mapping=None if box_mapping is None else tuple(box_mapping))
