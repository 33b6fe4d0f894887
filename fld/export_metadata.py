"""Embeds the runtime's ``fld`` metadata (UTF-8 JSON) into a ``.tflite`` flatbuffer.

TensorFlow side: uses the TFLite schema's generated object API
(``tensorflow.lite.python.schema_py_generated``): unpack the model, append one buffer
holding the JSON and a ``metadata`` entry ``{name: "fld", buffer: index}`` (replacing
an earlier ``fld`` entry), pack it again with the ``TFL3`` identifier. Everything
else (subgraphs, tensors, operators, weights, signatures, other metadata such as
``min_runtime_version``) is carried over unchanged; weight buffers are re-packed
16-byte aligned as the TFLite converter writes them. The reader is
``fld.runtime.metadata.read_metadata`` (TensorFlow-free).

    tflite = embed_metadata(tflite, make_model_info("300w_68", quantization="int8").to_dict())
"""

from __future__ import annotations

import json

import numpy as np

from fld.runtime.metadata import (  # noqa: F401  (make_model_info re-exported for exporters)
    METADATA_NAME, ModelInfo, check_tflite, make_model_info)

_BUFFER_ALIGNMENT = 16  # the TFLite converter's alignment of buffer data


def _schema():
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # TF builds that ship the schema elsewhere
        from tflite_runtime import schema_py_generated as schema  # type: ignore
    return schema


class _AlignedBuffer:
    """A ``BufferT`` stand-in whose ``Pack`` writes its data 16-byte aligned."""

    def __init__(self, buffer):
        self.buffer = buffer

    def Pack(self, builder):  # noqa: N802  (flatbuffers' naming)
        schema = _schema()
        data = self.buffer.data
        data_offset = None
        if data is not None:
            raw = np.asarray(data, np.uint8).tobytes()
            builder.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        schema.BufferAddOffset(builder, self.buffer.offset)
        schema.BufferAddSize(builder, self.buffer.size)
        return schema.BufferEnd(builder)


def embed_metadata(tflite_bytes: bytes, meta) -> bytes:
    """Returns the model with ``meta`` (a dict or ``ModelInfo``) stored as ``fld`` metadata.

    The dict is validated by ``ModelInfo.from_dict`` first, so a model never carries
    metadata the runtime cannot read. Raises ValueError for a non-TFLite input or a
    model whose weights live outside the flatbuffer (> 2 GB models).
    """
    if isinstance(meta, ModelInfo):
        meta = meta.to_dict()
    ModelInfo.from_dict(meta)
    return embed_metadata_bytes(tflite_bytes, json.dumps(meta, sort_keys=True).encode("utf-8"))


def embed_metadata_bytes(tflite_bytes: bytes, payload: bytes) -> bytes:
    """Returns the model with ``payload`` stored as its ``fld`` metadata entry, as given
    (no validation: ``embed_metadata`` is the exporters' entry point)."""
    import flatbuffers

    check_tflite(tflite_bytes, "embed_metadata input")
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(tflite_bytes), 0))
    buffers = list(model.buffers or [])
    if any(b.offset > 1 for b in buffers):
        raise ValueError("embed_metadata: models with weights stored after the flatbuffer "
                         "(> 2 GB) are not supported")

    payload = np.frombuffer(bytes(payload), np.uint8)
    entries = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    new_buffer = schema.BufferT()
    new_buffer.data = payload
    buffers.append(new_buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(buffers) - 1
    model.buffers = [_AlignedBuffer(b) for b in buffers]
    model.metadata = entries + [entry]

    builder = flatbuffers.Builder(len(tflite_bytes) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _name(name) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
