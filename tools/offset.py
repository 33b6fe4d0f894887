"""Mean signed landmark error (x, y) of a model: where its points sit against the annotation.

    python tools/offset.py --data_dir ../shared/data/300w/train --every 10
    python tools/offset.py --model fld/runtime/assets/default_51.tflite --scheme pair_51 ...

Ground-truth boxes, the runtime's own crop and decode (``fld.runtime.Landmarker``), one
pass. For every face, three predictions from the same invoke:

- ``pair``: the crop and its mirror image averaged (a flip-pair file's output; for other
  files the flip test, two runs);
- ``crop``: the crop's own prediction alone;
- ``mirror``: the mirror image's prediction alone, mirrored back.

Each runs on the images as they are and on their mirror images (image and annotation
mirrored, ``Scheme.flip``). A half-pixel slip in the crop, the decode or the flip pair's
mirror moves the points the same way on both; an offset that the annotation carries
(the network, trained with flip augmentation, cannot learn a left/right bias) changes
sign with the mirror. So ``(as is + mirrored) / 2`` is the pipeline's x offset and
``(as is - mirrored) / 2`` the data's. The per-face x error is also fitted as
``a + c * image pixels per crop pixel``: ``a`` (image pixels, whatever the face's size)
points at an annotation convention, ``c`` (crop pixels) at the crop frame.

Prints one table (pixels and percent of the inter-ocular distance) per mode, by subset,
and ``x_offset_px: N`` (pair, as is) last. The CPU is printed first.
"""

from __future__ import annotations

import collections
import sys

import numpy as np
from absl import app, flags

from fld.cli import one_line_errors

flags.DEFINE_string("model", None, "The .tflite model (default: the bundled 68-point file).")
flags.DEFINE_string("data_dir", None, "Annotated faces: .pts folder, .csv or WFLW .txt.")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme of the annotations and model.")
flags.DEFINE_integer("every", 10, "Every N-th face by path (10: the validation split).")
flags.DEFINE_integer("offset", 0, "Which face of each group of --every.")
flags.DEFINE_integer("limit", 0, "At most this many faces (0 = all).")
flags.DEFINE_bool("reference_kernels", False, "TFLite's builtin kernels (no XNNPACK).")
flags.mark_flags_as_required(["data_dir"])
FLAGS = flags.FLAGS

MODES = ("pair", "crop", "mirror")


def predictions(landmarker, image, box) -> dict:
    """{mode: (K, 2) image points} for one face (module docstring), one invoke."""
    from fld.crop import invert_affine, transform_points

    inputs, matrix = landmarker.crop(image, box)
    maps = landmarker.crop_heatmaps(inputs)            # (2, H, W, K): crop, mirror
    info = landmarker.info
    crop, mirrored = info.codec.decode_to_image(maps, info.decode_method, info.decode_radius)
    back = invert_affine(matrix)
    mirror = landmarker.scheme.flip(mirrored, info.image_size)
    return {"pair": transform_points(back, 0.5 * (crop + mirror)),
            "crop": transform_points(back, crop), "mirror": transform_points(back, mirror),
            "zoom": float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))}


def measure(landmarker, records, scheme) -> dict:
    """Per face and mode, the signed errors: {(view, mode): {"dx", "dy", "io", "zoom",
    "nme", "subset"}} with view ``as_is`` / ``mirrored``; dx, dy: (N, K) pixels."""
    from fld import metrics
    from fld.crop import box_from_landmarks
    from fld.images import read_image_rgb

    out = collections.defaultdict(lambda: collections.defaultdict(list))
    for record in records:
        image = read_image_rgb(record.image_path)
        gt = np.asarray(record.landmarks, np.float32)
        views = {"as_is": (image, gt),
                 "mirrored": (np.ascontiguousarray(image[:, ::-1]),
                              scheme.flip(gt, image.shape[1]))}
        for view, (img, truth) in views.items():
            got = predictions(landmarker, img, box_from_landmarks(truth))
            io = float(metrics.normalizer(truth[None], scheme)[0])
            for mode in MODES:
                d = got[mode] - truth
                row = out[(view, mode)]
                row["dx"].append(d[:, 0])
                row["dy"].append(d[:, 1])
                row["io"].append(io)
                row["zoom"].append(got["zoom"])
                row["subset"].append(record.subset)
                row["nme"].append(float(metrics.nme(got[mode][None], truth[None], scheme)[0]))
    return {key: {k: np.asarray(v) for k, v in row.items()} for key, row in out.items()}


