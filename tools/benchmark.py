"""Per-face latency of a ``.tflite`` landmark model, and of the whole pipeline, on this CPU.

    python tools/benchmark.py --model student_int8.tflite --threads 1 --runs 200
    python tools/benchmark.py --model m.tflite --runtime tflite_runtime   # see below
    python tools/benchmark.py --pipeline                        # the bundled model
    python tools/benchmark.py --pipeline --detector haar        # + Haar, same run

Prints median and p90 latency per face of the interpreter alone (``invoke`` on an
already quantized input) and of the whole ``Landmarker.predict`` (crop + normalize +
quantize + invoke + decode + map back), on a real face from ../shared/data/300w/train
when present, else on a synthetic image. The last line is ``latency_ms: N``, the
crop+invoke+decode median (``--flip_test``: with the mirrored crop's second invoke; a
flip-pair model, ``convert.py --flip_pair``, runs crop and mirror in its one invoke).

``--pipeline`` times, on the same image in one run (interleaved, medians), the face
detector (``detector_ms``: BlazeFace, the default, on the whole image), the landmark step
for one face (``landmarks_ms``: one ``Landmarker.predict``, crop + invoke + decode) and
both together (``full_image_ms``: ``Landmarker.detect``, detection plus
``DEFAULT_PASSES`` landmark passes per face); it prints lines

    detector_ms: N
    landmarks_ms: N
    full_image_ms: N
    tracking_frame_ms: N

(``tracking_frame_ms``: one ``Landmarker.track`` frame of a 30-frame synthetic clip of the
same face, no detection on it, ``fld.runtime.tracking.time_tracking_frame``; followed by
``tracking_ratio``, its median over the landmark step's on the same frames.)

``--detector haar`` (or ``blazeface_full``, or a YuNet ``.onnx`` path) times that
detector too, in the same run, and adds the same three lines with its name as a prefix
(``haar_detector_ms: N``, ``haar_landmarks_ms: N``, ``haar_full_image_ms: N``) and
``detector_speedup: N`` (its detector time over BlazeFace's). Every run prints the CPU
it ran on and the instruction-set features XNNPACK's kernels depend on
(``fld.runtime.describe_cpu``: e.g. ``cpu: AMD EPYC [avx2 avx512f avx512_vnni]``).

``--op_profile`` first prints where the invoke time goes per op type: the model is cut
into one-op models (``fld.export.op_split``), each timed alone, round robin with the whole
model, by wall clock and CPU time (``fld.runtime.op_profile``); then the usual lines.

The measurement runs in a child Python that imports only ``fld.runtime`` (no
TensorFlow). ``--runtime tflite_runtime`` runs it in a separate virtual environment
(``--venv``, default ``.venv-tflite``), e.g. created with

    python3 -m venv .venv-tflite
    .venv-tflite/bin/pip install "numpy<2" opencv-python-headless==4.* tflite-runtime==2.14.0

(tflite-runtime 2.14 has wheels for Python <= 3.11); the repository is put on its
PYTHONPATH by this tool.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import numpy as np
from absl import app, flags

from fld.cli import one_line_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_300W = os.path.join(os.path.dirname(REPO), "shared", "data", "300w", "train")

flags.DEFINE_string("model", None, "The .tflite model, or a bundled model's name (default, "
                    "default_51, fast; default: the bundled default model).")
flags.DEFINE_string("baseline", None, "Also time this model (a .tflite or a bundled name, e.g. "
                    "default) in the same loops, alternating run by run, and print its lines "
                    "and landmark_step_ratio (model / baseline) before latency_ms.")
flags.DEFINE_integer("threads", 1, "Interpreter CPU threads.")
flags.DEFINE_integer("runs", 200, "Timed runs (after 10 warm-up runs).")
flags.DEFINE_enum("runtime", None, ["ai_edge_litert", "tflite_runtime", "tf"],
                  "Interpreter to use (default: the first installed).")
flags.DEFINE_string("venv", os.path.join(REPO, ".venv-tflite"),
                    "Virtual environment with tflite-runtime, for --runtime tflite_runtime.")
flags.DEFINE_bool("flip_test", False, "Time Landmarker(flip_test=True): the mirrored crop "
                  "is run too (two invokes per face).")
flags.DEFINE_bool("reference_kernels", False, "Time TFLite's builtin kernels instead of "
                  "the XNNPACK delegate (the kernels tools/evaluate.py --reference_kernels "
                  "scores).")
flags.DEFINE_bool("op_profile", False, "Also time each operator alone (the model cut into "
                  "one-op models, fld.export.op_split) and print the time per op type "
                  "before the usual lines.")
flags.DEFINE_integer("op_profile_runs", 50, "Timed rounds of --op_profile.")
flags.DEFINE_string("op_profile_json", None, "With --op_profile: also write every op's "
                    "timing (fld.runtime.op_profile.profile's result) to this JSON file.")
flags.DEFINE_bool("pipeline", False, "Time detector, landmark step and the full image "
                  "(detector_ms, landmarks_ms, full_image_ms lines).")
flags.DEFINE_string("detector", "blazeface", "--pipeline: also time this detector in the same "
                    "run (haar, blazeface_full or a YuNet .onnx path), lines prefixed with "
                    "its name.")
FLAGS = flags.FLAGS

# Runs in the child interpreter: imports fld.runtime, numpy and OpenCV only.
_MEASURE_SCRIPT = """
import json, sys
import numpy as np
import cv2
from fld.runtime import Landmarker, describe_cpu, time_landmarker
args = json.loads(sys.argv[1])
if args["image"]:
    image = cv2.cvtColor(cv2.imread(args["image"]), cv2.COLOR_BGR2RGB)
