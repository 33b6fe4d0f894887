"""Finds faces that drive a model's layers far out of their usual range (inference mode).

    python tools/probe_layers.py --model runs/default/student_100/best.keras \\
        --data_dir ../shared/data/300w/train --every 10

For every layer (those of a nested backbone included) it takes the largest absolute
output on each face, then prints the layers whose worst face peaks above ``--factor``
times their median peak (worst first, at most ``--top``), with that face, and the faces
that do so most often. Such faces are where a float model breaks down (a runaway
residual stream) and what stretches int8 ranges at calibration (``tools/convert.py``
leaves them out with ``--outlier_factor``). Last line: ``max_ratio: R`` (the largest
worst-to-median peak ratio over all layers).
"""

from __future__ import annotations

import collections
import os
import sys

import numpy as np
from absl import app, flags

flags.DEFINE_string("model", None, "Keras model (.keras) to probe.")
flags.DEFINE_string("data_dir", None, "Annotated faces: .pts folder, .csv or WFLW .txt.")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme of the annotations.")
flags.DEFINE_integer("every", 1, "Probe every N-th face (sorted by path), e.g. 10 for the "
                     "validation split of tools/train.py.")
flags.DEFINE_integer("offset", 0, "Which face of each group of --every.")
flags.DEFINE_integer("limit", 0, "Probe at most this many faces (0 = all).")
flags.DEFINE_float("factor", 10.0, "Report layers whose worst face peaks above this many "
                   "times their median peak.")
flags.DEFINE_integer("top", 25, "Print at most this many layers.")
flags.mark_flags_as_required(["model", "data_dir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from fld import export
    from fld.export.calibration import face_crops
    from fld.data.readers import read_annotations
    from fld.keras_engine import load_keras_model
    from fld.schemes import get_scheme

    try:
        model = load_keras_model(FLAGS.model)
        if not os.path.exists(FLAGS.data_dir):
            raise FileNotFoundError(f"--data_dir {FLAGS.data_dir!r} does not exist")
        records = read_annotations(FLAGS.data_dir, scheme=get_scheme(FLAGS.scheme))
        records = sorted(records, key=lambda r: r.image_path)[FLAGS.offset::max(1, FLAGS.every)]
        if FLAGS.limit:
            records = records[:FLAGS.limit]
        if not records:
            raise ValueError(f"--data_dir {FLAGS.data_dir!r}: no annotated faces selected")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    crops, used = face_crops(records, model.input_shape[1], desc="probe crops",
                             with_records=True)
    names, peaks = export.layer_peaks(model, crops)            # (faces, tensors)
    median = np.maximum(np.median(peaks, axis=0), 1e-6)
    ratio = peaks / median
    worst_face = ratio.argmax(axis=0)
    worst_ratio = ratio.max(axis=0)
    print(f"{FLAGS.model}: {len(names)} layer outputs on {len(used)} faces "
          f"({FLAGS.data_dir}, every {FLAGS.every})")
    flagged = np.flatnonzero(worst_ratio > FLAGS.factor)
    order = flagged[np.argsort(-worst_ratio[flagged])][:FLAGS.top]
    if len(order):
        print(f"{'layer':36s} {'median peak':>12s} {'worst peak':>12s} {'ratio':>10s}  face")
        for j in order:
            path = os.path.relpath(used[worst_face[j]].image_path, FLAGS.data_dir)
            print(f"{names[j]:36s} {median[j]:12.3g} {peaks[worst_face[j], j]:12.3g} "
                  f"{worst_ratio[j]:10.3g}  {path}")
    print(f"{len(flagged)} of {len(names)} layer outputs peak above {FLAGS.factor:g}x their "
          f"median on some face")
    counts = collections.Counter()
    for i in np.flatnonzero((ratio > FLAGS.factor).any(axis=1)):
        counts[i] = int((ratio[i] > FLAGS.factor).sum())
    if counts:
        print(f"faces driving any layer above {FLAGS.factor:g}x ({len(counts)}): " + ", ".join(
            f"{os.path.relpath(used[i].image_path, FLAGS.data_dir)} ({n} layers)"
            for i, n in counts.most_common(8)) + (", ..." if len(counts) > 8 else ""))
    print(f"max_ratio: {float(worst_ratio.max()):.4g}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
