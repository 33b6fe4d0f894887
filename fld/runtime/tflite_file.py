"""A TFLite file as bytes: its identifier and its ``metadata`` entries, read with a small
bounds-checked flatbuffer reader (no TensorFlow, no ``flatbuffers`` package).

Layout (TFLite schema, tensorflow/lite/schema/schema.fbs; binary format:
https://flatbuffers.dev/internals/): a uint32 offset to the root ``Model`` table, then
the identifier ``TFL3``. ``Model`` field 4 = ``buffers`` (vector of ``Buffer`` tables),
field 6 = ``metadata`` (vector of ``Metadata`` tables ``{name: string (field 0), buffer:
uint32 (field 1)}``). ``Buffer`` field 0 = ``data`` ([ubyte]); for models over 2 GB the
data lives after the flatbuffer at field 1 ``offset`` (uint64) with field 2 ``size``.
"""

from __future__ import annotations

import struct
from typing import Optional

TFLITE_IDENTIFIER = b"TFL3"


class MetadataError(ValueError):
    """A file that is not a TFLite model, or has no (or malformed) ``fld`` metadata."""


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
