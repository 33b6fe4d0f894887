"""Where a model's invoke time goes, per operator type: each operator timed alone, as a
one-op model (``fld.export.op_split``), in the interpreter settings of the landmark step.

The TFLite Python interpreters expose no per-op timer, so each one-op model is invoked
on the values the whole model computes for the benchmark face (read once through the
builtin kernels with every tensor kept), round robin with the whole model, and the
median of each is kept, by the wall clock and by CPU time (immune to other processes
on a loaded machine). An isolated op pays the interpreter's per-invoke cost once
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

MANIFEST = "ops.json"   # in the ops folder: [{"index", "op_type", "inputs", "output", "name",
#                          "file"}]
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


def _partitions(interpreter):
    """How many delegate (XNNPACK) partitions an interpreter runs; None where it cannot
    list its nodes (the list holds the model's ops and, after them, one node per
    partition)."""
    try:
        nodes = interpreter._get_ops_details()   # the interpreters' only node listing
    except AttributeError:
        return None
    return sum(node["op_name"] == "DELEGATE" for node in nodes)


def _delegated(interpreter):
    """Whether the default delegate (XNNPACK) took the one-op model's operator."""
    partitions = _partitions(interpreter)
    return None if partitions is None else partitions > 0


def _stats(wall: list, cpu: list) -> dict:
    return {"ms": float(np.median(wall)), "min_ms": float(np.min(wall)),
            "cpu_ms": float(np.median(cpu))}


def profile(model_path: str, ops_dir: str, feed: np.ndarray, threads: int = 1,
            runtime=None, reference_kernels: bool = False, runs: int = 50,
            warmup: int = 3, predict=None) -> dict:
    """Times the whole model, each one-op model of ``ops_dir``, the overhead model and
    ``predict`` (a callable, e.g. the whole landmark step; optional), round robin,
    ``runs`` times each, by the wall clock and by the process's CPU time (which a loaded
    machine's other processes do not inflate; with 1 thread, that of the invoke).

    Returns {"runtime", "runs", "whole", "whole_partitions" (XNNPACK partitions of the
    whole model as run, or None), "overhead", "predict" (None without it),
    "ops": [{"index", "op_type", "output", "name", "delegated", "ms", "min_ms", "cpu_ms"}]},
    where "delegated" says whether XNNPACK ran the op (None: unknown) and "whole",
    "overhead" and "predict" hold {"ms", "min_ms", "cpu_ms"}: wall median, wall minimum
    and CPU-time median, milliseconds."""
    runtime, cls = interpreter_class(runtime)
    with open(model_path, "rb") as f:
        model_bytes = f.read()
    with open(os.path.join(ops_dir, MANIFEST)) as f:
        manifest = json.load(f)
    values = tensor_values(cls, runtime, model_bytes, feed)
    rng = np.random.default_rng(0)
    whole = _make(cls, runtime, model_bytes, threads, reference_kernels)
    whole.set_tensor(whole.get_input_details()[0]["index"], feed)
    timed = [("whole", whole.invoke)]
    delegated = {}
    for entry in manifest:
        with open(os.path.join(ops_dir, entry["file"]), "rb") as f:
            where = f"{model_path} operator {entry['index']} ({entry['op_type']})"
            try:
                interpreter = _make(cls, runtime, f.read(), threads, reference_kernels)
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"{where}: cannot load alone ({e})") from None
        _feed_inputs(interpreter, entry["inputs"], values, rng, where)
        delegated[entry["index"]] = _delegated(interpreter)
        timed.append((entry["index"], interpreter.invoke))
    with open(os.path.join(ops_dir, OVERHEAD_FILE), "rb") as f:
        overhead = _make(cls, runtime, f.read(), threads, reference_kernels)
    for detail in overhead.get_input_details():
        overhead.set_tensor(detail["index"], np.ones(detail["shape"], np.float32))
    timed.append(("overhead", overhead.invoke))
    if predict is not None:
        timed.append(("predict", predict))
    wall, cpu = defaultdict(list), defaultdict(list)
    for run in range(warmup + runs):
        for key, call in timed:
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            end, end_cpu = time.perf_counter(), time.process_time()
            if run >= warmup:
                wall[key].append((end - start) * 1e3)
                cpu[key].append((end_cpu - start_cpu) * 1e3)
    stats = {key: _stats(wall[key], cpu[key]) for key in wall}
    return {"runtime": runtime, "runs": runs, "whole": stats["whole"],
            "whole_partitions": _partitions(whole),
            "overhead": stats["overhead"], "predict": stats.get("predict"),
            "ops": [{"index": e["index"], "op_type": e["op_type"], "output": e["output"],
                     "name": e.get("name", ""), "delegated": delegated[e["index"]],
                     **stats[e["index"]]} for e in manifest]}


