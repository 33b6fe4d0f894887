"""Tests for fld.export.mean_split: large int8 MEANs split so that XNNPACK gets them right.

The models are one int8 MEAN built with the TFLite schema's object API (no converter):
a GroupNorm-variance-like reduction of 4 x 64 x 128 = 32768 squares per output (zero
point -128, values near the int8 minimum), as in layer3 of the shipped student. On an
AVX2 CPU without VNNI XNNPACK gets the unsplit MEAN wrong by tens of levels (printed,
not asserted: a VNNI CPU gets it right); the split one must agree with the builtin
kernels on every CPU.
"""

import os

import numpy as np
import pytest

from fld import export
from fld.export.mean_split import large_int8_means, split_large_means

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "fld", "runtime", "assets")
VARIANCE_SHAPE = (2, 4, 64, 128)   # layer3's GroupNorm: batch 2 (flip pair), 4 groups
IN_SCALE = 0.1877                  # layer3's first variance MEAN (op 44 of default_68)


def mean_model(shape, axes, in_scale, out_scale, keep_dims=True, zero_point=-128) -> bytes:
    """A .tflite holding one int8 MEAN over ``axes`` of an int8 ``shape`` input."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name, dims, dtype, buffer=0, scale=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(dims, np.int32), dtype, buffer
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale = np.array([scale], np.float32)
            t.quantization.zeroPoint = np.array([zero_point], np.int64)
        return t

    out_shape = [1 if d in axes else n for d, n in enumerate(shape)] if keep_dims else \
        [n for d, n in enumerate(shape) if d not in axes]
    model = schema.ModelT()
    model.version, model.description = 3, b"one int8 MEAN"
    empty, axes_buffer = schema.BufferT(), schema.BufferT()
    axes_buffer.data = np.frombuffer(np.array(axes, "<i4").tobytes(), np.uint8)
    model.buffers = [empty, axes_buffer]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.MEAN
    code.version = 2
    model.operatorCodes = [code]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array([0, 1], np.int32), np.array([2], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
    op.builtinOptions = schema.ReducerOptionsT()
    op.builtinOptions.keepDims = keep_dims
    graph = schema.SubGraphT()
    graph.tensors = [tensor("x", shape, schema.TensorType.INT8, scale=in_scale),
                     tensor("axes", [len(axes)], schema.TensorType.INT32, buffer=1),
                     tensor("mean", out_shape, schema.TensorType.INT8, scale=out_scale)]
    graph.inputs, graph.outputs = np.array([0], np.int32), np.array([2], np.int32)
    graph.operators = [op]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run(tflite: bytes, inputs, xnnpack: bool) -> np.ndarray:
    """Outputs (int32) for each input; XNNPACK (default delegate) or the builtin kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else \
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=tflite, num_threads=1,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for x in inputs:
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]).astype(np.int32))
    return np.stack(outputs)


def squares(shape, count, seed=0):
    """int8 GroupNorm-variance inputs: (z * spread)^2 on the ``IN_SCALE`` grid, zero point
    -128 (most values a few levels above -128, a tail up to 127)."""
    rng = np.random.default_rng(seed)
    spread = np.linspace(0.5, 1.05, count)   # output mean below int8 top at ratio 40
    return [np.clip(np.round((rng.standard_normal(shape) * s) ** 2 / IN_SCALE) - 128,
                    -128, 127).astype(np.int8) for s in spread]


def op_counts(tflite):
    return export.audit(tflite, int8=True).op_counts


@pytest.mark.parametrize("ratio", [1.0, 40.0])   # in / out scale: 40 = the student's
def test_split_fixes_xnnpack_and_keeps_builtin_result(ratio):
    """The split MEAN: builtin kernels as before (within 1 level at ratio 1; at ratio r
    the intermediate's rounding, at most half an input level, is worth up to r / 2 output
    levels), and XNNPACK within a level of the builtin kernels on every CPU."""
    axes = (1, 2, 3)
    model = mean_model(VARIANCE_SHAPE, axes, IN_SCALE, IN_SCALE / ratio)
    assert [m.count for m in large_int8_means(model)] == [32768]
    split = split_large_means(model)
    assert op_counts(model) == {"MEAN": 1} and op_counts(split) == {"MEAN": 2}
    assert large_int8_means(split) == []
    assert large_int8_means(split, limit=127) != []   # both halves non-trivial: 128, 256

    inputs = squares(VARIANCE_SHAPE, 8)
    reference = run(model, inputs, xnnpack=False)       # builtin kernels: exact
    assert reference.min() > -128 and reference.max() < 127   # not saturated
    builtin_split = run(split, inputs, xnnpack=False)
    xnnpack_split = run(split, inputs, xnnpack=True)
    xnnpack_unsplit = run(model, inputs, xnnpack=True)
    print(f"ratio {ratio:g}: unsplit MEAN under XNNPACK off by up to "
          f"{np.abs(xnnpack_unsplit - reference).max()} levels (AVX2 without VNNI: many; "
          f"VNNI: 0); split vs unsplit builtin: {np.abs(builtin_split - reference).max()}; "
          f"split XNNPACK vs split builtin: {np.abs(xnnpack_split - builtin_split).max()}")
    assert np.abs(builtin_split - reference).max() <= (1 if ratio == 1 else ratio / 2 + 1)
    assert np.abs(xnnpack_split - builtin_split).max() <= 1
    if ratio == 1:
        assert np.abs(xnnpack_split - reference).max() <= 2


def test_small_means_are_left_alone():
    small = mean_model((2, 4, 4, 256), (1, 2, 3), IN_SCALE, IN_SCALE)   # 4096: at the limit
    assert split_large_means(small) is small


def test_split_chains_and_drops_dims_like_the_original():
    """A 3-axis split (no two-group plan under ``limit``) and keep_dims=False."""
    shape, axes = (2, 8, 8, 8), (1, 2, 3)
    model = mean_model(shape, axes, IN_SCALE, IN_SCALE, keep_dims=False)
    split = split_large_means(model, limit=16)
    assert op_counts(split) == {"MEAN": 3}
    assert large_int8_means(split, limit=8) == []
    inputs = squares(shape, 3)
    reference, got = run(model, inputs, xnnpack=False), run(split, inputs, xnnpack=False)
    assert got.shape == reference.shape == (3, 2)
    assert np.abs(got - reference).max() <= 1


@pytest.mark.parametrize("name", ["default_68.tflite", "default_51.tflite"])
def test_shipped_models_have_no_large_int8_mean(name):
    with open(os.path.join(ASSETS, name), "rb") as f:
        data = f.read()
    assert large_int8_means(data) == [], f"{name}: re-run python -m fld.export.mean_split"
    assert split_large_means(data) is data
