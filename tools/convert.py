"""Converts a trained landmark model to a deployable ``.tflite`` with the runtime's metadata.

    python tools/convert.py --checkpoint work/student/best.keras --quantize int8 \\
        --calibration_dir ../shared/data/300w/train --output student_int8.tflite
    python tools/convert.py --checkpoint best.weights.h5 --model mobilevitv2_050 \\
        --image_size 256 --scheme 300w_68 --quantize float16 --output student_fp16.tflite
    python tools/convert.py --checkpoint work/student/best.keras --points pair_51 ...  # 51 of 68
    python tools/convert.py --checkpoint fld/runtime/assets/default_68.tflite \
        --model mobilevitv2_100_gn --calibration_dir ../shared/data/300w/train \
        --holdout_every 10 --output single.tflite     # the default, re-exported (no --flip_pair)

Steps:
1. load the Keras ``LandmarkDetector`` (``.keras``; or ``.weights.h5`` with ``--model``,
   ``--image_size`` and ``--scheme``; or an fld ``.tflite`` with ``--model``, its int8
   weights read back, ``fld.export.tflite_weights``); ``--points`` keeps a subset scheme's
   channels and fits the file's ``crop_box`` (``fld.runtime.crop_box``: the tight box of
   the subset's points -> the box of all the network's points, which framed its training
   crops) on the calibration folder's training faces (all of them less ``--holdout_every``'s
   split); ``--flip_pair`` makes the file take the crop and its mirror in one invoke; a
   MobileViT-v2's attention projections are written in the split form
   (``--split_attention``, ``fld.export.split_attention``: the same function);
2. pick faces of ``--calibration_dir`` (any folder / file ``read_annotations`` reads),
   deterministically spread over it: ``--num_calibration`` to calibrate int8 (less the
   outliers that would stretch int8 ranges, ``--outlier_factor``) and ``--num_check``
   other faces held out to check the result;
3. crop them with the crop rule (``fld.crop``; with ``--points``, around the box of all the
   network's points, as training cropped) and normalize them as training does
   (``fld.export.calibration``), convert (``--quantize``: int8 = full integer, output clipped
   at ``--output_cap_percentile`` of the calibration faces' heatmap peaks,
   TFLITE_BUILTINS_INT8 only, ``--input_type`` int8 / uint8 input and output), audit
   the ops (``fld.export.audit``: no float32 in int8 mode, no > 5-D TRANSPOSE, only
   ops tflite-runtime 2.14 knows), embed the ``fld`` metadata (input size, stride,
   normalization, scheme, crop scale, quantization, decoding, Haar box mapping);
4. run the file through ``fld.runtime.Landmarker`` on the held-out faces and print its
   landmark difference to the float Keras model (mean / max, heatmap pixels) and both
   NMEs against the ground truth;
5. write ``--output`` atomically (nothing is written when the audit fails).

Last line: ``wrote PATH (N KiB, int8, audit passed)``. Errors (missing checkpoint, a
file that is not a Keras model, no calibration faces, a failed audit) exit with status 1
and a message naming the file.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from fld.cli import one_line_errors
from fld.codec import DECODE_METHODS, DEFAULT_DECODE, DEFAULT_DECODE_RADIUS
from fld.crop import DEFAULT_CROP_SCALE
from fld.export import DEFAULT_CAP_PERCENTILE, DEFAULT_FINE_RATIO, QUANTIZE_MODES
from fld.export.calibration import DEFAULT_OUTLIER_FACTOR

flags.DEFINE_string("checkpoint", None, "Trained model: .keras, .weights.h5 with --model, or "
                    "an fld int8 .tflite with --model (its weights read back into the float "
                    "network, e.g. to re-export the bundled default in another form).")
flags.DEFINE_enum("quantize", "int8", QUANTIZE_MODES, "int8: full integer; float16: fp16 "
                  "weights; dynamic: int8 weights, float activations; none: float32.")
flags.DEFINE_string("calibration_dir", None, "Annotated faces (.pts folder, .csv or WFLW "
                    ".txt): int8 calibration and the float-vs-converted check.")
flags.DEFINE_string("output", None, "The .tflite file to write.")
flags.DEFINE_integer("num_calibration", 300, "Faces used to calibrate int8.")
flags.DEFINE_integer("holdout_every", 0, "Leave training's validation split (every N-th face "
                     "by path, as tools/train.py --val_every) out of calibration and "
                     "checking, so that it stays unseen (0: use every face).")
flags.DEFINE_integer("num_check", 50, "Other faces (not calibration ones) used to compare "
                     "the converted model with the float Keras model (0: skip).")
flags.DEFINE_enum("input_type", "int8", ["int8", "uint8"], "int8 models: input/output type.")
flags.DEFINE_string("model", None, ".weights.h5 / .tflite checkpoints: the preset the model "
                    "was built with (the bundled default: mobilevitv2_100_gn).")
flags.DEFINE_alias("preset", "model")
flags.DEFINE_integer("image_size", None, ".weights.h5 only: the model's input size.")
flags.DEFINE_string("scheme", None, "Landmark scheme (.weights.h5: required; .keras: "
                    "checked against the model's).")
flags.DEFINE_string("points", None, "Export only a subset scheme of the model's points, "
                    "e.g. pair_51 from a 300w_68 model (the same network, 51 output channels).")
flags.DEFINE_integer("crop_box_passes", 2, "--points: the passes stored in the file's "
                     "crop_box (2 = crop again from the first prediction, through a map "
                     "from its points to the full box fitted here; fld.runtime.crop_box).",
                     lower_bound=1, upper_bound=3)
flags.DEFINE_float("crop_scale", DEFAULT_CROP_SCALE, "The crop rule's margin the model was "
                   "trained with (stored in the metadata).")
flags.DEFINE_enum("decode_method", "auto", ["auto"] + list(DECODE_METHODS),
                  "Host-side heatmap decoding stored in the metadata; auto = the method "
                  "with the lowest NME of the converted model on the held-out faces.")
flags.DEFINE_integer("decode_radius", DEFAULT_DECODE_RADIUS,
                     "Window radius of local_soft_argmax (cells).")
flags.DEFINE_float("outlier_factor", DEFAULT_OUTLIER_FACTOR, "int8: leave out of "
                   "calibration any face on which some layer's output peaks above this multiple of its median peak over the "
                   "calibration faces (one such face stretches int8 ranges; 0: keep all).")
flags.DEFINE_float("output_cap_percentile", DEFAULT_CAP_PERCENTILE, "int8: clip the output heatmaps at this "
                   "percentile of their peaks on the calibration faces, so that the int8 "
                   "output resolves typical maps (fld.export; 0: no clip).")
flags.DEFINE_float("fine_ratio", DEFAULT_FINE_RATIO, "int8 with the output clip: add a second output "
                   "holding the maps times this ratio, which keeps their low tails "
                   "(fld.export.capped_fused_model; the runtime merges the two); 0 = one "
                   "output.")
flags.DEFINE_bool("flip_pair", False, "Write a flip-pair model: input batch 2, the crop and "
                  "its mirror image, whose predictions the runtime averages (flip test in "
                  "one invoke; fld.export).")
flags.DEFINE_bool("split_attention", True, "MobileViT-v2: write each attention's input "
                  "projection as a q+k conv and a v conv with its ReLU fused (the same "
                  "function, faster int8; fld.export.split_attention); "
                  "--nosplit_attention keeps the training graph's one sliced conv.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.mark_flags_as_required(["checkpoint", "output"])
flags.register_validator("fine_ratio", lambda v: v == 0 or v > 1,
                         message="--fine_ratio must be 0 (one output) or > 1")
FLAGS = flags.FLAGS


class ConvertError(Exception):
    """A problem with the inputs: reported on stderr, exit status 1."""


def load_model():
    """The Keras ``LandmarkDetector`` named by the flags, and the scheme of all its
    network's points (``--points``: the model keeps a subset of them)."""
    from fld.keras_engine import load_keras_model

    path = FLAGS.checkpoint
    if not os.path.exists(path):
        raise ConvertError(f"checkpoint not found: {path}")
    try:
        model = load_keras_model(path, FLAGS.model, FLAGS.image_size, FLAGS.scheme)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    if FLAGS.scheme and path.endswith((".keras", ".tflite")):
        from fld.schemes import get_scheme

        if get_scheme(FLAGS.scheme) != model.scheme:
            raise ConvertError(f"{path}: the model predicts scheme {model.scheme.name!r} "
                               f"({model.scheme.num_points} points), not --scheme "
                               f"{FLAGS.scheme!r}")
    full_scheme = model.scheme
    if FLAGS.split_attention:
        from fld.export.split_attention import split_attention

        model = split_attention(model)   # same function, no int8 RELU outside XNNPACK
    if FLAGS.points:
        from fld.models import select_points

        try:
            model = select_points(model, FLAGS.points)
        except ValueError as e:
            raise ConvertError(f"{path}: --points {FLAGS.points}: {e}") from None
    return model, full_scheme


