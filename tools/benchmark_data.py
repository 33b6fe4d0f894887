"""Measures the input pipeline's throughput with augmentation and all targets on.

    python tools/benchmark_data.py --data_dir ../shared/data/300w/train \
        --scheme 300w_68 --image_size 256

Prints the one-off cost of decoding and cropping every face into memory, then the
steady-state rate over full epochs; last line ``pipeline_img_per_s: N``.
"""

import time

from absl import app, flags

from fld.cli import one_line_errors
from fld.codec import HeatmapCodec
from fld.data.pipeline import CropCache, make_dataset
from fld.data.readers import read_annotations
from fld.schemes import get_scheme

flags.DEFINE_string("data_dir", None, "Annotated faces (folder of .pts, .csv or WFLW .txt).")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme name or scheme .json path.")
flags.DEFINE_integer("image_size", 256, "Input crop size in pixels.")
flags.DEFINE_integer("batch_size", 32, "Faces per batch.")
flags.DEFINE_integer("epochs", 2, "Timed epochs (after one warm-up epoch).")
flags.mark_flag_as_required("data_dir")
FLAGS = flags.FLAGS


def main(_):
    scheme = get_scheme(FLAGS.scheme)
    records = read_annotations(FLAGS.data_dir, scheme=scheme)
    codec = HeatmapCodec(scheme, image_size=FLAGS.image_size)
    start = time.perf_counter()
    cache = CropCache.build(records, codec)
    build_s = time.perf_counter() - start
    print(f"faces: {len(cache)}  cache: {cache.images.nbytes / 2**20:.0f} MiB images + "
          f"{cache.edges.nbytes / 2**20:.0f} MiB edge maps, built in {build_s:.1f} s "
          f"({len(cache) / build_s:.0f} img/s, once per run)")
    ds = make_dataset(cache, codec, batch_size=FLAGS.batch_size, training=True, seed=0)
    for _ in ds:  # warm-up epoch: traces the graph, fills prefetch buffers
        pass
    count, start = 0, time.perf_counter()
    for _ in range(FLAGS.epochs):
        for images, _targets in ds:
            count += int(images.shape[0])
    rate = count / (time.perf_counter() - start)
    print(f"augmented batches of {FLAGS.batch_size} at {FLAGS.image_size}px with heatmaps, "
          f"edge maps and landmarks: {count} faces")
    print(f"pipeline_img_per_s: {rate:.1f}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "benchmark_data.py"))
