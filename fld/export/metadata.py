"""Writing the runtime's ``fld`` metadata into a ``.tflite`` (the exporters' side).

The keys are ``fld.runtime.metadata.ModelInfo``'s; the runtime reads them back without
TensorFlow (``fld.runtime.metadata.read_model_info``).
"""

from __future__ import annotations

import json

import numpy as np

from fld.export.flatbuffer import pack_model, unpack_model
from fld.runtime.metadata import METADATA_NAME, ModelInfo
from fld.runtime.tflite_file import check_tflite


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
    check_tflite(tflite_bytes, "embed_metadata input")
    schema, model = unpack_model(tflite_bytes, "embed_metadata input")
    buffers = list(model.buffers or [])
    if any(b.offset > 1 for b in buffers):
        raise ValueError("embed_metadata: models with weights stored after the flatbuffer "
                         "(> 2 GB) are not supported")
    entries = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    new_buffer = schema.BufferT()
    new_buffer.data = np.frombuffer(bytes(payload), np.uint8)
    buffers.append(new_buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(buffers) - 1
    model.buffers = buffers
    model.metadata = entries + [entry]
    return pack_model(model, len(tflite_bytes) + len(payload))


def _name(name) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
