"""What the tests share: the repository root, the tools as subprocesses, tiny stand-in
models (Keras and int8 TFLite) and tiny training configs on real faces."""

import csv
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np


from fld.crop import box_from_landmarks, crop_face
from fld.schemes import Edge, Scheme, get_scheme
from fld.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIZE, TINY_K = 64, 5
TINY_SCHEME = Scheme("tiny_5", TINY_K, (1, 0, 2, 4, 3), (0, 1), ((0,), (1,)),
                     (Edge("mouth", (3, 4)),))
# The same points with a second edge, for tests of the edge heads and the AAM transform.
TINY_SCHEME_TWO_EDGES = Scheme("tiny_5", TINY_K, (1, 0, 2, 4, 3), (0, 1), ((0,), (1,)),
                               (Edge("eyes", (0, 1)), Edge("mouth", (3, 4))))
# Peaks of the tiny model's maps, in heatmap cells (x, y) on its 16x16 grid.
_TINY_PEAKS = np.array([[5.0, 6.0], [10.0, 6.0], [7.5, 9.0], [5.5, 12.0], [9.5, 12.0]])
# int8 vs float Keras, largest landmark difference over 24 real faces, in input-crop
# pixels of the 64 px crop (measured 0.04; 1 heatmap cell = 4 px).
INT8_TOLERANCE_CROP_PX = 0.25

_CACHE = {}


def read_rgb(path):
    import cv2

    return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def build_tiny_keras_model():
    """A functional Keras model: (B, 64, 64, 3) in [-1, 1] -> {"fused": (B, 16, 16, 5)}."""
    import keras

    rng = np.random.default_rng(0)
    cells = TINY_SIZE // 4
    yy, xx = np.mgrid[0:cells, 0:cells]
    bumps = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5 ** 2))
                      for cx, cy in _TINY_PEAKS], axis=-1).astype("float32")
    kernel = (rng.normal(size=(5, 5, 3, TINY_K)) * 0.05).astype("float32")
    images = keras.Input((TINY_SIZE, TINY_SIZE, 3), name="images")
    x = keras.layers.AveragePooling2D(4)(images)
    x = keras.layers.Conv2D(TINY_K, 5, padding="same",
                            kernel_initializer=keras.initializers.Constant(kernel))(x)
    x = keras.ops.add(x, bumps[None])
    return keras.Model(images, {"fused": keras.layers.ReLU()(x)})


def convert_tiny(model, quantize, crops=None):
    """TFLite bytes: fld.export.convert when available, else a plain TFLiteConverter."""
    try:
        from fld.export import convert
    except ImportError:
        convert = None
    if convert is not None:
        return convert(model, quantize=quantize, representative_images=crops)
    import keras
    import tensorflow as tf

    single = keras.Model(model.inputs, model.output["fused"])
    converter = tf.lite.TFLiteConverter.from_keras_model(single)
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([c] for c in crops)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def real_crops(records, size=TINY_SIZE):
    """(1, S, S, 3) float32 crops in [-1, 1] of real faces, with the crop rule."""
    out = []
    for record in records:
        crop, _ = crop_face(read_rgb(record.image_path), box_from_landmarks(record.landmarks),
                            size)
        out.append((crop.astype(np.float32) / 127.5 - 1.0)[None])
    return out


def tiny_model_files(records):
    """Builds (once per session) the tiny model and its .tflite variants in a temp dir.

    Returns a dict: keras (the model), folder, int8 / float (with metadata), nometa
    (int8 without metadata), wrong_shape (metadata says 128 px for the 64 px model).
    """
    if _CACHE:
        return _CACHE
    from fld.export.metadata import embed_metadata
    from fld.runtime.metadata import make_model_info

    folder = tempfile.mkdtemp(prefix="fld_runtime_test_")
    model = build_tiny_keras_model()
    int8 = convert_tiny(model, "int8", real_crops(records))
    float32 = convert_tiny(model, "none")
    files = {"keras": model, "folder": folder}
    variants = {
        "int8": embed_metadata(int8, make_model_info(TINY_SCHEME, TINY_SIZE)),
        "float": embed_metadata(float32, make_model_info(TINY_SCHEME, TINY_SIZE,
                                                         quantization="none")),
        "nometa": int8,
        "wrong_shape": embed_metadata(int8, make_model_info(TINY_SCHEME, 128)),
    }
    for name, data in variants.items():
        files[name] = os.path.join(folder, f"tiny_{name}.tflite")
        with open(files[name], "wb") as f:
            f.write(data)
    _CACHE.update(files)
    return _CACHE


