"""A TFLite model cut into one-operator models, for timing each operator alone
(``fld.runtime.op_profile``; ``tools/benchmark.py --op_profile``).

Each one-op model keeps the operator's own tensors (shapes, types, quantization) and
constant weights; every other buffer is left out, so the models are small. The operator's
non-constant inputs become the model's inputs (fed with the values the whole model
computes), its outputs the model's outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from fld.export.flatbuffer import builtin_names, pack_model, tensor_type_names, unpack_model

# Operators that call other subgraphs: they cannot run alone.
_CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE")


@dataclass(frozen=True)
class OpModel:
    """One operator of the whole model as a model of its own.

    index: position in the whole model's operator list; op_type: e.g. ``CONV_2D``;
    inputs: the whole model's tensor indices that feed the one-op model's inputs, in
    input order; output: 'TYPE[d0,d1,...]' of the first output; name: that tensor's name
    (the converter's, from the Keras layer); tflite: the bytes."""
    index: int
    op_type: str
    inputs: tuple
    output: str
    name: str
    tflite: bytes


def op_type_name(schema, opcode) -> str:
    """'CONV_2D', ... of an ``OperatorCodeT`` (the larger of the two builtin code fields,
    as the schema asks; the custom code for custom ops)."""
    code = max(int(opcode.builtinCode or 0), int(opcode.deprecatedBuiltinCode or 0))
    name = builtin_names(schema).get(code, f"BUILTIN_{code}")
    if name == "CUSTOM":
        custom = opcode.customCode
        return "CUSTOM:" + (custom.decode() if isinstance(custom, bytes) else str(custom))
    return name


def op_types(tflite_bytes: bytes, source: str = "model") -> list[str]:
    """The operator types of the main subgraph, in execution order."""
    schema, model = unpack_model(tflite_bytes, source)
    return [op_type_name(schema, model.operatorCodes[op.opcodeIndex])
            for op in model.subgraphs[0].operators]


def _is_constant(model, tensor) -> bool:
    if tensor.buffer is None or tensor.buffer <= 0 or tensor.buffer >= len(model.buffers):
        return False
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _describe(schema, tensor) -> str:
    dtype = tensor_type_names(schema).get(tensor.type, str(tensor.type))
    shape = [] if tensor.shape is None else [int(v) for v in tensor.shape]
    return f"{dtype}[{','.join(str(v) for v in shape)}]"


def split_ops(tflite_bytes: bytes, source: str = "model") -> list[OpModel]:
    """One ``OpModel`` per operator of the main subgraph. ValueError (naming ``source``)
    for models with several subgraphs or control-flow operators."""
    schema, model = unpack_model(tflite_bytes, source)
    if len(model.subgraphs) != 1:
        raise ValueError(f"{source}: {len(model.subgraphs)} subgraphs: only one-subgraph "
                         f"models can be cut into one-op models")
    graph = model.subgraphs[0]
    for buffer in model.buffers:
        if (buffer.offset or 0) > 1:
            raise ValueError(f"{source}: buffers stored outside the flatbuffer are not "
                             f"supported")
    result = []
    for index, op in enumerate(graph.operators):
        opcode = model.operatorCodes[op.opcodeIndex]
        op_type = op_type_name(schema, opcode)
        if op_type in _CONTROL_FLOW:
            raise ValueError(f"{source}: operator {index} is {op_type}, which calls other "
                             f"subgraphs and cannot be timed alone")
        result.append(OpModel(index, op_type, *_one_op_model(schema, model, op, opcode)))
    return result


def _one_op_model(schema, model, op, opcode):
    """(input tensor indices, output description, output name, bytes) of ``op`` alone."""
    graph = model.subgraphs[0]
    tensors, buffers, remap, feeds = [], [schema.BufferT()], {-1: -1}, []

    def add(index):
        if index in remap:
            return remap[index]
        tensor = copy.copy(graph.tensors[index])
        if _is_constant(model, tensor):
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            buffers.append(schema.BufferT())   # each tensor its own (empty) buffer
            tensor.buffer = len(buffers) - 1
        remap[index] = len(tensors)
        tensors.append(tensor)
        return remap[index]

    inputs = [add(int(i)) for i in op.inputs]
    for i in op.inputs:
        i = int(i)
        if i >= 0 and not _is_constant(model, graph.tensors[i]) and i not in feeds:
            feeds.append(i)
    outputs = [add(int(i)) for i in op.outputs]
    intermediates = [add(int(i)) for i in (op.intermediates if op.intermediates is not None
                                          else [])]
    one = copy.copy(op)
    one.opcodeIndex = 0
    one.inputs = np.asarray(inputs, np.int32)
    one.outputs = np.asarray(outputs, np.int32)
    if op.intermediates is not None:
        one.intermediates = np.asarray(intermediates, np.int32)
    sub = schema.SubGraphT()
    sub.tensors, sub.operators = tensors, [one]
    sub.inputs = np.asarray([remap[i] for i in feeds], np.int32)
    sub.outputs = np.asarray(outputs, np.int32)
    sub.name = b"op"
    out = schema.ModelT()
    out.version = model.version
    out.operatorCodes = [opcode]
    out.subgraphs = [sub]
    out.buffers = buffers
    out.description = b"fld one-op model"
    size = sum(len(b.data) for b in buffers if b.data is not None)
    first = graph.tensors[int(op.outputs[0])]
    name = first.name.decode(errors="replace") if isinstance(first.name, bytes) \
        else str(first.name or "")
    return tuple(feeds), _describe(schema, first), name, pack_model(out, size)


def overhead_model() -> bytes:
    """A model of one float32 ADD of two 1-element inputs: its invoke time is the
    per-invoke cost of the interpreter and Python call, not of any kernel."""
    from fld.export.flatbuffer import tflite_schema

    schema = tflite_schema()
    tensors = []
    for name in (b"a", b"b", b"sum"):
        tensor = schema.TensorT()
        tensor.shape = np.asarray([1], np.int32)
        tensor.type = schema.TensorType.FLOAT32
        tensor.buffer = len(tensors) + 1
        tensor.name = name
        tensors.append(tensor)
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = opcode.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    opcode.version = 1
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs, op.outputs = np.asarray([0, 1], np.int32), np.asarray([2], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.AddOptions
    op.builtinOptions = schema.AddOptionsT()
    sub = schema.SubGraphT()
    sub.tensors, sub.operators = tensors, [op]
    sub.inputs, sub.outputs = np.asarray([0, 1], np.int32), np.asarray([2], np.int32)
    model = schema.ModelT()
    model.version = 3
    model.operatorCodes, model.subgraphs = [opcode], [sub]
    model.buffers = [schema.BufferT() for _ in range(4)]
    return pack_model(model)
