"""Splits large int8 MEANs of a ``.tflite`` so that XNNPACK computes them correctly.

XNNPACK's int8 MEAN (its ``qs8`` reduce-sum) on x86 CPUs with AVX2 but without AVX-512
VNNI (AMD EPYC here; not Arm's NEON kernels: emulated Cortex-A72 and A76 with
ai-edge-litert 2.3 in ``.ci/pi_check.sh``'s userland give the unsplit MEANs of
tests/test_mean_split.py and a constant -128 at N = 8256 and 32768 exactly) adds the int8
values up in int16 lanes before widening, and those lanes wrap around when one output
averages many values near the int8 extremes. Measured with ai-edge-litert on an EPYC
(AVX2, no VNNI), one MEAN of a constant input: -128 is exact up to N = 8255 values per
output and wrong (127) from N = 8256; -126 from N = 8384; 0 never. The builtin kernels
(XNNPACK off) are exact. In the shipped MobileViT-v2 student the GroupNorm variance
MEANs of layer3 / layer4 reduce 32768 / 12288 values each (squares: zero point -128) and
came out 44-111 output levels off; NME on the 60 bundled faces 4.32% under XNNPACK vs
3.93% on the builtin kernels.

``split_large_means`` rewrites every int8 MEAN that reduces more than
``MEAN_SPLIT_LIMIT`` values per output into a chain of MEANs each at or below it: first
over the innermost reduced axes (the channels, a contiguous run), then over the rest.
The intermediate tensor keeps the input's scale and zero point: a mean of values lies
within their range, so it cannot clip, and only adds one rounding step (measured: NME
3.94% on the builtin kernels, and XNNPACK then agrees, 3.89%). No new op type or op
version: the new MEANs share the original's operator code and options. Everything else
in the file (weights, signatures, every metadata entry) is carried over; buffers are
re-packed the way ``fld.export.metadata.embed_metadata`` packs them.

``fld.export.convert`` applies it to every int8 model, before ``audit`` and before the
metadata is embedded.
"""

from __future__ import annotations

import copy
import sys
from typing import NamedTuple

import numpy as np

from fld.export.flatbuffer import enum_names, pack_model, unpack_model

# Largest reduction (values per output) an int8 MEAN may keep. XNNPACK's AVX2 qs8
# reduce-sum first fails at 8256 values of -128 (int16 lane accumulators wrapping, see
# the module docstring); 4096 leaves a factor of two, and every MEAN of the shipped
# models at or below it (layer5's 4 x 4 x 256 GroupNorms, the 32 x 32 heatmap means)
# was measured exact under XNNPACK.
MEAN_SPLIT_LIMIT = 4096

_INT8 = "INT8"


class LargeMean(NamedTuple):
    """An int8 MEAN over more than the limit (``large_int8_means``)."""

    subgraph: int
    op: int
    count: int          # values reduced per output
    input_shape: tuple
    axes: tuple
    name: str           # its output tensor


def _unpack(tflite_bytes: bytes):
    return unpack_model(tflite_bytes, "split_large_means input")


def _means(schema, model):
    """Yields (subgraph index, graph, op index, op, input shape, axes) of every int8 MEAN
    with a static input shape and constant axes."""
    op_names = enum_names(schema.BuiltinOperator)
    type_names = enum_names(schema.TensorType)
    for g, graph in enumerate(model.subgraphs or []):
        for i, op in enumerate(graph.operators or []):
            code = model.operatorCodes[op.opcodeIndex]
            if op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "MEAN":
                continue
            source = graph.tensors[op.inputs[0]]
            if type_names.get(source.type) != _INT8 or source.shape is None:
                continue
            shape = tuple(int(d) for d in source.shape)
            axes_data = model.buffers[graph.tensors[op.inputs[1]].buffer].data
            if axes_data is None or min(shape, default=0) < 0:
                continue  # runtime axes or a dynamic shape: nothing known to split
            rank = len(shape)
            axes = tuple(sorted({int(a) % rank for a in
                                 np.asarray(axes_data, np.uint8).view(np.int32)}))
            yield g, graph, i, op, shape, axes


def _count(shape, axes) -> int:
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def large_int8_means(tflite_bytes: bytes, limit: int = MEAN_SPLIT_LIMIT) -> list:
    """Every int8 MEAN of the model that reduces more than ``limit`` values per output,
    as ``LargeMean`` (empty after ``split_large_means``, unless one axis alone is over
    the limit)."""
    schema, model = _unpack(tflite_bytes)
    return [LargeMean(g, i, _count(shape, axes), shape, axes,
                      graph.tensors[op.outputs[0]].name.decode("utf-8", "replace"))
            for g, graph, i, op, shape, axes in _means(schema, model)
            if _count(shape, axes) > limit]


def _plan(shape, axes, limit):
    """Groups of ``axes`` to reduce one after the other, each at most ``limit`` values:
    the fewest innermost axes that leave the rest under the limit (so the second MEAN
    averages as many rounded values as possible), else greedily from the innermost.
    None when one axis alone is over the limit (left as it is)."""
    if any(shape[a] > limit for a in axes):
        return None
    for k in range(1, len(axes)):
        inner, outer = axes[len(axes) - k:], axes[:len(axes) - k]
        if _count(shape, inner) <= limit and _count(shape, outer) <= limit:
            return [inner, outer]
    groups, group = [], []
    for a in reversed(axes):
        if group and _count(shape, group + [a]) > limit:
            groups.append(tuple(sorted(group)))
            group = []
        group.append(a)
    return groups + [tuple(sorted(group))]


