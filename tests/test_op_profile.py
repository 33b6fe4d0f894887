"""The per-op profile: one-op models cut from an int8 model (fld.export.op_split), timed
by fld.runtime.op_profile and printed by tools/benchmark.py --op_profile."""

import collections
import json
import re

import keras
import numpy as np
import pytest

from fld.export.op_split import op_types, overhead_model, split_ops
from fld.runtime.interpreter import interpreter_class, interpreter_options
from fld.runtime.op_profile import by_type, format_profile, tensor_values
from tests.helpers import TINY_SIZE, convert_tiny, real_crops, run_tool, tiny_model_files


@pytest.fixture(scope="module")
def tiny(real_records):
    return tiny_model_files(real_records)


@pytest.fixture(scope="module")
def two_branch(real_records):
    """int8 bytes of a model whose ops take two activations (MUL, CONCATENATION)."""
    keras.utils.set_random_seed(0)
    images = keras.Input((TINY_SIZE, TINY_SIZE, 3))
    x = keras.layers.AveragePooling2D(4)(images)
    a = keras.layers.Conv2D(4, 3, padding="same")(x)
    b = keras.layers.Conv2D(4, 1, activation="sigmoid")(x)
    y = keras.layers.Concatenate()([keras.layers.Multiply()([a, b]), a])
    model = keras.Model(images, {"fused": keras.layers.Conv2D(5, 1)(y)})
    return convert_tiny(model, "int8", real_crops(real_records[:8]))


def _interpreter_op_counts(tflite_bytes):
    """Op type counts as the interpreter itself lists its nodes (independent of the split;
    builtin kernels, so that no delegate node replaces them)."""
    runtime, cls = interpreter_class()
    interpreter = cls(model_content=tflite_bytes, **interpreter_options(runtime, True))
    interpreter.allocate_tensors()
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


@pytest.mark.parametrize("which", ["tiny", "two_branch"])
def test_one_op_models_match_the_operator_list(which, tiny, two_branch):
    data = open(tiny["int8"], "rb").read() if which == "tiny" else two_branch
    ops = split_ops(data, which)
    assert [op.op_type for op in ops] == op_types(data)
    assert collections.Counter(op.op_type for op in ops) == _interpreter_op_counts(data)
    assert [op.index for op in ops] == list(range(len(ops)))
    if which == "two_branch":
        assert {"MUL", "CONCATENATION"} <= {op.op_type for op in ops}
        assert max(len(op.inputs) for op in ops) == 2
    # constants other than the op's own are left out: every one-op model is smaller
    assert all(len(op.tflite) < len(data) for op in ops)


@pytest.mark.parametrize("which", ["tiny", "two_branch"])
def test_each_one_op_model_reproduces_its_tensor_in_the_whole_model(which, tiny, two_branch):
    """Same tensors, quantization and weights: fed the whole model's values, each one-op
    model computes bit for bit the whole model's output tensor (builtin kernels)."""
    data = open(tiny["int8"], "rb").read() if which == "tiny" else two_branch
    runtime, cls = interpreter_class()
    probe = cls(model_content=data, **interpreter_options(runtime, True))
    probe.allocate_tensors()
    detail = probe.get_input_details()[0]
    feed = np.random.default_rng(1).integers(-128, 128, detail["shape"]).astype(np.int8)
    values = tensor_values(cls, runtime, data, feed)
    whole_ops = probe._get_ops_details()
    for op in split_ops(data, which):
        one = cls(model_content=op.tflite, **interpreter_options(runtime, True))
        one.allocate_tensors()
        inputs = one.get_input_details()
        assert len(inputs) == len(op.inputs)
        for d, source in zip(inputs, op.inputs):
            one.set_tensor(d["index"], values[source])
        one.invoke()
        got = one.get_tensor(one.get_output_details()[0]["index"])
        want = values[int(whole_ops[op.index]["outputs"][0])]
        np.testing.assert_array_equal(got, want, err_msg=f"op {op.index} {op.op_type}")


