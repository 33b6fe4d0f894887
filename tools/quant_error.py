"""Where an int8 conversion loses accuracy: per-tensor error of the quantized model.

    python tools/quant_error.py --checkpoint runs/default/student_100_gn_ft3/best.keras \\
        --data_dir ../shared/data/300w/train --holdout_every 10

Converts the model as ``tools/convert.py`` does (calibration faces from the training
split, fused maps clipped at the 90th percentile of their peaks), then runs TFLite's
``QuantizationDebugger`` on other training faces: every quantized op's output is
compared with the float model's (BATCH_MATMUL outputs are instead checked directly
against the product of the op's dequantized inputs: ``direct_matmul_errors``). For each
tensor it prints the mean error and the RMS
error in units of that tensor's quantization step: an RMS near 0.3 steps is rounding
noise; a mean far from 0 is a bias (errors that do not average out, the kind a bias
correction removes). Rows are sorted by the size of the mean error (worst first, at
most ``--top``). Errors include what upstream ops passed on. Last line:
``max_mean_error_steps: E``.
"""

from __future__ import annotations

import csv
import io
import os
import sys

import numpy as np
from absl import app, flags

from fld.export.output_head import DEFAULT_CAP_PERCENTILE

flags.DEFINE_string("checkpoint", None, "Keras model (.keras) to convert and inspect.")
flags.DEFINE_string("data_dir", None, "Annotated faces: .pts folder, .csv or WFLW .txt.")
flags.DEFINE_integer("holdout_every", 10, "Leave training's validation split (every N-th "
                     "face) out, as tools/convert.py --holdout_every (0 = use all faces).")
flags.DEFINE_integer("num_calibration", 200, "Faces used to calibrate int8.")
flags.DEFINE_integer("num_debug", 30, "Other faces on which the errors are measured.")
flags.DEFINE_float("output_cap_percentile", DEFAULT_CAP_PERCENTILE, "As tools/convert.py (0 = no clip).")
flags.DEFINE_integer("top", 25, "Print at most this many tensors.")
flags.mark_flags_as_required(["checkpoint", "data_dir"])
FLAGS = flags.FLAGS


def tensor_errors(debugger) -> list[dict]:
    """Rows of the debugger's layer statistics with errors in quantization steps, in the
    debugger's order (``main`` sorts them once the BATCH_MATMUL rows are replaced)."""
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"])
        if not scale > 0:
            continue
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"],
                     "mean_steps": float(row["mean_error"]) / scale,
                     "rms_steps": float(row["mean_squared_error"]) ** 0.5 / scale})
    return rows


def direct_matmul_errors(tflite_bytes: bytes, crops) -> dict[str, dict]:
    """BATCH_MATMUL outputs of the int8 model against numpy's matmul of the op's own
    dequantized inputs (so only the op's error counts), in output quantization steps.

    The debugger's rows for BATCH_MATMUL are replaced by these: on the shipped model they
    showed near-constant offsets that follow the right operand's zero point, while the
    kernel's outputs match the dequantized product to rounding (0.3 steps RMS).
    """
    from fld.runtime.interpreter import dequantize, interpreter_class, quantize

    _, interpreter_cls = interpreter_class()
    interpreter = interpreter_cls(model_content=tflite_bytes,
                                  experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]
    source = interpreter.get_input_details()[0]
    scale, zero_point = source["quantization"]
    errors = {}

    def dequantized(index):
        s, z = details[index]["quantization"]
        return dequantize(interpreter.get_tensor(index), s, z).astype(np.float64), s

    for crop in crops:
        if np.dtype(source["dtype"]).kind == "f":
            q = crop.astype(source["dtype"])
        else:
            q = quantize(crop, scale, zero_point, source["dtype"])
        interpreter.set_tensor(source["index"], q)
        interpreter.invoke()
        for op in ops:
            (lhs, _), (rhs, _) = (dequantized(i) for i in op["inputs"][:2])
            out, step = dequantized(op["outputs"][0])
            errors.setdefault(details[op["outputs"][0]]["name"], []).append(
                ((out - np.matmul(lhs, rhs)) / step).ravel())
    return {name: {"mean_steps": float(np.concatenate(e).mean()),
                   "rms_steps": float(np.sqrt((np.concatenate(e) ** 2).mean()))}
            for name, e in errors.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not os.path.isfile(FLAGS.checkpoint) or not FLAGS.checkpoint.endswith(".keras"):
        raise app.UsageError(f"--checkpoint: not a .keras file: {FLAGS.checkpoint}")
    import tensorflow as tf

    from fld import export
    from fld.export import calibration
    from fld.data.records import split_records
    from fld.keras_engine import load_keras_model

    model = load_keras_model(FLAGS.checkpoint)
    try:
        records = calibration.read_calibration_records(FLAGS.data_dir, model.scheme)
    except calibration.CalibrationError as e:
        print(f"quant_error.py: error: {e}", file=sys.stderr)
        return 1
    if FLAGS.holdout_every:
        records, _ = split_records(records, FLAGS.holdout_every)
    calibration_faces, debug_faces = calibration.pick_calibration_faces(
        records, FLAGS.num_calibration, FLAGS.num_debug)
    if not debug_faces:
        raise app.UsageError(f"{FLAGS.data_dir}: {len(records)} faces leave none to measure "
                             f"on after {FLAGS.num_calibration} calibration faces")
    size = int(model.inputs[0].shape[1])
    calib = calibration.face_crops(calibration_faces, size, desc="calibration crops")
    debug = calibration.face_crops(debug_faces, size, desc="debug crops")
    cap = (export.map_peak_percentile(model, calib, FLAGS.output_cap_percentile)
           if FLAGS.output_cap_percentile else None)
    converter = export.make_converter(model, "int8", calib, output_cap=cap,
                                      fine_ratio=export.DEFAULT_FINE_RATIO if cap else None)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=lambda: ([crop] for crop in debug))
    debugger.run()
    rows = tensor_errors(debugger)
    direct = direct_matmul_errors(debugger.get_nondebug_quantized_model(), debug)
    for row in rows:
        if row["op"] == "BATCH_MATMUL" and row["tensor"] in direct:
            row.update(direct[row["tensor"]])
    rows.sort(key=lambda r: -abs(r["mean_steps"]))
    print(f"{FLAGS.checkpoint}: {len(calib)} calibration faces, errors on {len(debug)} "
          f"other faces, {len(rows)} quantized tensors; errors in quantization steps")
    print(f"{'op':<18} {'mean':>8} {'rms':>8}  tensor")
    for row in rows[:FLAGS.top]:
        print(f"{row['op']:<18} {row['mean_steps']:8.2f} {row['rms_steps']:8.2f}  "
              f"{row['tensor']}")
    by_op = {}
    for row in rows:
        by_op.setdefault(row["op"], []).append(abs(row["mean_steps"]))
    print("median |mean| by op: " + ", ".join(
        f"{op} {np.median(v):.2f} ({len(v)})" for op, v in sorted(by_op.items())))
    print(f"max_mean_error_steps: {abs(rows[0]['mean_steps']) if rows else 0.0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