def split_large_means(tflite_bytes: bytes, limit: int = MEAN_SPLIT_LIMIT) -> bytes:
    """The model with every int8 MEAN over more than ``limit`` values per output split
    into consecutive MEANs of at most ``limit`` values each (module docstring).

    Returns ``tflite_bytes`` itself when no MEAN needs it (float models, small graphs).
    A MEAN with one reduced axis over the limit is left as it is (``large_int8_means``
    still lists it). Raises ValueError for a model whose weights are stored after the
    flatbuffer (> 2 GB), like ``embed_metadata``.
    """
    schema, model = _unpack(tflite_bytes)
    work = []
    for g, _, i, op, shape, axes in _means(schema, model):
        plan = _plan(shape, axes, limit) if _count(shape, axes) > limit else None
        if plan is not None:
            work.append((g, i, op, shape, axes, plan))
    if not work:
        return tflite_bytes
    if any(b.offset > 1 for b in model.buffers or []):
        raise ValueError("split_large_means: models with weights stored after the "
                         "flatbuffer (> 2 GB) are not supported")

    axes_tensors = {}  # (subgraph, axes) -> tensor index of a new int32 axes constant

    def axes_tensor(g, graph, template, values):
        key = (g, tuple(values))
        if key not in axes_tensors:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.asarray(values, "<i4").tobytes(), np.uint8)
            model.buffers.append(buffer)
            tensor = copy.deepcopy(template)
            tensor.buffer = len(model.buffers) - 1
            tensor.shape = np.array([len(values)], np.int32)
            tensor.shapeSignature = None
            tensor.name = ("split_mean/axes_" + "_".join(map(str, values))).encode()
            graph.tensors.append(tensor)
            axes_tensors[key] = len(graph.tensors) - 1
        return axes_tensors[key]

    replaced = {}  # (subgraph, op index) -> the ops that replace it
    for g, i, op, shape, axes, plan in work:
        graph = model.subgraphs[g]
        source, axes_template = int(op.inputs[0]), graph.tensors[op.inputs[1]]
        out_name = graph.tensors[op.outputs[0]].name.decode("utf-8", "replace")
        keep_dims = bool(op.builtinOptions.keepDims)
        chain, current, reduced = [], list(shape), []
        for step, group in enumerate(plan):
            last = step == len(plan) - 1
            new = copy.deepcopy(op)
            if last:  # original output and options; without keep_dims it also drops
                group_axes = sorted(reduced + list(group)) if not keep_dims else list(group)
                new.outputs = np.array(op.outputs, np.int32)
            else:     # an intermediate: same shape but 1 on the group's axes
                group_axes = list(group)
                new.builtinOptions.keepDims = True
                for a in group:
                    current[a] = 1
                mid = copy.deepcopy(graph.tensors[source])
                mid.shape = np.array(current, np.int32)
                if mid.shapeSignature is not None:  # e.g. a dynamic batch stays dynamic
                    mid.shapeSignature = np.array(
                        [1 if d in reduced + list(group) else int(v)
                         for d, v in enumerate(mid.shapeSignature)], np.int32)
                mid.buffer = 0
                mid.name = f"{out_name}/split_mean_{step}".encode()
                graph.tensors.append(mid)
                new.outputs = np.array([len(graph.tensors) - 1], np.int32)
            new.inputs = np.array([source if step == 0 else int(chain[-1].outputs[0]),
                                   axes_tensor(g, graph, axes_template, group_axes)], np.int32)
            reduced += list(group)
            chain.append(new)
        replaced[(g, i)] = chain
    for g, graph in enumerate(model.subgraphs):
        graph.operators = [new for i, op in enumerate(graph.operators or [])
                           for new in replaced.get((g, i), [op])]

    return pack_model(model, len(tflite_bytes))


def main(argv: list[str]) -> int:
    """``python -m fld.export.mean_split IN.tflite OUT.tflite``: OUT written atomically."""
    from fld.fileio import atomic_path

    if len(argv) != 2:
        print("usage: python -m fld.export.mean_split IN.tflite OUT.tflite", file=sys.stderr)
        return 2
    source, target = argv
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        print(f"error: {source}: cannot read ({e.strerror})", file=sys.stderr)
        return 1
    try:
        before = large_int8_means(data)
        result = split_large_means(data)
    except Exception as e:  # noqa: BLE001 - any parse failure means a foreign file
        print(f"error: {source}: not a readable .tflite flatbuffer ({type(e).__name__})",
              file=sys.stderr)
        return 1
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            f.write(result)
    except OSError as e:
        print(f"error: {target}: cannot write ({e.strerror})", file=sys.stderr)
        return 1
    print(f"{target}: split {len(before) - len(large_int8_means(result))} of "
          f"{len(before)} int8 MEAN(s) over {MEAN_SPLIT_LIMIT} values")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