def by_type(ops: list[dict], key: str = "ms") -> list[tuple[str, int, float]]:
    """(op type, count, summed ``key``) rows, slowest type first."""
    count, total = defaultdict(int), defaultdict(float)
    for op in ops:
        count[op["op_type"]] += 1
        total[op["op_type"]] += op[key]
    return sorted(((t, count[t], total[t]) for t in count), key=lambda row: -row[2])


def format_profile(result: dict, top: int = 10) -> list[str]:
    """The report's lines: a per-type table (count; ms: summed wall-clock medians, %: of
    their total; cpu_ms: summed CPU-time medians; xnnpack: how many of them the XNNPACK
    delegate ran, '?' if unknown), the slowest single ops, and the
    isolated sums against the whole model's invoke (and the landmark step's host side)."""
    ops = result["ops"]
    sums = {key: sum(op[key] for op in ops) for key in ("ms", "min_ms", "cpu_ms")}
    cpu = {op_type: ms for op_type, _, ms in by_type(ops, "cpu_ms")}
    whole, overhead = result["whole"], result["overhead"]
    lines = [f"op profile: {len(ops)} ops, {len(cpu)} types, each timed alone "
             f"({result['runs']} rounds, round robin with the whole model; ms: sum of the "
             f"wall-clock medians, %: of their total, cpu_ms: sum of the CPU-time medians, "
             f"xnnpack: ops the XNNPACK delegate ran)",
             f"{'op_type':<20} {'count':>5} {'ms':>9} {'%':>6} {'cpu_ms':>9} {'xnnpack':>7}"]
    for op_type, count, ms in by_type(ops):
        flags = [op.get("delegated") for op in ops if op["op_type"] == op_type]
        xnnpack = "?" if None in flags else str(sum(flags))
        lines.append(f"{op_type:<20} {count:>5d} {ms:>9.3f} {100 * ms / sums['ms']:>6.1f} "
                     f"{cpu[op_type]:>9.3f} {xnnpack:>7}")
    lines.append("slowest ops (index op_type output ms name):")
    for op in sorted(ops, key=lambda op: -op["ms"])[:top]:
        name = op.get("name", "")
        lines.append(f"  {op['index']:>4d} {op['op_type']:<20} {op['output']:<28} "
                     f"{op['ms']:.3f} {name if len(name) <= 60 else '...' + name[-57:]}")
    lines.append(f"per-invoke overhead (1-element ADD): {overhead['ms']:.4f} ms wall, "
                 f"{overhead['cpu_ms']:.4f} ms CPU")
    for label, key in (("medians", "ms"), ("minima", "min_ms"), ("CPU time", "cpu_ms")):
        summed = sums[key] - len(ops) * overhead[key]
        lines.append(f"isolated ops sum ({label}): {sums[key]:.3f} ms, minus {len(ops)} x "
                     f"overhead: {summed:.3f} ms; whole-model invoke: {whole[key]:.3f} ms "
                     f"(ratio {summed / whole[key]:.2f})")
    partitions = result.get("whole_partitions")
    if partitions is not None and None not in [op.get("delegated") for op in ops]:
        outside = sum(not op["delegated"] for op in ops)
        lines.append(f"whole model as run: {partitions} XNNPACK partitions, {outside} ops "
                     f"outside them (each switch between them costs what no isolated op "
                     f"shows)")
    predict = result.get("predict")
    if predict:
        lines.append(f"landmark step (Landmarker.predict, same rounds): {predict['ms']:.3f} ms "
                     f"wall, {predict['cpu_ms']:.3f} ms CPU; host side (minus the whole "
                     f"invoke): {predict['ms'] - whole['ms']:.3f} ms wall, "
                     f"{predict['cpu_ms'] - whole['cpu_ms']:.3f} ms CPU")
    return lines


def _main(argv) -> int:
    args = json.loads(argv[1])
    import cv2

    from fld.runtime.landmarker import Landmarker

    landmarker = Landmarker(args["model"], num_threads=args["threads"],
                            runtime=args["runtime"], flip_test=args["flip_test"],
                            reference_kernels=args["reference_kernels"])
    if args["image"]:
        image = cv2.cvtColor(cv2.imread(args["image"]), cv2.COLOR_BGR2RGB)
    else:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    inputs, _ = landmarker.crop(image, args["box"])
    feed = landmarker.model.quantize_input(landmarker.model_input(inputs))
    result = profile(args["model"], args["ops"], feed, args["threads"], args["runtime"],
                     args["reference_kernels"], args["runs"],
                     predict=lambda: landmarker.predict(image, args["box"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