def run_tool(tool, *args, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", tool), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def write_boxes_csv(path, rows):
    """CSV with a header and one ``image,x0,y0,x1,y1`` row per (name, box); exact floats."""
    lines = ["image,x0,y0,x1,y1"]
    lines += [name + "," + ",".join(repr(float(v)) for v in box) for name, box in rows]
    path.write_text("\n".join(lines) + "\n")


# --- LandmarkTrainer stand-in (stride-1 maps, 5 points, 2 edges) ------------------------------

K, E, S = 5, 2, 16


def tiny_model(seed=0, channels=8, name="tiny", batchnorm=True):
    """A stand-in for the real models: the output dict of METHOD.md section 4 at stride 1.

    ``batchnorm=False`` for exact replica comparisons (BN statistics are per replica).
    """
    keras.utils.set_random_seed(seed)
    images = keras.Input((S, S, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="stem")(images)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="body")(x)
    heat = keras.layers.Conv2D(K, 1, name="heat")(x)
    heat = keras.layers.GroupNormalization(K, center=False, scale=False)(heat)  # instance norm
    heat = keras.layers.ReLU(name="heatmaps")(heat)
    points = keras.layers.Conv2D(K, 1, activation="sigmoid", name="points")(x)
    edges = keras.layers.Conv2D(E, 1, activation="sigmoid", name="edges")(x)
    fused = keras.layers.Multiply(name="fused")([heat, points])
    outputs = {"heatmaps": heat, "points": points, "edges": edges, "fused": fused}
    return keras.Model(images, outputs, name=name)


def synthetic_batch(n=4, seed=0):
    """Fixed images and targets: Gaussian heatmaps at random landmarks, blob edge maps."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(3, S - 4, (n, K, 2)).astype(np.float32)
    g = np.arange(S, dtype=np.float32)
    dx = g[None, None, :, None] - lm[:, None, None, :, 0]
    dy = g[None, :, None, None] - lm[:, None, None, :, 1]
    heatmaps = np.exp(-(dx**2 + dy**2) / 2.0).astype(np.float32)
    edges = np.stack([heatmaps[..., :3].max(-1), heatmaps[..., 3:].max(-1)], -1)
    images = rng.uniform(-1, 1, (n, S, S, 3)).astype(np.float32)
    images[..., 0] = 2 * heatmaps.max(-1) - 1  # make the targets learnable from the input
    return images, {"heatmaps": heatmaps, "edges": edges, "landmarks": lm}


# --- training stand-in (stride-4 maps, 300W-68) ------------------------------------------

SCHEME = get_scheme("300w_68")


def tiny_detector(image_size=32, seed=0, points=SCHEME.num_points, name="student"):
    """A stand-in for fld.models.LandmarkDetector: a 'backbone' sub-model + 1x1 heads."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="bb1")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="bb2")(x)
    backbone = keras.Model(inp, x, name="backbone")
    images = keras.Input((image_size, image_size, 3), name="images")
    feats = backbone(images)
    heat = keras.layers.Conv2D(points, 1, activation="relu", name="heatmaps")(feats)
    pts = keras.layers.Conv2D(points, 1, activation="sigmoid", name="points")(feats)
    edges = keras.layers.Conv2D(SCHEME.num_edges, 1, activation="sigmoid", name="edges")(feats)
    fused = keras.layers.Multiply(name="fused")([heat, pts])
    return keras.Model(images, {"heatmaps": heat, "points": pts, "edges": edges,
                                "fused": fused}, name=name)


def tiny_config(data_300w, work_dir, **overrides):
    base = dict(data_dir=os.path.join(data_300w, "afw"), work_dir=str(work_dir),
                image_size=32, batch_size=4, max_train_faces=8, epochs=1, warmup_epochs=0.5,
                ema_momentum=0.9, checkpoint_every_steps=1, num_sample_images=2)
    base.update(overrides)
    return trainer.TrainConfig(**base)


def read_history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def copy_annotated_faces(records, folder):
    """Copies each record's image and its .pts beside it into ``folder`` (made here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        shutil.copy(record.image_path, folder)
        shutil.copy(os.path.splitext(record.image_path)[0] + ".pts", folder)
    return folder


def bn_fitted_student(crops, scheme="300w_68", preset="mobilevitv2_050", steps=30, seed=0):
    """A random-weight ``LandmarkDetector`` at the crops' size whose BatchNorm statistics
    are fitted to real face crops (as after training): with the initial statistics (0, 1)
    every map is nearly constant. ``crops``: (N, S, S, 3) or a list of (1, S, S, 3)."""
    import fld.models as models

    batch = np.concatenate([np.asarray(c, np.float32).reshape((-1,) + np.shape(c)[-3:])
                            for c in crops])
    keras.utils.set_random_seed(seed)
    model = models.LandmarkDetector(preset=preset, image_size=batch.shape[1], scheme=scheme)
    for _ in range(steps):
        model(batch, training=True)
    return model

