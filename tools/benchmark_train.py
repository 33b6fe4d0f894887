"""Measures the full training step (LandmarkTrainer.train_step: forward, STAR + AAM [+ KD] losses,
backward, two AdamW updates, EMA) on synthetic batches of the right shapes.

    python tools/benchmark_train.py --model mobilevitv2_050 --image_size 256          # student
    python tools/benchmark_train.py --model swinv2_cpu_window8_256 --image_size 256   # teacher
    python tools/benchmark_train.py --model mobilevitv2_050 --teacher swinv2_cpu_window8_256
    python tools/benchmark_train.py --model mobilevitv2_050 --jit_compile=false --threads 1

``--layers`` also times the forward+backward pass of each top-level block of the backbone
(stem and MV2 layers, each MobileViT block) and of the heads, to show where the time goes.
Numbers on a shared CPU are noisy: compare settings within one run (``--compare``).
Last line: ``train_img_per_s: N``. Results and what helped: benchmarks/TRAIN_SPEED.md.
"""

import time

from absl import app, flags

from fld.cli import one_line_errors

flags.DEFINE_string("model", "mobilevitv2_050", "Student (or stage-1 model) preset.")
flags.DEFINE_string("teacher", None, "Teacher preset: time a distillation step.")
flags.DEFINE_string("scheme", "300w_68", "Landmark scheme.")
flags.DEFINE_integer("image_size", 256, "Input side in pixels.")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("steps", 4, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_integer("threads", 0, "intra-op threads (0 = TensorFlow's default).")
flags.DEFINE_integer("inter_threads", 0, "inter-op threads (0 = TensorFlow's default).")
flags.DEFINE_float("ema_momentum", 0.999, "EMA decay (0 = off), as in training.")
flags.DEFINE_bool("compare", False, "Also time jit_compile off and on in this run.")
flags.DEFINE_bool("layers", False, "Time the backbone's blocks and the heads separately.")
FLAGS = flags.FLAGS


def synthetic_batch(codec, batch: int, seed: int = 0):
    """Random images in [-1, 1] and consistent targets (Gaussian maps at random points)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k, e, h = codec.scheme.num_points, codec.scheme.num_edges, codec.heatmap_size
    landmarks = rng.uniform(2, h - 3, (batch, k, 2)).astype(np.float32)
    heatmaps = np.asarray(codec.encode_heatmaps(landmarks))
    edges = rng.uniform(0, 1, (batch, h, h, e)).astype(np.float32) ** 8
    images = rng.uniform(-1, 1, (batch, codec.image_size, codec.image_size, 3)).astype(np.float32)
    return images, {"heatmaps": heatmaps, "edges": edges, "landmarks": landmarks}


def build(jit_compile: bool):
    import keras

    from fld.models import LandmarkDetector
    from fld.training import LandmarkTrainer
    from fld.training.schedules import WarmupCosine

    keras.utils.set_random_seed(0)
    student = LandmarkDetector(preset=FLAGS.model, image_size=FLAGS.image_size,
                               scheme=FLAGS.scheme)
    teacher = None
    if FLAGS.teacher:
        teacher = LandmarkDetector(preset=FLAGS.teacher, image_size=FLAGS.image_size,
                                   scheme=FLAGS.scheme, name="teacher")
    model = LandmarkTrainer(student, teacher, scheme=FLAGS.scheme, ema_momentum=FLAGS.ema_momentum)
    model.compile(
        optimizer=keras.optimizers.AdamW(WarmupCosine(1e-3, 1000, 10), weight_decay=2e-5),
        backbone_optimizer=keras.optimizers.AdamW(WarmupCosine(2e-4, 1000, 10),
                                                  weight_decay=1e-4),
        jit_compile=jit_compile)
    return model


def time_steps(model, images, targets, steps: int) -> float:
    """Images per second of ``train_on_batch`` after two warm-up (tracing) steps."""
    import tensorflow as tf

    x = tf.constant(images)
    y = {k: tf.constant(v) for k, v in targets.items()}
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(images) / (time.perf_counter() - start)


def _block_key(name: str) -> str:
    """Block of a backbone layer: ``layer3_mvit``, ``layer2_mv2``, ``stage1_block0``, ``stem``."""
    parts = name.split("_")
    return "_".join(parts[:2]) if parts[0].startswith(("layer", "stage")) else parts[0]


def time_blocks(model, images, jit_compile: bool, repeats: int = 5):
    """Forward+backward (input and weight gradients) seconds per batch of each contiguous
    block of the backbone's layers and of the decoder + heads; and of the whole student."""
    import keras
    import tensorflow as tf

    student = model.student
    backbone = student.backbone
    rows = []

    def measure(name, sub, inputs):
        variables = sub.trainable_variables

        @tf.function(jit_compile=jit_compile)
        def step(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                out = sub(t, training=True)
                loss = tf.add_n([tf.reduce_sum(tf.square(o)) for o in tf.nest.flatten(out)])
            return tape.gradient(loss, [tf.nest.flatten(t)] + variables)

        step(inputs)
        times = []
        for _ in range(repeats):  # the minimum is the least disturbed by other processes
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), step(inputs))
            times.append(time.perf_counter() - start)
        rows.append((name, min(times)))

    blocks = []  # contiguous runs of layers with one key: (key, last layer)
    for layer in backbone.layers[1:]:
        key = _block_key(layer.name)
        if blocks and blocks[-1][0] == key:
            blocks[-1] = (key, layer)
        else:
            blocks.append((key, layer))
    prev, feats = backbone.input, tf.constant(images)
    for key, last in blocks:
        sub = keras.Model(prev, last.output)
        measure(f"backbone/{key} -> {tuple(last.output.shape[1:])}", sub, feats)
        feats = sub(feats)
        prev = last.output
    x = tf.constant(images)
    # Decoder and heads: differences of nested sub-models measured back to back.
    names = [layer.name for layer in student.layers]
    first_head = min(names.index(n) for n in ("edges", "head_heatmaps_conv") if n in names)
    features = student.layers[first_head - 1].output  # the decoder's stride-4 features
    trunk = keras.Model(student.input, features)
    measure("whole backbone", backbone, x)
    measure("backbone + decoder", trunk, x)
    measure("whole student", student, x)
    (_, bb), (_, tr), (_, whole) = rows[-3:]
    rows = rows[:-3] + [("whole backbone", bb), ("decoder (trunk - backbone)", tr - bb),
                        ("heads + fused (student - trunk)", whole - tr)]
    return rows, whole