def summary(row: dict, mask=None) -> dict:
    """Mean signed x / y error (pixels, % io), NME, and NME with the mean x/y offset of
    all the faces removed."""
    mask = np.ones(len(row["io"]), bool) if mask is None else mask
    dx, dy, io = row["dx"][mask], row["dy"][mask], row["io"][mask]
    mx, my = float(dx.mean()), float(dy.mean())
    shifted = np.sqrt((dx - mx) ** 2 + (dy - my) ** 2).mean(axis=1) / io
    return {"faces": int(mask.sum()), "dx_px": mx, "dy_px": my,
            "dx_io": 100 * float((dx.mean(axis=1) / io).mean()),
            "dy_io": 100 * float((dy.mean(axis=1) / io).mean()),
            "nme": 100 * float(row["nme"][mask].mean()),
            "nme_no_offset": 100 * float(shifted.mean())}


def size_fit(row: dict) -> tuple[float, float]:
    """Per-face mean x error = a + c * (image px per crop px), least squares: (a, c)."""
    per_crop_px = 1.0 / row["zoom"]
    design = np.stack([np.ones_like(per_crop_px), per_crop_px], axis=1)
    (a, c), *_ = np.linalg.lstsq(design, row["dx"].mean(axis=1), rcond=None)
    return float(a), float(c)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fld.data.readers import read_annotations
    from fld.runtime import Landmarker
    from fld.runtime.interpreter import describe_cpu
    from fld.schemes import get_scheme

    scheme = get_scheme(FLAGS.scheme)
    records = sorted(read_annotations(FLAGS.data_dir, scheme=scheme), key=lambda r: r.image_path)
    records = records[FLAGS.offset::max(1, FLAGS.every)]
    if FLAGS.limit:
        records = records[:FLAGS.limit]
    landmarker = Landmarker(FLAGS.model, flip_test=True, reference_kernels=FLAGS.reference_kernels)
    if landmarker.scheme.num_points != scheme.num_points:
        raise ValueError(f"the model predicts {landmarker.scheme.num_points} points, scheme "
                         f"{scheme.name} has {scheme.num_points}")
    print(f"cpu: {describe_cpu()}")
    print(f"{len(records)} faces, {scheme.name}, GT boxes, one pass, "
          f"{'flip pair' if landmarker.info.flip_pair else 'flip test (two runs)'}")
    rows = measure(landmarker, records, scheme)
    subsets = sorted({s for s in rows[("as_is", "pair")]["subset"]})
    header = (f"{'view':9s} {'mode':6s} {'subset':7s} {'faces':>5s} {'dx px':>7s} {'dy px':>7s} "
              f"{'dx %io':>7s} {'dy %io':>7s} {'NME %':>6s} {'NME-off':>7s}")
    print(header)
    for (view, mode), row in rows.items():
        for name in ["all"] + (subsets if len(subsets) > 1 else []):
            mask = None if name == "all" else row["subset"] == name
            s = summary(row, mask)
            print(f"{view:9s} {mode:6s} {name or '-':7s} {s['faces']:5d} {s['dx_px']:7.3f} "
                  f"{s['dy_px']:7.3f} {s['dx_io']:7.3f} {s['dy_io']:7.3f} {s['nme']:6.3f} "
                  f"{s['nme_no_offset']:7.3f}")
    print("x offset split (pixels): pipeline = (as is + mirrored) / 2, data = (as is - "
          "mirrored) / 2; size fit dx = a + c * image px per crop px (as is)")
    for mode in MODES:
        a, b = (summary(rows[(view, mode)])["dx_px"] for view in ("as_is", "mirrored"))
        fit_a, fit_c = size_fit(rows[("as_is", mode)])
        print(f"  {mode:6s} pipeline {0.5 * (a + b):+.3f}  data {0.5 * (a - b):+.3f}  "
              f"size fit a {fit_a:+.3f} image px, c {fit_c:+.3f} crop px")
    print(f"x_offset_px: {summary(rows[('as_is', 'pair')])['dx_px']:.4f}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "offset.py"))
