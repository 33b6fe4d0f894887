"""Where a model's invoke time goes, per operator type: each operator timed alone, as a
one-op model (``fld.export.op_split``), in the interpreter settings of the landmark step.

The TFLite Python interpreters expose no per-op timer, so each one-op model is invoked
on the values the whole model computes for the benchmark face (read once through the
builtin kernels with every tensor kept), round robin with the whole model, and the
median of each is kept. An isolated op pays the interpreter's per-invoke cost once
(timed on a 1-element ADD and reported), and runs with its inputs hot in cache, so
the sum of the isolated ops is compared with the whole model's invoke in the same run.

Runs in the benchmark's child Python (numpy and the interpreter only):

    python -m fld.runtime.op_profile '{"model": ..., "ops": "DIR", ...}'

prints one JSON line; ``format_profile`` turns it into the table ``tools/benchmark.py
--op_profile`` prints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

from fld.runtime.interpreter import interpreter_class, interpreter_options

MANIFEST = "ops.json"   # in the ops folder: [{"index", "op_type", "inputs", "output", "file"}]
OVERHEAD_FILE = "overhead.tflite"


def _make(cls, runtime, model_bytes, threads, reference_kernels, **extra):
    interpreter = cls(model_content=model_bytes, num_threads=int(threads),
                      **interpreter_options(runtime, reference_kernels), **extra)
    interpreter.allocate_tensors()
    return interpreter


def tensor_values(cls, runtime, model_bytes, feed: np.ndarray) -> dict:
    """Index -> value of every tensor of the whole model on ``feed`` (builtin kernels,
    every tensor kept: inside the XNNPACK delegate intermediate tensors are not)."""
    interpreter = _make(cls, runtime, model_bytes, 1, True,
                        experimental_preserve_all_tensors=True)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], feed)
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        try:
            values[detail["index"]] = np.array(interpreter.get_tensor(detail["index"]))
        except ValueError:   # a tensor with no data (e.g. an optional input)
            pass
    return values


def _feed_inputs(interpreter, sources, values, rng, where):
    for detail, source in zip(interpreter.get_input_details(), sources):
        value = values.get(source)
        shape, dtype = tuple(detail["shape"]), np.dtype(detail["dtype"])
        if value is None or value.shape != shape or value.dtype != dtype:
            if dtype.kind not in "iuf":
                raise ValueError(f"{where}: no value for input tensor {source}")
            info = np.iinfo(dtype) if dtype.kind in "iu" else None
            value = (rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape)
                     .astype(dtype) if info else rng.standard_normal(shape).astype(dtype))
        interpreter.set_tensor(detail["index"], value)


def profile(model_path: str, ops_dir: str, feed: np.ndarray, threads: int = 1,
            runtime=None, reference_kernels: bool = False, runs: int = 50,
            warmup: int = 3) -> dict:
    """Times the whole model, each one-op model of ``ops_dir`` and the overhead model,
    round robin, ``runs`` times each. Returns {"runtime", "runs", "whole_ms",
    "whole_min_ms", "overhead_ms", "ops": [{"index", "op_type", "output", "ms", "min_ms"}]}
    (medians, and minima where named: on a loaded CPU the minima are the runs that no other
    process interrupted; milliseconds)."""
    runtime, cls = interpreter_class(runtime)
    with open(model_path, "rb") as f:
        model_bytes = f.read()
    with open(os.path.join(ops_dir, MANIFEST)) as f:
        manifest = json.load(f)
    values = tensor_values(cls, runtime, model_bytes, feed)
    rng = np.random.default_rng(0)
    whole = _make(cls, runtime, model_bytes, threads, reference_kernels)
    whole.set_tensor(whole.get_input_details()[0]["index"], feed)
    timed = [("whole", whole)]
    for entry in manifest:
        with open(os.path.join(ops_dir, entry["file"]), "rb") as f:
            where = f"{model_path} operator {entry['index']} ({entry['op_type']})"
            try:
                interpreter = _make(cls, runtime, f.read(), threads, reference_kernels)
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"{where}: cannot load alone ({e})") from None
        _feed_inputs(interpreter, entry["inputs"], values, rng, where)
        timed.append((entry["index"], interpreter))
    with open(os.path.join(ops_dir, OVERHEAD_FILE), "rb") as f:
        overhead = _make(cls, runtime, f.read(), threads, reference_kernels)
    for detail in overhead.get_input_details():
        overhead.set_tensor(detail["index"], np.ones(detail["shape"], np.float32))
    timed.append(("overhead", overhead))
    times = defaultdict(list)
    clock = time.perf_counter
    for run in range(warmup + runs):
        for key, interpreter in timed:
            start = clock()
            interpreter.invoke()
            if run >= warmup:
                times[key].append((clock() - start) * 1e3)
    medians = {key: float(np.median(values)) for key, values in times.items()}
    minima = {key: float(np.min(values)) for key, values in times.items()}
    return {"runtime": runtime, "runs": runs, "whole_ms": medians["whole"],
            "whole_min_ms": minima["whole"], "overhead_ms": medians["overhead"],
            "ops": [{"index": e["index"], "op_type": e["op_type"], "output": e["output"],
                     "ms": medians[e["index"]], "min_ms": minima[e["index"]]}
                    for e in manifest]}


def by_type(ops: list[dict], key: str = "ms") -> list[tuple[str, int, float]]:
    """(op type, count, summed ``key``) rows, slowest type first."""
    count, total = defaultdict(int), defaultdict(float)
    for op in ops:
        count[op["op_type"]] += 1
        total[op["op_type"]] += op[key]
    return sorted(((t, count[t], total[t]) for t in count), key=lambda row: -row[2])


def format_profile(result: dict, top: int = 10) -> list[str]:
    """The report's lines: a per-type table (count, ms, % of the summed isolated time),
    the slowest single ops, and the isolated sum against the whole model's invoke."""
    ops = result["ops"]
    summed = sum(op["ms"] for op in ops)
    overhead = result["overhead_ms"]
    minima = {op_type: ms for op_type, _, ms in by_type(ops, "min_ms")}
    lines = [f"op profile: {len(ops)} ops, {len(minima)} types, each timed alone "
             f"({result['runs']} rounds, round robin with the whole model; ms: sum of the "
             f"medians, %: of their total, min_ms: sum of the minima)",
             f"{'op_type':<20} {'count':>5} {'ms':>9} {'%':>6} {'min_ms':>9}"]
    for op_type, count, ms in by_type(ops):
        lines.append(f"{op_type:<20} {count:>5d} {ms:>9.3f} {100 * ms / summed:>6.1f} "
                     f"{minima[op_type]:>9.3f}")
    lines.append(f"slowest ops (index op_type output ms):")
    for op in sorted(ops, key=lambda op: -op["ms"])[:top]:
        lines.append(f"  {op['index']:>4d} {op['op_type']:<20} {op['output']:<28} "
                     f"{op['ms']:.3f}")
    corrected = summed - len(ops) * overhead
    lines.append(f"per-invoke overhead (1-element ADD): {overhead:.4f} ms")
    lines.append(f"isolated ops sum: {summed:.3f} ms, minus {len(ops)} x overhead: "
                 f"{corrected:.3f} ms; whole-model invoke: {result['whole_ms']:.3f} ms "
                 f"(corrected sum / whole: {corrected / result['whole_ms']:.2f})")
    min_sum = sum(op["min_ms"] for op in ops)
    lines.append(f"minima: isolated ops sum: {min_sum:.3f} ms; whole-model invoke: "
                 f"{result['whole_min_ms']:.3f} ms (sum / whole: "
                 f"{min_sum / result['whole_min_ms']:.2f})")
    return lines


def _main(argv) -> int:
    args = json.loads(argv[1])
    import cv2

    from fld.runtime.landmarker import Landmarker

    landmarker = Landmarker(args["model"], num_threads=args["threads"],
                            runtime=args["runtime"])
    if args["image"]:
        image = cv2.cvtColor(cv2.imread(args["image"]), cv2.COLOR_BGR2RGB)
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    inputs, _ = landmarker.crop(image, args["box"])
    feed = landmarker.model.quantize_input(landmarker.model_input(inputs))
    result = profile(args["model"], args["ops"], feed, args["threads"], args["runtime"],
                     args["reference_kernels"], args["runs"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
