"""Quickstart: the shipped model first, then the method's stages in miniature.

    python tools/demo.py                      # about 4-5 minutes on a 2-core CPU
    python tools/demo.py --skip_training      # only the shipped model on the photo (seconds)

Runs the project's own command-line tools one after another (each command is printed, so
it can be rerun or changed by hand) on the real faces bundled in ``data/sample_300w`` (60
300-W faces none of the shipped weights trained on; research-only terms in its README):

1. the bundled BlazeFace detector finds the face in a photo and the shipped int8 model
   (``fld/runtime/assets/default_68.tflite``) draws its 68 landmarks (two passes, the
   second cropped around the first's landmarks)             -> ``photo``/
2. its accuracy on the 60 bundled faces: NME, CED plot, worst faces  -> ``shipped/``
3. stage 1: the committed SwinV2 teacher, trained a few steps more with STAR + AAM on 48
   of the faces                                               (configs/demo/teacher.flags)
4. stage 2: a MobileViT-v2 student (from the shipped weights) trained a few steps with
   heatmap distillation from that teacher                     (configs/demo/distill.flags)
5. the student converted to a full-integer int8 ``.tflite`` (op audit, float-vs-int8 check);
6. every model of the run scored on the 12 held-out faces      -> ``report/``

Stages 3-4 start from trained weights, so the figures they print are real landmark
accuracy (3-4% NME), not the 50% of a network trained from scratch for a minute; the full
recipes are in MODEL_CARD.md. Outputs go to ``--output_dir`` (default ``demo_out/``).
"""

from __future__ import annotations

import csv
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
START_TEACHER = os.path.join("checkpoints", "fast_teacher", "best.keras")
SHIPPED = os.path.relpath(DEFAULT_MODEL_PATH, ROOT)

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


def mean_nme_io(per_face_csv: str, model: str) -> float:
    """Mean NME io (%) of one model in an evaluate.py ``per_face.csv`` (which names a model
    by its file name, or by its path when two file names clash)."""
    errors = []
    with open(os.path.join(ROOT, per_face_csv), newline="") as f:
        for row in csv.DictReader(f):
            if row["model"] in (os.path.normpath(model), os.path.basename(model)):
                errors.append(float(row["nme_io"]))
    if not errors:
        raise SystemExit(f"demo: {per_face_csv} has no rows for {model}")
    return 100 * sum(errors) / len(errors)


def main(_):
    for needed in (SHIPPED, FLAGS.photo, SAMPLE_DIR, START_TEACHER):
        if not os.path.exists(os.path.join(ROOT, needed)):
            raise SystemExit(f"demo: {needed} is missing (a partial checkout?)")
    out = FLAGS.output_dir
    times = {}
    times["shipped model on a photo"] = run("BlazeFace + the shipped int8 model on a photo", [
        "tools/predict.py", "--input", FLAGS.photo, "--output_dir", os.path.join(out, "photo"),
        "--detector", "blazeface", "--save_overlay"])
    photo_out = os.path.join(out, "photo", os.path.basename(FLAGS.photo))
    if FLAGS.skip_training:
        print(f"\nwrote {photo_out}")
        return
    shipped = os.path.join(out, "shipped")
    times["shipped model, 60 faces"] = run("the shipped model on the 60 bundled faces", [
        "tools/evaluate.py", "--model", SHIPPED, "--data_dir", SAMPLE_DIR,
        "--report_dir", shipped])
    epochs = [f"--epochs={FLAGS.epochs}"] if FLAGS.epochs else []
    teacher = os.path.join(out, "teacher", "best.keras")
    student = os.path.join(out, "student", "best.keras")
    times["stage 1: teacher"] = run("stage 1: SwinV2 teacher, STAR + AAM, a few steps", [
        "tools/train.py", "--flagfile=configs/demo/teacher.flags",
        f"--work_dir={os.path.dirname(teacher)}"] + epochs)
    times["stage 2: distillation"] = run("stage 2: MobileViT-v2 student distilled from it", [
        "tools/distill.py", "--flagfile=configs/demo/distill.flags", f"--teacher={teacher}",
        f"--work_dir={os.path.dirname(student)}"] + epochs)
    student_int8 = os.path.join(out, "student_int8.tflite")
    times["int8 conversion"] = run("the student as a full-integer int8 .tflite", [
        "tools/convert.py", "--checkpoint", student, "--quantize", "int8",
        "--calibration_dir", SAMPLE_DIR, "--num_calibration", "48", "--num_check", "12",
        "--output", student_int8])
    report = os.path.join(out, "report")
    models = [START_TEACHER, teacher, student_int8, SHIPPED]
    times["evaluation, 12 faces"] = run("every model on the 12 held-out sample faces", [
        "tools/evaluate.py", *[a for m in models for a in ("--model", m)],
        "--data_dir", SAMPLE_DIR, "--every", "5", "--offset", "0", "--report_dir", report])

    held_out = os.path.join(report, "per_face.csv")
    labels = [(START_TEACHER, "teacher before stage 1 (committed checkpoint, float)"),
              (teacher, "teacher after stage 1 (float)"),
              (student_int8, "student after stage 2 (int8, one crop)"),
              (SHIPPED, "shipped default_68.tflite (int8, flip pair)")]
    print(f"\n=== results (NME io %, ground-truth boxes; lower is better)\n"
          f"{'shipped default_68.tflite on the 60 bundled faces':>54s}: "
          f"{mean_nme_io(os.path.join(shipped, 'per_face.csv'), SHIPPED):5.2f}\n"
          f"on the 12 held-out faces (stages 1-2 trained on the other 48):")
    for model, label in labels:
        print(f"{label:>54s}: {mean_nme_io(held_out, model):5.2f}")
    print("\n=== time")
    for step, seconds in times.items():
        print(f"{step:>26s}: {seconds:6.1f} s")
    print(f"{'total':>26s}: {sum(times.values()):6.1f} s")
    print(f"photo with landmarks: {photo_out}\n"
          f"CED plot of the shipped model: {shipped}/ced.png\n"
          f"CED plot, per-face errors, worst faces of the run: {report}/\n"
          f"demo int8 model: {student_int8}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "demo.py"))
