"""Writes a PNG of one augmented training batch: faces, landmarks, heatmaps, edges.

    python tools/visualize_data.py --data_dir ../shared/data/300w/train \
        --scheme 300w_68 --output augmented_batch.png

Look at it: the red dots must sit on the facial features, the yellow heatmap peaks on
the dots and the cyan edge curves through them, also on mirrored faces.
"""

from absl import app, flags

from fld.cli import one_line_errors
from fld.codec import HeatmapCodec
from fld.data.pipeline import CropCache, make_dataset
from fld.data.readers import read_annotations
from fld.data.visualize import batch_grid_png
from fld.schemes import get_scheme

flags.DEFINE_string("data_dir", None, "Annotated faces (folder of .pts, .csv or WFLW .txt).")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme name or scheme .json path.")
flags.DEFINE_integer("image_size", 256, "Input crop size in pixels.")
flags.DEFINE_integer("num", 16, "Faces to show.")
flags.DEFINE_integer("seed", 0, "Augmentation seed.")
flags.DEFINE_boolean("augment", True, "Show augmented faces (False: validation crops).")
flags.DEFINE_string("output", "augmented_batch.png", "PNG to write.")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main(_):
    scheme = get_scheme(FLAGS.scheme)
    records = read_annotations(FLAGS.data_dir, scheme=scheme)[: FLAGS.num * 4]
    codec = HeatmapCodec(scheme, image_size=FLAGS.image_size)
    cache = CropCache.build(records, codec)
    ds = make_dataset(cache, codec, batch_size=FLAGS.num, training=FLAGS.augment,
                      seed=FLAGS.seed)
    images, targets = next(iter(ds))
    targets = {k: v.numpy() for k, v in targets.items()}
    path = batch_grid_png(images.numpy(), targets, FLAGS.output, codec,
                          title=f"{scheme.name}, {FLAGS.image_size}px, "
                                f"{'augmented' if FLAGS.augment else 'validation'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "visualize_data.py"))
