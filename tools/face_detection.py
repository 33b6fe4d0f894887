"""Face detection on annotated faces: detection rate, box accuracy, and the box mappings.

    python tools/face_detection.py                         # BlazeFace on 300w/train
    python tools/face_detection.py --detector haar
    python tools/face_detection.py --fit                   # refit BOX_MAPPINGS, print them

For every face of ``--data_dir`` (one annotated face per image) the raw detector runs
once; a face counts as found when a mapped detector box overlaps its ground-truth
landmark box (the tight box of its 68 points) by IoU >= ``--min_iou`` (0.5). Printed per
scheme (300w_68 and pair_51, whose box is that of the 51 inner points): faces found,
median IoU after the mapping, and the detector's median time per image.

``--fit`` refits the detector-box -> landmark-box mapping per scheme
(``fld.runtime.detector.measure_box_mapping``, detections matched by IoU >= 0.3) on the
training faces only, i.e. not the validation split (every ``--val_every``-th face by
sorted path, offset 0, as tools/train.py splits), prints the fit's residuals and the
mappings as Python for ``fld/runtime/detector.py``, and scores the detection rate with
the new mappings. The last line is ``detection_rate: N`` (percent, 300w_68).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

from fld.cli import one_line_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_300W = os.path.join(os.path.dirname(REPO), "shared", "data", "300w", "train")
SCHEMES = ("300w_68", "pair_51")

flags.DEFINE_string("data_dir", DATA_300W, "Annotated faces (a .pts folder, .csv, ...).")
flags.DEFINE_string("detector", "blazeface", "A fld.runtime.detector.DETECTORS name "
                    "(blazeface, blazeface_full, haar) or a YuNet .onnx path.")
flags.DEFINE_string("compare", None, "Also time this detector (e.g. haar) on every image, "
                    "interleaved, and count the images where --detector is slower.")
flags.DEFINE_bool("fit", False, "Refit the box mappings on the training faces and print them.")
flags.DEFINE_integer("val_every", 10, "--fit leaves out every N-th face (the validation split).")
flags.DEFINE_float("min_iou", 0.5, "IoU with the landmark box for a face to count as found.")
flags.DEFINE_integer("every", 1, "Use every N-th face (sorted by path), for quick runs.")
flags.DEFINE_integer("limit", 0, "Use at most this many faces (0: all).")
FLAGS = flags.FLAGS


def run_detector(detect, records, other=None):
    """Raw detector boxes per record and the time of each call (ms); with ``other`` (a
    second detector) also its time on the same image, right after."""
    from tqdm import tqdm

    from fld.images import read_image_rgb

    boxes, times, other_times = [], [], []
    for record in tqdm(records, desc="detecting", unit="img", file=sys.stderr, disable=None):
        image = read_image_rgb(record.image_path)
        start = time.perf_counter()
        found = detect(image)
        times.append((time.perf_counter() - start) * 1e3)
        boxes.append(np.asarray(found, np.float32).reshape(-1, 4))
        if other is not None:
            start = time.perf_counter()
            other(image)
            other_times.append((time.perf_counter() - start) * 1e3)
    return boxes, np.asarray(times), np.asarray(other_times)


def best_iou(raw_boxes, mapping, truth) -> float:
    """The largest IoU of a mapped detector box with the landmark box (0 if none)."""
    from fld.runtime.detector import box_iou

    if not len(raw_boxes):
        return 0.0
    return float(box_iou(mapping.apply(raw_boxes), truth).max())


def format_mapping(scheme: str, mapping) -> str:
    return (f'    "{scheme}": BoxMapping(dx={mapping.dx:.4f}, dy={mapping.dy:.4f}, '
            f'sx={mapping.sx:.4f}, sy={mapping.sy:.4f}),')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fld.crop import box_from_landmarks
    from fld.data.readers import read_annotations
    from fld.runtime.detector import (BOX_MAPPINGS, IDENTITY_MAPPING, default_box_mapping,
                                      make_raw_detector, measure_box_mapping, YuNetDetector)
    from fld.runtime.interpreter import describe_cpu
    from fld.schemes import adapt_landmarks, get_scheme

    records = sorted(read_annotations(FLAGS.data_dir, scheme=get_scheme("300w_68")),
                     key=lambda r: r.image_path)
    indices = list(range(len(records)))[::max(1, FLAGS.every)]
    if FLAGS.limit:
        indices = indices[:FLAGS.limit]
    records = [records[i] for i in indices]
    def build(name):
        return YuNetDetector(name) if name.lower().endswith(".onnx") else make_raw_detector(name)

    name = FLAGS.detector
    print(f"cpu: {describe_cpu()}")
    raw, times, other = run_detector(build(name), records,
                                     build(FLAGS.compare) if FLAGS.compare else None)
    print(f"detector: {name}, {len(records)} faces of {FLAGS.data_dir}, median "
          f"{np.median(times):.2f} ms per image (p90 {np.percentile(times, 90):.2f} ms, max "
          f"{times.max():.2f} ms)")
    if FLAGS.compare:
        ratio = other / times
        print(f"{FLAGS.compare}: median {np.median(other):.2f} ms per image, same images "
              f"interleaved; {name} slower on {int((times > other).sum())} of {len(times)} "
              f"images; {FLAGS.compare} / {name} time: median {np.median(ratio):.1f}x, "
              f"min {ratio.min():.1f}x")
    rate_68 = float("nan")
    fitted = {}
    for scheme_name in SCHEMES:
        scheme = get_scheme(scheme_name)
        landmarks = [adapt_landmarks(np.asarray(r.landmarks, np.float32), scheme, "300w_68")
                     for r in records]
        truth = [box_from_landmarks(p) for p in landmarks]
        if FLAGS.fit:
            train = [i for i, index in enumerate(indices) if index % FLAGS.val_every]
            result = measure_box_mapping([(i, landmarks[i]) for i in train],
                                         lambda i: raw[i])
            mapping = fitted[scheme_name] = result["mapping"]
            residuals = ", ".join(f"{k} {v:.3f}" for k, v in result["residuals"].items())
            print(f"{scheme_name}: fitted on {result['detected']} of {result['images']} "
                  f"training faces; RMS residuals (of the box's longer side): {residuals}")
        elif name in BOX_MAPPINGS:
            mapping = default_box_mapping(name, scheme_name)
        else:
            mapping = IDENTITY_MAPPING
        ious = np.array([best_iou(b, mapping, t) for b, t in zip(raw, truth)])
        found = ious >= FLAGS.min_iou
        before = np.array([best_iou(b, IDENTITY_MAPPING, t) for b, t in zip(raw, truth)])
        missed = [os.path.relpath(records[i].image_path, FLAGS.data_dir)
                  for i in np.flatnonzero(~found)]
        print(f"{scheme_name}: found {found.sum()} / {len(found)} ({100 * found.mean():.2f} %) "
              f"at IoU >= {FLAGS.min_iou:g} after the mapping; median IoU "
              f"{np.median(ious):.3f} after, {np.median(before):.3f} before"
              + (f"; missed: {', '.join(missed[:8])}{' ...' if len(missed) > 8 else ''}"
                 if missed else ""))
        if scheme_name == "300w_68":
            rate_68 = 100 * found.mean()
    if fitted:
        print(f"\n# {name} -> landmark box (tools/face_detection.py --fit):")
        for scheme_name, mapping in fitted.items():
            print(format_mapping(scheme_name, mapping))
    print(f"detection_rate: {rate_68:.2f}")
    return 0


if __name__ == "__main__":
    app.run(one_line_errors(main, "face_detection.py"))