def subset_crop_box(records, indices):
    """--points: the ``CropBox`` fitted on ``records`` (all the network's points), with a
    line saying how well it fits."""
    from fld.runtime.crop_box import fit_crop_box

    crop_box, residuals = fit_crop_box([r.landmarks for r in records], indices,
                                       FLAGS.crop_box_passes)
    dx, dy, sx, sy = crop_box.mapping.as_tuple()
    note = (f"crop box ({FLAGS.points} box -> training crop box) fitted on "
            f"{residuals['faces']} faces: dx {dx:.4f} dy {dy:.4f} sx {sx:.4f} sy {sy:.4f}, "
            f"{crop_box.passes} pass(es); RMS residuals (box side) center x "
            f"{residuals['center_x']:.3f} y {residuals['center_y']:.3f}, width "
            f"{residuals['width']:.3f} height {residuals['height']:.3f}")
    if "points_map" in residuals:
        r = residuals["points_map"]
        note += (f"; re-crop points map residuals center x {r['center_x']:.3f} y "
                 f"{r['center_y']:.3f}, width {r['width']:.3f} height {r['height']:.3f}")
    return crop_box, note


def subset_records(records, indices):
    """The records with only the subset's points (the converted file's scheme)."""
    import dataclasses

    return [dataclasses.replace(r, landmarks=r.landmarks[indices]) for r in records]


