"""TFLite flatbuffers, read and rewritten with the TFLite schema's object API (the exporters'
side; the TensorFlow-free runtime reads its metadata with ``fld.runtime.metadata``).

Schema: tensorflow/lite/schema/schema.fbs, as generated Python (``ModelT`` ...). Buffers
are written 16-byte aligned, as the TFLite converter writes them.
"""

from __future__ import annotations

import numpy as np

from fld.runtime.tflite_file import check_tflite

BUFFER_ALIGNMENT = 16  # the TFLite converter's alignment of buffer data


def tflite_schema():
    """The generated TFLite schema module (TensorFlow's, else tflite-runtime's)."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # TF builds that ship the schema elsewhere
        from tflite_runtime import schema_py_generated as schema  # type: ignore
    return schema


def unpack_model(tflite_bytes: bytes, source: str = "model"):
    """(schema, ``ModelT``) of a TFLite flatbuffer; MetadataError if it is not one."""
    check_tflite(tflite_bytes, source)
    schema = tflite_schema()
    return schema, schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(tflite_bytes), 0))


def pack_model(model, size_hint: int = 0) -> bytes:
    """A ``ModelT`` back to flatbuffer bytes, buffers aligned like the converter's."""
    import flatbuffers

    model.buffers = [AlignedBuffer(b) for b in (model.buffers or [])]
    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def enum_names(enum) -> dict:
    """Value -> name of a schema enum class (``BuiltinOperator``, ``TensorType``)."""
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def builtin_names(schema) -> dict:
    return enum_names(schema.BuiltinOperator)


def tensor_type_names(schema) -> dict:
    return enum_names(schema.TensorType)


class AlignedBuffer:
    """A ``BufferT`` stand-in whose ``Pack`` writes its data 16-byte aligned."""

    def __init__(self, buffer):
        self.buffer = buffer.buffer if isinstance(buffer, AlignedBuffer) else buffer

    def Pack(self, builder):  # noqa: N802  (flatbuffers' naming)
        schema = tflite_schema()
        data = self.buffer.data
        data_offset = None
        if data is not None:
            raw = np.asarray(data, np.uint8).tobytes()
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        schema.BufferAddOffset(builder, self.buffer.offset)
        schema.BufferAddSize(builder, self.buffer.size)
        return schema.BufferEnd(builder)
