"""Quickstart: the shipped model on a photo, then the whole method in miniature.

    python tools/demo.py                      # 3-5 minutes on a 2-core CPU
    python tools/demo.py --skip_training      # only the shipped model (seconds)

Runs the project's own command-line tools one after another (each command is printed, so
it can be rerun or changed by hand) on the real faces bundled in ``data/sample_300w``
(60 held-out 300-W faces, research-only terms in its README):

1. the shipped int8 model (``fld/runtime/assets/default_68.tflite``) finds the face in a
   photo with the Haar detector and draws its 68 landmarks  -> ``photo_landmarks.jpg``;
2. stage 1: a SwinV2 teacher trained on 48 of the sample faces      (configs/demo/teacher.flags)
3. stage 2: a MobileViT-v2 student distilled from it                 (configs/demo/distill.flags)
4. the student converted to a full-integer int8 ``.tflite`` (op audit, float-vs-int8 check);
5. both int8 models evaluated on the 12 held-out sample faces: CED plot, per-face CSV,
   overlays of the worst faces, summary  -> ``report/``.

The miniature run trains for a minute or two on 48 faces: it shows that every stage works,
not a usable model. The shipped model's recipe and figures are in MODEL_CARD.md.
All outputs go to ``--output_dir`` (default ``demo_out/``); rerunning resumes finished stages.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

from fld.cli import one_line_errors
from fld.runtime.landmarker import DEFAULT_MODEL_PATH

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join("data", "sample_300w")
PHOTO = os.path.join(SAMPLE_DIR, "helen_126968967_1.jpg")

flags.DEFINE_string("output_dir", "demo_out", "Where every output goes.")
flags.DEFINE_string("photo", PHOTO, "Photo for the shipped model (any image with a face).")
flags.DEFINE_bool("skip_training", False, "Only run the shipped model on the photo.")
flags.DEFINE_integer("epochs", 0, "Override the epochs of both demo runs (0: the flagfiles').")
FLAGS = flags.FLAGS


def run(step: str, argv: list[str]) -> float:
    """Runs one tool as a subprocess from the repository root; returns its wall time."""
    command = [sys.executable] + argv
    print(f"\n=== {step}\n$ {shlex.join(['python'] + argv)}", flush=True)
    start = time.time()
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"demo: step '{step}' failed (exit status {done.returncode}); "
                         f"the command above reproduces it")
    return time.time() - start


def main(_):
    for needed in (DEFAULT_MODEL_PATH, FLAGS.photo, SAMPLE_DIR):
        if not os.path.exists(os.path.join(ROOT, needed)):
            raise SystemExit(f"demo: {needed} is missing (a partial checkout?)")
    out = FLAGS.output_dir
    times = {}
    times["shipped model on a photo"] = run("the shipped int8 model on a photo", [
        "tools/predict.py", "--input", FLAGS.photo, "--output_dir", out, "--save_overlay"])
    photo_out = os.path.join(out, os.path.basename(FLAGS.photo))
    if FLAGS.skip_training:
        print(f"\nwrote {photo_out}")
        return
    epochs = [f"--epochs={FLAGS.epochs}"] if FLAGS.epochs else []
    teacher_dir, student_dir = os.path.join(out, "teacher"), os.path.join(out, "student")
    times["teacher"] = run("stage 1: SwinV2 teacher (STAR + AAM)", [
        "tools/train.py", "--flagfile=configs/demo/teacher.flags",
        f"--work_dir={teacher_dir}"] + epochs)
    times["distillation"] = run("stage 2: MobileViT-v2 student distilled from the teacher", [
        "tools/distill.py", "--flagfile=configs/demo/distill.flags",
        f"--teacher={os.path.join(teacher_dir, 'best.keras')}",
        f"--work_dir={student_dir}"] + epochs)
    demo_model = os.path.join(out, "student_int8.tflite")
    times["int8 conversion"] = run("full-integer int8 conversion", [
        "tools/convert.py", "--checkpoint", os.path.join(student_dir, "best.keras"),
        "--quantize", "int8", "--calibration_dir", SAMPLE_DIR, "--num_calibration", "48",
        "--num_check", "12", "--output", demo_model])
    report = os.path.join(out, "report")
    times["evaluation"] = run("both int8 models on the 12 held-out sample faces", [
        "tools/evaluate.py", "--model", DEFAULT_MODEL_PATH, "--model", demo_model,
        "--data_dir", SAMPLE_DIR, "--every", "5", "--offset", "0", "--report_dir", report])
    print("\n=== done")
    for step, seconds in times.items():
        print(f"{step:>26s}: {seconds:6.1f} s")
    print(f"{'total':>26s}: {sum(times.values()):6.1f} s")
    print(f"shipped model on a photo: {photo_out}\n"
          f"CED plot, per-face errors, worst faces: {report}/\n"
          f"demo int8 model: {demo_model}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "demo.py"))