def run() -> str:
    from fld import export
    from fld.export import calibration

    quantize = FLAGS.quantize
    from fld.fileio import check_writable_dir

    try:   # before any work: an unwritable --output fails now, not after the conversion
        check_writable_dir(os.path.dirname(os.path.abspath(FLAGS.output)), "--output folder")
    except OSError as e:
        raise ConvertError(str(e)) from None
    model, full_scheme = load_model()
    image_size = int(model.inputs[0].shape[1])
    calibration_faces, held_out, crop_box = [], [], None
    if quantize == "int8" and not FLAGS.calibration_dir:
        raise ConvertError("--quantize int8 needs --calibration_dir (annotated real faces)")
    if FLAGS.points and not FLAGS.calibration_dir:
        raise ConvertError(f"--points {FLAGS.points} needs --calibration_dir (faces annotated "
                           f"with all {full_scheme.num_points} points) to fit the file's "
                           f"crop box")
    if FLAGS.calibration_dir:
        # --points: the faces with all the network's points, cropped as training cropped
        records = calibration.read_calibration_records(FLAGS.calibration_dir, full_scheme)
        if FLAGS.holdout_every:
            from fld.data.records import split_records

            records, _ = split_records(records, FLAGS.holdout_every)
        calibration_faces, held_out = calibration.pick_calibration_faces(
            records, FLAGS.num_calibration, FLAGS.num_check)
        left_out = (f" (every {FLAGS.holdout_every}th face left out)"
                    if FLAGS.holdout_every else "")
        print(f"{FLAGS.calibration_dir}: {len(records)} faces{left_out}; calibration "
              f"{len(calibration_faces) if quantize == 'int8' else 0}, check {len(held_out)}")
        if FLAGS.points:
            indices = model.point_indices
            crop_box, note = subset_crop_box(records, indices)
            print(note)
            held_out = subset_records(held_out, indices)   # checked as users call it
    crops = None
    if quantize == "int8":
        crops, used = calibration.face_crops(calibration_faces, image_size, FLAGS.crop_scale,
                                             progress=FLAGS.progress, with_records=True)
        crops, note = calibration.drop_outliers(model, crops, used, FLAGS.outlier_factor)
        if note:
            print(note)
        crops = _Progress(crops, "calibrating", FLAGS.progress)

    auto = FLAGS.decode_method == "auto"
    try:
        result = export.export_landmarker(
            model, FLAGS.output, quantize, calibration_images=crops,
            input_type=FLAGS.input_type, crop_scale=FLAGS.crop_scale,
            decode_method=FLAGS.decode_method, decode_radius=FLAGS.decode_radius,
            output_cap_percentile=FLAGS.output_cap_percentile or None,
            fine_ratio=FLAGS.fine_ratio or None, flip_pair=FLAGS.flip_pair,
            crop_box=crop_box, held_out=held_out, progress=FLAGS.progress)
    except export.AuditError as e:
        raise ConvertError(f"{FLAGS.output} not written: {e}") from None
    print(f"audit: {result.report}")
    if result.output_cap is not None:
        print(f"output clipped at {result.output_cap:.4g} (the {FLAGS.output_cap_percentile:g}th "
              f"percentile of the heatmap peaks on the calibration faces)")
    if result.info.fine_output is not None:
        print(f"two-range output: fine maps x{result.info.fine_output[1]:g} in tensor "
              f"{result.info.fine_output[0]!r}")
    checked = result.check
    if checked:
        line = (f"{quantize} vs float Keras on {checked['faces']} held-out faces: landmark "
                f"difference mean {checked['mean_diff']:.3f}, max {checked['max_diff']:.3f} "
                f"heatmap px")
        print(line)
        if "nme_keras" in checked:
            print("NME (inter-ocular %) by host-side decode method:")
            for method, value in checked["nme_converted"].items():
                print(f"  {method:18s} {quantize}: {100 * value:6.2f}   float: "
                      f"{100 * checked['nme_keras'][method]:6.2f}")
        if "decode" in checked:
            print(f"decode method stored in the model: {checked['decode']} (lowest NME "
                  f"of the {quantize} model)")
            got, want = (100 * checked[k][checked["decode"]] for k in ("nme_converted", "nme_keras"))
            if got > want + 1.0:
                print(f"WARNING: the {quantize} model is {got - want:.2f} NME points worse than "
                      f"the float one on the held-out faces: check the calibration faces")
        elif auto:
            print(f"decode method stored in the model: {DEFAULT_DECODE} (no ground truth "
                  f"to choose by)")
    kib = len(result.tflite_bytes) / 1024
    label = "int8, uint8 input" if quantize == "int8" and FLAGS.input_type == "uint8" \
        else quantize
    if FLAGS.flip_pair:
        label += ", flip pair"
    return f"wrote {FLAGS.output} ({kib:.0f} KiB, {label}, audit passed)"


class _Progress:
    """An iterable over ``items`` that shows a progress bar each time it is iterated."""

    def __init__(self, items, desc, enabled):
        self.items, self.desc, self.enabled = list(items), desc, enabled

    def __iter__(self):
        from tqdm import tqdm

        return iter(tqdm(self.items, desc=self.desc, unit="face", file=sys.stderr,
                         disable=None if self.enabled else True))

    def __len__(self):
        return len(self.items)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"convert.py: error: unexpected arguments {argv[1:]}")
    from fld.export.calibration import CalibrationError

    try:
        print(run())
    except (ConvertError, CalibrationError) as e:
        sys.exit(f"convert.py: error: {e}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "convert.py"))
