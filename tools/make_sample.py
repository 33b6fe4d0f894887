"""Copies a small, spread sample of held-out 300-W faces into the repository.

    python tools/make_sample.py --data_dir ../shared/data/300w/train --output data/sample_300w

The faces come from the validation split of tools/train.py (every 10th face by path), so
the bundled default model never trained on them, spread evenly over that split (and so
over LFPW, HELEN and AFW). Each ``NAME.jpg`` + ``NAME.pts`` is copied unchanged, named
``SUBSET_NAME`` so names stay unique; a README with the 300-W terms goes beside them.
"""

import os
import shutil

import numpy as np
from absl import app, flags

from fld.cli import one_line_errors
from fld.data.readers import read_annotations
from fld.data.records import split_records
from fld.fileio import write_text_atomic

flags.DEFINE_string("data_dir", None, "The 300-W training faces (.pts folder).")
flags.DEFINE_string("output", "data/sample_300w", "Folder to write.")
flags.DEFINE_integer("num", 60, "Faces to copy.")
flags.DEFINE_integer("val_every", 10, "The validation split of training: every N-th face.")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS

TERMS = """# A sample of 300-W faces ({num} images, 68 points)

Copied by `python tools/make_sample.py --data_dir ../shared/data/300w/train --output {output}`
from the validation split (every {every}th face by path) of the 300-W training sources (LFPW,
HELEN, AFW crops with the iBUG 68-point re-annotation): the bundled default model did not
train on these faces. `.pts` files are iBUG format, 1-based pixel coordinates.

Used by the quickstart (`tools/demo.py`) and by tests that need real faces on a fresh clone.

**Terms: the 300-W annotations and images are for research use only, not commercial use.**
See https://ibug.doc.ic.ac.uk/resources/300-W/ . Anything trained on them inherits that
restriction.
"""


def main(_):
    records = read_annotations(FLAGS.data_dir, scheme="300w_68")
    _, held_out = split_records(records, FLAGS.val_every)
    if len(held_out) < FLAGS.num:
        raise ValueError(f"{FLAGS.data_dir}: only {len(held_out)} held-out faces, "
                         f"--num={FLAGS.num}")
    picks = np.round(np.linspace(0, len(held_out) - 1, FLAGS.num)).astype(int)
    os.makedirs(FLAGS.output, exist_ok=True)
    for i in picks:
        image = held_out[i].image_path
        subset = os.path.basename(os.path.dirname(image))
        stem = os.path.splitext(os.path.basename(image))[0]
        for src in (image, os.path.splitext(image)[0] + ".pts"):
            dst = os.path.join(FLAGS.output, f"{subset}_{stem}{os.path.splitext(src)[1]}")
            shutil.copyfile(src, dst)
    write_text_atomic(os.path.join(FLAGS.output, "README.md"),
                      TERMS.format(num=FLAGS.num, output=FLAGS.output, every=FLAGS.val_every))
    print(f"wrote {FLAGS.num} faces to {FLAGS.output}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "make_sample.py"))