def main(_):
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    if FLAGS.inter_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_threads)
    from fld.codec import HeatmapCodec
    from fld.schemes import get_scheme

    codec = HeatmapCodec(get_scheme(FLAGS.scheme), image_size=FLAGS.image_size)
    images, targets = synthetic_batch(codec, FLAGS.batch_size)
    what = f"{FLAGS.model}" + (f" distilled from {FLAGS.teacher}" if FLAGS.teacher else "")
    settings = [False, True] if FLAGS.compare else [FLAGS.jit_compile]
    rate = None
    for jit in settings:
        model = build(jit)
        rate = time_steps(model, images, targets, FLAGS.steps)
        print(f"{what} @ {FLAGS.image_size}px, batch {FLAGS.batch_size}, jit_compile={jit}: "
              f"{rate:.2f} img/s ({FLAGS.batch_size / rate:.2f} s/step)", flush=True)
    if FLAGS.layers:
        rows, total = time_blocks(model, images, settings[-1])
        print(f"  whole student fwd+bwd: {total * 1000:.0f} ms/batch; blocks timed alone:")
        for name, seconds in rows:
            print(f"  {name:44s} {seconds * 1000:8.1f} ms/batch fwd+bwd "
                  f"({100 * seconds / total:4.1f}%)", flush=True)
    print(f"train_img_per_s: {rate:.2f}")


if __name__ == "__main__":
    app.run(one_line_errors(main, "benchmark_train.py"))
