"""Evaluates landmark models on an annotated folder: tables, CED curves, worst faces.

    python tools/evaluate.py --model work/student/best.keras --model student_int8.tflite \
        --data_dir ../shared/data/300w/train --scheme 300w_68 --boxes gt --report_dir report

Keras checkpoints (.keras, or .weights.h5 with --preset/--image_size) and .tflite files
run through the same runtime code (crop rule, decode), so float vs int8 differences are
the models' own. ``--boxes gt`` crops from the ground-truth landmark box (the 300-W
protocol: the tight box of the scheme's points; ``--scheme pair_51`` gives a 51-point
file the box of the 51 inner points, which the file maps onto its training crop with its
``crop_box``); ``--boxes detector`` runs the face detector (``--detector``, BlazeFace by
default) with ``Landmarker.detect``'s landmark re-crop (``--passes``) and also reports
the detection rate.
Prints one table per model (per sub-folder and overall, NME in percent); the last line is
``nme_io: N``: the overall mean inter-ocular NME (percent) of the first --model.
"""

import os

from absl import app, flags

from fld import evaluation
from fld.cli import one_line_errors
from fld.codec import DECODE_METHODS
from fld.data.readers import read_annotations
from fld.fileio import check_writable_dir
from fld.runtime.bundled import resolve_model
from fld.schemes import get_scheme

flags.DEFINE_multi_string("model", None, "Model file(s): .tflite, .keras or .weights.h5, or a bundled model's name "
                          "(default, default_51, fast).")
flags.DEFINE_string("data_dir", None, "Annotated faces: .pts folder, .csv or WFLW .txt.")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme of the annotations and models.")
flags.DEFINE_enum("boxes", "gt", evaluation.BOX_SOURCES, "Where face boxes come from.")
flags.DEFINE_string("detector", None, "--boxes detector: blazeface (default), "
                    "blazeface_full, haar or a YuNet .onnx path.")
flags.DEFINE_integer("passes", None, "--boxes detector: predictions per face, each re-cropped "
                     "around the last one's landmarks (default: Landmarker.detect's, 2).")
flags.DEFINE_string("report_dir", None, "Write CED plot, per-face CSV, worst faces, summary.")
flags.DEFINE_integer("every", 1, "Evaluate every N-th face (sorted by path), e.g. 10 for "
                     "the validation split of tools/train.py (with --offset).")
flags.DEFINE_integer("offset", 0, "Which face of each group of --every.")
flags.DEFINE_integer("limit", 0, "Evaluate at most this many faces (0 = all).")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads for .tflite models.")
flags.DEFINE_string("preset", None, "Preset of a .weights.h5 model.")
flags.DEFINE_integer("image_size", None, "Input size of a .weights.h5 model.")
flags.DEFINE_enum("decode_method", None, list(DECODE_METHODS), "Host-side heatmap decoding "
                  "for every model (default: a .tflite's own metadata; soft_argmax for Keras "
                  "models, as in training). Force one to compare float and int8 alike.")
flags.DEFINE_string("compare_dlib", None, "dlib 68-point shape predictor .dat file to add as "
                    "a side-by-side row (needs the optional dlib package).")
flags.DEFINE_bool("flip_test", False, "Also run each model on the mirrored crop and average "
                  "the two predictions (twice the model time).")
flags.DEFINE_bool("reference_kernels", False, "Run .tflite models on TFLite's builtin "
                  "kernels instead of the XNNPACK delegate: the same result on every CPU "
                  "(XNNPACK picks int8 kernels by instruction set). Keras models are "
                  "unaffected.")
flags.DEFINE_bool("skip_bad", False, "Skip (and count) faces with a bad annotation or an "
                  "unreadable image instead of stopping at the first.")
flags.mark_flags_as_required(["model", "data_dir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.report_dir:
        check_writable_dir(FLAGS.report_dir, "--report_dir")
    scheme = get_scheme(FLAGS.scheme)
    records = sorted(read_annotations(FLAGS.data_dir, scheme=scheme, skip_bad=FLAGS.skip_bad),
                     key=lambda r: r.image_path)
    records = records[FLAGS.offset::max(1, FLAGS.every)]
    if FLAGS.limit:
        records = records[: FLAGS.limit]
    models = [resolve_model(p) for p in FLAGS.model]   # bundled names -> their files
    if len(set(models)) != len(models):
        raise ValueError("the same --model is given twice")
    names = [os.path.basename(p) for p in models]
    if len(set(names)) != len(names):  # e.g. two runs' best.keras: name them by path
        names = [os.path.normpath(p) for p in models]
    predictors = {name: evaluation.load_predictor(p, FLAGS.decode_method, FLAGS.num_threads,
                                                  FLAGS.preset, FLAGS.image_size, FLAGS.scheme,
                                                  flip_test=FLAGS.flip_test,
                                                  reference_kernels=(FLAGS.reference_kernels
                                                                     and p.endswith(".tflite")),
                                                  detector=FLAGS.detector)
                  for name, p in zip(names, models)}
    for name, predictor in predictors.items():
        if predictor.scheme.num_points != scheme.num_points:
            raise ValueError(f"{name} predicts {predictor.scheme.num_points} "
                     f"points, scheme {scheme.name} has {scheme.num_points}")
    if FLAGS.compare_dlib:
        from fld.dlib_baseline import DlibPredictor, dlib_missing_reason

        reason = dlib_missing_reason()
        if reason:
            print(f"--compare_dlib skipped: {reason}")
        else:
            predictors["dlib"] = DlibPredictor(FLAGS.compare_dlib)
    from fld.runtime.interpreter import describe_cpu

    print(f"cpu: {describe_cpu()}")
    results = {}
    for name, predictor in predictors.items():
        skipped = [] if FLAGS.skip_bad else None
        passes = FLAGS.passes if name != "dlib" else None
        results[name] = evaluation.evaluate(records, predictor, scheme, FLAGS.boxes,
                                            skipped=skipped, passes=passes)
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
        rows = evaluation.summary_rows(results[name])
        engine = predictor.model
        kernels = (f", {engine.runtime} {engine.kernels} kernels"
                   if hasattr(engine, "kernels") else "")
        flip = ""
        if getattr(predictor, "flip_test", False):
            flip = (", flip pair (one invoke)" if predictor.info.flip_pair
                    else ", flip test (two runs)")
        print(f"\n{name}  ({len(results[name])} faces, {scheme.name}, boxes: {FLAGS.boxes}{kernels}"
              f"{flip})")
        print(evaluation.format_table(rows))
        if FLAGS.boxes == "detector":
            overall = rows[-1]
            detector = getattr(predictor, "detector", None)
            from fld.runtime.landmarker import DEFAULT_PASSES

            print(f"detector: {getattr(detector, 'name', 'its own')}"
                  + (f", {FLAGS.passes or DEFAULT_PASSES} pass(es)" if name != "dlib" else ""))
            print(f"detection rate: {100 * overall['detected'] / overall['faces']:.1f}%")
    if FLAGS.report_dir:
        paths = evaluation.write_report(results, FLAGS.report_dir)
        print("\nreport: " + ", ".join(sorted(paths.values())))
    first = evaluation.summary_rows(results[next(iter(results))])[-1]
    print(f"nme_io: {first.get('nme_io_mean', float('nan')):.4f}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "evaluate.py"))