else:  # synthetic: smooth noise with a bright ellipse where the face box is
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (9, 9), 3)
    cv2.ellipse(image, (320, 240), (90, 120), 0, 0, 360, (200, 170, 150), -1)
landmarker = Landmarker(args["model"], num_threads=args["threads"], runtime=args["runtime"],
                        flip_test=args["flip_test"],
                        reference_kernels=args["reference_kernels"])
if args["pipeline"]:
    from fld.runtime.timing import time_pipeline
    times = time_pipeline(landmarker, image, args["box"], args["others"], runs=args["runs"])
    # A tracking frame: a short synthetic clip of this face (small known motion + noise,
    # fld.synthetic_video), each frame cropped from the previous frame's landmarks.
    from fld.crop import box_from_landmarks
    from fld.runtime import time_tracking_frame
    from fld.synthetic_video import make_clip
    # the face's annotated points in the model's scheme, else its prediction
    points = args["points"]
    points = np.asarray(points, np.float32) if points and \
        len(points) == landmarker.scheme.num_points else landmarker.predict(image, args["box"])
    clip = make_clip(image, points, frames=30)
    try:
        tracked = time_tracking_frame(landmarker, clip.frames, runs=max(1, args["runs"] // 30),
                                      box=box_from_landmarks(clip.points[0]),
                                      max_spread=float("inf"))   # time it for any model
        times["tracking_frame_ms"] = tracked["tracking_ms"]
        times["tracking_landmarks_ms"] = tracked["landmark_ms"]
    except ValueError as error:   # e.g. an untrained model whose points collapse
        print(f"warning: no tracking_frame_ms: {error}", file=sys.stderr)
else:
    baseline = None if not args["baseline"] else Landmarker(
        args["baseline"], num_threads=args["threads"], runtime=args["runtime"],
        flip_test=args["flip_test"], reference_kernels=args["reference_kernels"])
    times = time_landmarker(landmarker, image, args["box"], runs=args["runs"],
                            baseline=baseline)
    if baseline is not None:
        times["baseline_flip_pair"] = baseline.info.flip_pair
print(json.dumps({"runtime": landmarker.model.runtime, "kernels": landmarker.model.kernels,
                  "cpu": describe_cpu(),
                  "input": str(landmarker.model.input_dtype),
                  "flip_pair": landmarker.info.flip_pair, **times}))
"""


def benchmark_face():
    """(image path or '', landmark box, its annotated points or None): the first real
    300-W face, else the bundled photo (data/sample_300w), else synthetic."""
    bundled = os.path.join(REPO, "data", "sample_300w", "helen_126968967_1.pts")
    for pts in sorted(glob.glob(os.path.join(DATA_300W, "*", "*.pts")))[:1] + [bundled]:
        image = os.path.splitext(pts)[0] + ".jpg"
        if os.path.isfile(image) and os.path.isfile(pts):
            from fld.crop import box_from_landmarks
            from fld.data.readers import read_pts

            points = read_pts(pts)
            return (image, [float(v) for v in box_from_landmarks(points)],
                    np.asarray(points, float).tolist())
    return "", [230.0, 120.0, 410.0, 360.0], None


def python_for(runtime) -> str:
    if runtime != "tflite_runtime":
        return sys.executable
    python = os.path.join(FLAGS.venv, "bin", "python")
    if not os.path.isfile(python):
        raise app.UsageError(f"no Python in {FLAGS.venv}: create the tflite-runtime venv "
                             f"(see this tool's docstring) or pass --venv")
    return python


def print_op_profile(args: dict, env: dict) -> None:
    """--op_profile: cuts the model into one-op models (here, with the TFLite schema) and
    times them in the measuring child; prints fld.runtime.op_profile's table."""
    import tempfile

    from fld.export.op_split import overhead_model, split_ops
    from fld.runtime.op_profile import MANIFEST, OVERHEAD_FILE, format_profile

    with open(args["model"], "rb") as f:
        ops = split_ops(f.read(), args["model"])
    with tempfile.TemporaryDirectory(prefix="fld_op_profile_") as folder:
        manifest = []
        for op in ops:
            name = f"op{op.index:04d}.tflite"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(op.tflite)
            manifest.append({"index": op.index, "op_type": op.op_type,
                             "inputs": list(op.inputs), "output": op.output,
                             "name": op.name, "file": name})
        with open(os.path.join(folder, MANIFEST), "w") as f:
            json.dump(manifest, f)
        with open(os.path.join(folder, OVERHEAD_FILE), "wb") as f:
            f.write(overhead_model())
        child = dict(args, ops=folder, runs=FLAGS.op_profile_runs)
        result = subprocess.run([python_for(FLAGS.runtime), "-m", "fld.runtime.op_profile",
                                 json.dumps(child)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ValueError(f"{args['model']}: op profile failed: "
                           f"{result.stderr.strip().splitlines()[-1:]}")
    profile = json.loads(result.stdout.strip().splitlines()[-1])
    if FLAGS.op_profile_json:
        from fld.fileio import write_text_atomic

        write_text_atomic(FLAGS.op_profile_json, json.dumps(profile, indent=1) + "\n")
    for line in format_profile(profile):
        print(line)


def print_pipeline(times: dict, others: list[str]) -> None:
    """The --pipeline lines: medians in ms, BlazeFace's unprefixed, others' prefixed."""
    def median(key):
        return float(np.median(times[key]))

    print("faces found: " + ", ".join(f"{name} {times[prefix + 'faces']}" for name, prefix in
                                      [("blazeface", "")] + [(o, f"{o}_") for o in others]))
    for prefix in [""] + [f"{name}_" for name in others]:
        for key in ("detector_ms", "landmarks_ms", "full_image_ms"):
            print(f"{prefix}{key}: {median(prefix + key):.3f}")
    if "tracking_frame_ms" in times:
        print(f"tracking_frame_ms: {median('tracking_frame_ms'):.3f}")
        print(f"tracking_ratio: {median('tracking_frame_ms') / median('tracking_landmarks_ms'):.3f}"
              f" (tracking frame / landmark step on the same clip frames)")
    for name in others:
        print(f"detector_speedup: {median(name + '_detector_ms') / median('detector_ms'):.1f}"
              f" ({name} / blazeface)")


def print_medians(times: dict, prefix: str = "", label: str = "", width: int = 20) -> None:
    """The invoke and crop+invoke+decode lines (median, p90) of ``times``' ``prefix`` keys."""
    for name, key in (("interpreter invoke", "invoke_ms"), ("crop+invoke+decode", "total_ms")):
        values = np.asarray(times[prefix + key])
        print(f"{label + name:>{width}}: median {np.median(values):.3f} ms, "
              f"p90 {np.percentile(values, 90):.3f} ms")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fld.runtime.bundled import resolve_model
    from fld.runtime.landmarker import DEFAULT_PASSES

    model, baseline = resolve_model(FLAGS.model), FLAGS.baseline and resolve_model(FLAGS.baseline)
    for flag, path in (("--model", model), ("--baseline", baseline)):
        if path and not os.path.isfile(path):
            raise app.UsageError(f"{flag}: model file not found: {path}")
    if baseline and FLAGS.pipeline:
        raise app.UsageError("--baseline times the landmark step: not with --pipeline")
    others = [FLAGS.detector] if FLAGS.pipeline and FLAGS.detector != "blazeface" else []
    image, box, points = benchmark_face()
    args = {"model": os.path.abspath(model), "threads": FLAGS.threads,
            "runs": FLAGS.runs, "runtime": FLAGS.runtime, "image": image, "box": box,
            "points": points,
            "flip_test": FLAGS.flip_test, "reference_kernels": FLAGS.reference_kernels,
            "pipeline": FLAGS.pipeline, "others": others,
            "baseline": baseline and os.path.abspath(baseline)}
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if FLAGS.op_profile:
        print_op_profile(args, env)
    result = subprocess.run([python_for(FLAGS.runtime), "-c", _MEASURE_SCRIPT, json.dumps(args)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(result.stderr[-4000:], file=sys.stderr)
        return 1
    times = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"model: {model} ({times['input']} input), runtime: {times['runtime']} "
          f"({times['kernels']} kernels), "
          f"threads: {FLAGS.threads}, runs: {FLAGS.runs}, face: {image or 'synthetic'}"
          + (", flip pair (crop and mirror in one invoke of batch 2)" if times["flip_pair"]
             else ", flip_test (two invokes per face)" if FLAGS.flip_test else ""))
    print(f"cpu: {times['cpu']}")
    if FLAGS.pipeline:
        print(f"pipeline: detector blazeface{''.join(', ' + o for o in others)}, "
              f"{DEFAULT_PASSES} landmark passes per face (Landmarker.detect)")
        print_pipeline(times, others)
        return 0
    print_medians(times)
    if FLAGS.op_profile:
        print(f"host side (crop+invoke+decode minus invoke, medians): "
              f"{np.median(times['total_ms']) - np.median(times['invoke_ms']):.3f} ms")
    if baseline:
        print(f"baseline: {baseline}" + (", flip pair" if times["baseline_flip_pair"] else ""))
        print_medians(times, "baseline_", "baseline ", width=29)
        print(f"baseline_latency_ms: {np.median(times['baseline_total_ms']):.3f}")
        ratio = np.median(times["total_ms"]) / np.median(times["baseline_total_ms"])
        print(f"landmark_step_ratio: {ratio:.3f} (crop+invoke+decode medians, model / "
              f"baseline, interleaved run by run)")
        cpu = np.median(times["total_cpu_ms"]) / np.median(times["baseline_total_cpu_ms"])
        print(f"landmark_step_cpu_ratio: {cpu:.3f} (the same in this process's CPU time, "
              f"which other processes' load does not inflate; 1 thread)")
    print(f"latency_ms: {np.median(times['total_ms']):.3f}")
    return 0


if __name__ == "__main__":
    app.run(one_line_errors(main, "benchmark.py"))
