"""The model card's ablation table: accuracy, size and speed of several models, one run.

    python tools/ablation.py --data_dir ../shared/data/300w/train --every 10 \\
        --row "teacher=runs/default/teacher_fp32.tflite:runs/default/teacher/best.keras" \\
        --row "student int8=runs/default/student_int8.tflite:runs/default/student/best.keras"

Each ``--row NAME=MODEL.tflite:SOURCE.keras`` names a converted model (scored, sized and
timed) and the Keras model it came from (parameters and MACs, ``fld.models.macs``);
``--row NAME=MODEL.keras`` scores a Keras model itself (no file size or latency: e.g. a
teacher that is never deployed). Every model is scored on the same faces (every
``--every``-th face by path from ``--offset``: the validation split of tools/train.py)
through the runtime's code (``fld.runtime.Landmarker``, GT-box crops; decode: a .tflite's
stored one, soft-argmax for Keras models, or ``--decode_method`` for all), and timed by
``tools/benchmark.py`` (1 thread by default; median latency of crop + invoke + decode). Prints a Markdown table; with
``--output`` also writes it atomically.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from absl import app, flags

from fld.cli import one_line_errors
from fld.codec import DECODE_METHODS

flags.DEFINE_string("data_dir", None, "Annotated faces (.pts folder, .csv or WFLW .txt).")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme of the annotations.")
flags.DEFINE_integer("every", 10, "Score every N-th face by path (the validation split).")
flags.DEFINE_integer("offset", 0, "Which face of each group of --every.")
flags.DEFINE_multi_string("row", [], "NAME=MODEL.tflite:SOURCE.keras or NAME=MODEL.keras "
                          "(repeat).")
flags.DEFINE_enum("decode_method", None, list(DECODE_METHODS),
                  "Decode every model this way (default: each model's own).")
flags.DEFINE_integer("threads", 1, "Interpreter threads for scoring and timing.")
flags.DEFINE_integer("runs", 200, "Timed runs per model (tools/benchmark.py --runs).")
flags.DEFINE_string("output", None, "Also write the table (Markdown) here.")
flags.mark_flags_as_required(["data_dir", "row"])
FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("model", "NME io %", "FR@0.10 %", "AUC@0.10", "params", "MACs", ".tflite",
           "decode", "latency ms")


class AblationError(Exception):
    """A problem with the command line's inputs: reported, exit status 1."""


def parse_row(text: str) -> tuple[str, str, str]:
    """``NAME=MODEL.tflite:SOURCE.keras`` or ``NAME=MODEL.keras`` -> (name, model, source)."""
    name, sep, paths = text.partition("=")
    model, _, source = paths.partition(":")
    if model.endswith(".keras") and not source:
        source = model
    if not (sep and name.strip() and source):
        raise AblationError(f"--row {text!r}: expected NAME=MODEL.tflite:SOURCE.keras or "
                            f"NAME=MODEL.keras")
    for path, suffixes in ((model, (".tflite", ".keras")), (source, (".keras",))):
        if not path.endswith(suffixes):
            raise AblationError(f"--row {text!r}: {path!r} is not a {' or '.join(suffixes)} "
                                f"file")
        if not os.path.isfile(path):
            raise AblationError(f"--row {text!r}: {path} not found")
    return name.strip(), model, source


def size_and_macs(keras_path: str) -> tuple[int, int]:
    from fld.keras_engine import load_keras_model
    from fld.models.macs import count_macs

    model = load_keras_model(keras_path)
    return model.count_params(), sum(count_macs(model).values())


def latency_ms(tflite: str) -> float:
    """Median latency printed by tools/benchmark.py (its last line ``latency_ms: X``)."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--model", tflite,
         "--threads", str(FLAGS.threads), "--runs", str(FLAGS.runs)],
        capture_output=True, text=True)
    found = re.search(r"^latency_ms: ([0-9.]+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise AblationError(f"tools/benchmark.py failed on {tflite}: {done.stderr[-2000:]}")
    return float(found.group(1))


def score(path: str, records, scheme) -> tuple[dict, str]:
    from fld import evaluation

    landmarker = evaluation.load_predictor(path, FLAGS.decode_method, FLAGS.threads)
    results = evaluation.evaluate(records, landmarker, scheme, "gt")
    overall = evaluation.summary_rows(results)[-1]
    return overall, landmarker.info.decode_method


def main(argv):
    if len(argv) > 1:
        sys.exit(f"ablation.py: error: unexpected arguments {argv[1:]}")
    from fld.data.readers import read_annotations
    from fld.fileio import write_text_atomic
    from fld.schemes import get_scheme

    try:
        rows = [parse_row(r) for r in FLAGS.row]
        scheme = get_scheme(FLAGS.scheme)
        records = sorted(read_annotations(FLAGS.data_dir, scheme=scheme),
                         key=lambda r: r.image_path)[FLAGS.offset::max(1, FLAGS.every)]
        if not records:
            raise AblationError(f"{FLAGS.data_dir}: no faces to score")
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for name, model, keras_path in rows:
            overall, decode = score(model, records, scheme)
            params, macs = size_and_macs(keras_path)
            tflite = model.endswith(".tflite")
            cells = [name, f"{overall['nme_io_mean']:.2f}", f"{overall['fr_10']:.2f}",
                     f"{overall['auc_10']:.4f}", f"{params / 1e6:.2f} M",
                     f"{macs / 1e9:.3f} G",
                     f"{os.path.getsize(model) / 2**20:.2f} MiB" if tflite else "-",
                     decode, f"{latency_ms(model):.2f}" if tflite else "-"]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    except AblationError as e:
        sys.exit(f"ablation.py: error: {e}")
    table = "\n".join(lines) + "\n"
    note = (f"\n{len(records)} faces of {FLAGS.data_dir} (every {FLAGS.every}th by path, "
            f"offset {FLAGS.offset}), GT-box crops; latency: tools/benchmark.py, "
            f"{FLAGS.threads} thread(s), median of {FLAGS.runs} runs.\n")
    print("\n" + table + note)
    if FLAGS.output:
        write_text_atomic(FLAGS.output, table + note)
        print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "ablation.py"))