def test_overhead_model_adds():
    _, cls = interpreter_class()
    interpreter = cls(model_content=overhead_model())
    interpreter.allocate_tensors()
    a, b = interpreter.get_input_details()
    interpreter.set_tensor(a["index"], np.array([1.5], np.float32))
    interpreter.set_tensor(b["index"], np.array([2.0], np.float32))
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0] == 3.5


def test_format_sums_per_type():
    ops = [{"index": i, "op_type": t, "output": "INT8[1]", "ms": ms, "min_ms": ms / 2,
            "cpu_ms": ms / 4, "delegated": t == "CONV_2D"}
           for i, (t, ms) in enumerate([("CONV_2D", 2.0), ("ADD", 0.5), ("CONV_2D", 1.0)])]
    assert by_type(ops) == [("CONV_2D", 2, 3.0), ("ADD", 1, 0.5)]
    timing = {"ms": 4.0, "min_ms": 2.0, "cpu_ms": 1.0}
    lines = format_profile({"runs": 5, "whole": timing, "predict": {**timing, "ms": 5.5},
                            "overhead": {"ms": 0.01, "min_ms": 0.01, "cpu_ms": 0.01},
                            "ops": ops})
    row = next(line for line in lines if line.startswith("CONV_2D"))
    assert row.split() == ["CONV_2D", "2", "3.000", "85.7", "0.750", "2"]
    assert ("isolated ops sum (medians): 3.500 ms, minus 3 x overhead: 3.470 ms; "
            "whole-model invoke: 4.000 ms (ratio 0.87)") in lines
    assert "host side (minus the whole invoke): 1.500 ms wall" in lines[-1]


def test_split_names_the_file_of_bad_input():
    with pytest.raises(ValueError, match="broken.tflite"):
        split_ops(b"not a flatbuffer at all", "broken.tflite")


_ROW = re.compile(r"^([A-Z_0-9:]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+|\?)$")
_SUM = re.compile(r"isolated ops sum \(medians\): ([\d.]+) ms, minus (\d+) x overhead: "
                  r"(-?[\d.]+) ms; whole-model invoke: ([\d.]+) ms")


def test_benchmark_op_profile_output_is_parseable(tiny, tmp_path):
    result = run_tool("benchmark.py", "--model", tiny["int8"], "--runs", "5",
                      "--op_profile", "--op_profile_runs", "5",
                      "--op_profile_json", str(tmp_path / "ops.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    rows = {m.group(1): (int(m.group(2)), float(m.group(3)), float(m.group(4)))
            for m in map(_ROW.match, lines) if m}
    data = open(tiny["int8"], "rb").read()
    assert {t: c for t, (c, _, _) in rows.items()} == dict(collections.Counter(op_types(data)))
    assert sum(p for _, _, p in rows.values()) == pytest.approx(100, abs=0.2)
    summed = next(m for m in map(_SUM.search, lines) if m)
    assert float(summed.group(1)) == pytest.approx(sum(ms for _, ms, _ in rows.values()),
                                                   abs=0.01)
    assert int(summed.group(2)) == len(op_types(data)) and float(summed.group(4)) > 0
    assert any(line.startswith("cpu: ") for line in lines)
    assert any(re.match(r"landmark step .* host side .*: -?[\d.]+ ms wall, -?[\d.]+ ms CPU$",
                        line) for line in lines)
    assert lines[-2].startswith("host side")
    partitions = next(re.search(r"(\d+) XNNPACK partitions, (\d+) ops outside", line)
                      for line in lines if "XNNPACK partitions" in line)
    assert int(partitions.group(1)) >= 1
    saved = json.loads((tmp_path / "ops.json").read_text())
    assert [op["op_type"] for op in saved["ops"]] == op_types(data)
    assert all(op["name"] and op["cpu_ms"] > 0 for op in saved["ops"])
    assert re.fullmatch(r"latency_ms: [\d.]+", lines[-1])


def test_benchmark_without_op_profile_prints_no_profile(tiny):
    result = run_tool("benchmark.py", "--model", tiny["int8"], "--runs", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "op profile" not in result.stdout and "host side" not in result.stdout
    assert re.fullmatch(r"latency_ms: [\d.]+", result.stdout.strip().splitlines()[-1])
