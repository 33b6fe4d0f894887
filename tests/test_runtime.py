"""Tests of the TensorFlow-free runtime (fld.runtime) and the metadata embedder.

A tiny functional Keras model stands in for the trained student: 64 px input, average
pooling to 16x16, a fixed 5x5 convolution of the image plus a fixed Gaussian bump per
landmark (so every map has one clear peak that the image content shifts by a fraction
of a cell), 5 landmarks. It is converted to full-int8 and to float32 TFLite.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from fld.crop import box_from_landmarks, crop_face, invert_affine, transform_points
from fld.schemes import get_scheme
from tests.helpers import (INT8_TOLERANCE_CROP_PX, REPO, TINY_K, TINY_SCHEME, TINY_SIZE,
                           read_rgb, real_crops, tiny_model_files)


@pytest.fixture(scope="session")
def tiny(real_records):
    return tiny_model_files(real_records)


# --- metadata -----------------------------------------------------------------------------


def test_metadata_round_trip_keeps_model_identical(tiny):
    from fld.export.metadata import embed_metadata
    from fld.runtime import TFLiteModel
    from fld.runtime.metadata import MetadataError, ModelInfo, make_model_info, read_metadata

    with open(tiny["nometa"], "rb") as f:
        plain = f.read()
    info = make_model_info(get_scheme("300w_68"), 256, quantization="int8",
                           box_mapping=(0.01, 0.14, 0.85, 0.83))
    first = embed_metadata(plain, info.to_dict())
    meta = read_metadata(first)
    assert meta["format"] == "fld/1" and meta["normalization"] == "x/127.5-1"
    assert meta["decode"] == {"method": "local_soft_argmax", "radius": 2}
    back = ModelInfo.from_dict(meta)
    assert back == info and back.scheme == get_scheme("300w_68")
    assert "fine_output" not in meta and back.fine_output is None
    two_range = dataclasses.replace(info, fine_output=("Identity_1", 16.0))
    assert two_range.to_dict()["fine_output"] == {"tensor": "Identity_1", "ratio": 16.0}
    assert ModelInfo.from_dict(two_range.to_dict()) == two_range
    with pytest.raises(MetadataError, match="fine_output"):
        dataclasses.replace(info, fine_output=("Identity_1", 0.5))
    assert "flip_pair" not in meta and not back.flip_pair
    pair = dataclasses.replace(info, flip_pair=True)
    assert pair.to_dict()["flip_pair"] is True and ModelInfo.from_dict(pair.to_dict()) == pair
    with pytest.raises(MetadataError, match="flip_pair must be true or false"):
        ModelInfo.from_dict(dict(meta, flip_pair="yes"))
    # Embedding again replaces the entry instead of adding a second one.
    second = embed_metadata(first, make_model_info(TINY_SCHEME, TINY_SIZE))
    assert ModelInfo.from_dict(read_metadata(second)).scheme == TINY_SCHEME
    # The model is otherwise the same: identical outputs in ai-edge-litert.
    image = np.random.default_rng(1).uniform(-1, 1, (1, TINY_SIZE, TINY_SIZE, 3))
    outputs = [TFLiteModel(f"model{i}", runtime="ai_edge_litert", model_bytes=b).run(image)
               for i, b in enumerate((plain, first, second))]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_read_metadata_clear_errors(tiny, tmp_path):
    from fld.runtime.metadata import MetadataError, read_metadata

    with pytest.raises(MetadataError, match="not a TFLite model"):
        read_metadata(b"\x89PNG\r\n\x1a\n" + bytes(64), source="photo.png")
    with open(tiny["nometa"], "rb") as f:
        with pytest.raises(MetadataError, match="no 'fld' metadata"):
            read_metadata(f.read())
    with pytest.raises(MetadataError, match="truncated or corrupt"):
        read_metadata(b"\xff\xff\x00\x00TFL3" + bytes(8))


# --- interpreter and landmarker ----------------------------------------------------------


def test_interpreter_choice_and_quantization(tiny):
    from fld.runtime import TFLiteModel, interpreter_class

    assert interpreter_class()[0] == "ai_edge_litert"
    with pytest.raises(ValueError, match="unknown TFLite runtime"):
        interpreter_class("onnxruntime")
    model = TFLiteModel(tiny["int8"], num_threads=2)
    assert model.input_dtype == np.int8 and model.input_shape == (1, 64, 64, 3)
    scale, zero_point = model.input_quantization
    x = np.linspace(-1, 1, 64 * 64 * 3, dtype=np.float32).reshape(model.input_shape)
    q = model.quantize_input(x)
    back = (q.astype(np.float32) - zero_point) * scale
    np.testing.assert_allclose(back, x, atol=scale / 2 + 1e-6)


def test_uint8_input_model(tiny, real_records):
    from fld.export.metadata import embed_metadata
    from fld.runtime import Landmarker
    from fld.runtime.metadata import make_model_info

    try:
        from fld.export import convert
    except ImportError:
        pytest.skip("fld.export not available")
    data = convert(tiny["keras"], "int8", real_crops(real_records[:8]), input_type="uint8")
    path = os.path.join(tiny["folder"], "tiny_uint8.tflite")
    with open(path, "wb") as f:
        f.write(embed_metadata(data, make_model_info(TINY_SCHEME, TINY_SIZE)))
    landmarker = Landmarker(path)
    assert landmarker.model.input_dtype == np.uint8
    record = real_records[0]
    image, box = read_rgb(record.image_path), box_from_landmarks(record.landmarks)
    side = 1.2 * float(max(box[2] - box[0], box[3] - box[1]))
    difference = landmarker.predict(image, box) - Landmarker(tiny["int8"]).predict(image, box)
    assert np.abs(difference).max() * TINY_SIZE / side < INT8_TOLERANCE_CROP_PX


def test_int8_landmarks_match_float_keras_on_real_faces(tiny, real_records):
    from fld.codec import decode_numpy
    from fld.runtime import Landmarker

    landmarker = Landmarker(tiny["int8"])
    assert landmarker.model.input_dtype == np.int8 and landmarker.info.quantization == "int8"
    errors, crop_points = [], []
    for record in real_records:
        image = read_rgb(record.image_path)
        box = box_from_landmarks(record.landmarks)
        crop, matrix = crop_face(image, box, TINY_SIZE)
        heatmaps = tiny["keras"].predict((crop / 127.5 - 1.0)[None].astype(np.float32),
                                         verbose=0)["fused"][0]
        expected_crop = (decode_numpy(heatmaps, "local_soft_argmax", 2) + 0.5) * 4 - 0.5
        expected = transform_points(invert_affine(matrix), expected_crop)
        got = landmarker.predict(image, box)
        assert got.shape == (TINY_K, 2) and got.dtype == np.float32
        got_crop = transform_points(matrix, got)
        errors.append(np.abs(got_crop - expected_crop).max())
        crop_points.append(expected_crop)
        np.testing.assert_allclose(transform_points(matrix, expected), expected_crop, atol=1e-3)
    # Not a trivial test: the image moves the float landmarks by more than the tolerance.
    assert np.ptp(np.asarray(crop_points), axis=0).max() > 2 * INT8_TOLERANCE_CROP_PX
    # Random weights give flat maps whose argmax can flip under int8 rounding: measured
    # 10 of 12 faces within 0.035 crop px, 2 flipped (1.3 and 2.2 px). A systematic error
    # (wrong quantization, crop or decode) moves every face.
    errors = np.asarray(errors)
    within = float((errors < INT8_TOLERANCE_CROP_PX).mean())
    assert np.median(errors) < 0.1 * INT8_TOLERANCE_CROP_PX and within >= 0.75, (
        f"int8 vs float per face (crop px): {np.round(errors, 3)}")


def test_float_tflite_matches_int8_and_runs_with_forced_runtime(tiny, real_records):
    from fld.runtime import Landmarker

    record = real_records[0]
    image, box = read_rgb(record.image_path), box_from_landmarks(record.landmarks)
    float_points = Landmarker(tiny["float"], runtime="tf").predict(image, box)
    int8_points = Landmarker(tiny["int8"], runtime="ai_edge_litert").predict(image, box)
    side = 1.2 * float(max(box[2] - box[0], box[3] - box[1]))
    # the typical point (a flat random map's argmax may flip, as above)
    distances = np.linalg.norm(float_points - int8_points, axis=-1) * TINY_SIZE / side
    assert np.median(distances) < INT8_TOLERANCE_CROP_PX, distances


def test_wrong_models_give_clear_errors(tiny, tmp_path):
    from fld.runtime import Landmarker, MetadataError, ModelError

    with pytest.raises(ModelError, match=r"tiny_wrong_shape\.tflite.*expected input"):
        Landmarker(tiny["wrong_shape"])
    with pytest.raises(MetadataError, match=r"tiny_nometa\.tflite.*no 'fld' metadata"):
        Landmarker(tiny["nometa"])
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        Landmarker(str(tmp_path / "missing.tflite"))
    text = tmp_path / "notes.tflite"
    text.write_text("not a model at all")
    with pytest.raises((MetadataError, ModelError), match="notes.tflite"):
        Landmarker(str(text))


def test_default_model_absent_is_a_clear_error(monkeypatch, tmp_path):
    import fld.runtime.bundled as bundled
    from fld.runtime import Landmarker

    monkeypatch.setattr(bundled, "ASSETS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="default model .*default_68.tflite is missing"):
        Landmarker()
    with pytest.raises(FileNotFoundError, match="fast model .*fast_68.tflite is missing"):
        Landmarker(preset="fast")


def test_bundled_models_by_name(monkeypatch, tmp_path):
    from fld.runtime import Landmarker
    from fld.runtime.bundled import BUNDLED_MODELS, resolve_model

    for name, file in BUNDLED_MODELS.items():
        landmarker = Landmarker(preset=name)
        assert os.path.basename(landmarker.model.path) == file
        assert Landmarker(name).model.path == landmarker.model.path   # a name as model_path
    assert Landmarker().info.flip_pair and not Landmarker(preset="fast").info.flip_pair
    with pytest.raises(ValueError, match="no bundled model 'quick'.*default, default_51, fast"):
        Landmarker(preset="quick")
    with pytest.raises(ValueError, match="not both"):
        Landmarker("fast", preset="fast")
    monkeypatch.chdir(tmp_path)          # a file named like a bundled model wins
    (tmp_path / "fast").write_bytes(b"")
    assert resolve_model("fast") == "fast"


def test_runtime_runs_without_tensorflow_or_keras(tiny, real_records):
    record = real_records[0]
    box = [float(v) for v in box_from_landmarks(record.landmarks)]
    script = f"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
import cv2, fld.runtime
from fld.runtime import Landmarker
image = cv2.cvtColor(cv2.imread({record.image_path!r}), cv2.COLOR_BGR2RGB)
lm = Landmarker({tiny["int8"]!r})
points = lm.predict(image, {box!r})
found = lm.detect(image)
assert points.shape == (5, 2), points.shape
assert lm.model.runtime == "ai_edge_litert"
bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m]]
assert not bad, bad
print("ok", len(found))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


# --- detector ------------------------------------------------------------------------------


def test_fit_box_mapping_recovers_a_known_mapping():
    from fld.runtime.detector import BoxMapping, fit_box_mapping

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (200, 2))
    wh = rng.uniform(40, 300, (200, 2))
    detector_boxes = np.concatenate([xy, xy + wh], axis=1)
    truth = BoxMapping(dx=0.03, dy=0.12, sx=0.86, sy=0.81)
    landmark_boxes = truth.apply(detector_boxes)
    mapping, residuals = fit_box_mapping(detector_boxes, landmark_boxes)
    np.testing.assert_allclose(mapping.as_tuple(), truth.as_tuple(), atol=1e-4)
    assert max(residuals.values()) < 1e-4
    noisy = landmark_boxes + rng.normal(0, 2.0, landmark_boxes.shape)
    mapping, residuals = fit_box_mapping(detector_boxes, noisy)
    np.testing.assert_allclose(mapping.as_tuple(), truth.as_tuple(), atol=0.01)
    assert 0 < max(residuals.values()) < 0.1


def test_haar_detector_finds_a_real_face(real_records):
    import cv2

    from fld.runtime import FaceDetector
    from fld.runtime.detector import box_iou

    detector = FaceDetector("haar")
    hits = 0
    for record in real_records[:4]:
        image = cv2.resize(read_rgb(record.image_path), None, fx=2, fy=2,
                           interpolation=cv2.INTER_LINEAR)
        truth = box_from_landmarks((record.landmarks + 0.5) * 2 - 0.5)
        boxes = detector(image)
        if len(boxes) and box_iou(boxes, truth).max() > 0.5:
            hits += 1
    assert hits >= 3, f"Haar + mapping found {hits} of 4 real faces"


def test_callable_detector_and_detect(tiny, real_records):
    from fld.runtime import Landmarker

    record = real_records[0]
    image = read_rgb(record.image_path)
    truth = box_from_landmarks(record.landmarks)
    landmarker = Landmarker(tiny["int8"], detector=lambda img: [truth, truth * 0.5])
    found = landmarker.detect(image, refine=False)
    assert len(found) == 2
    np.testing.assert_allclose(found[0][0], truth, atol=1e-3)  # largest first, identity map
    first = landmarker.predict(image, truth)
    np.testing.assert_allclose(found[0][1], first, atol=1e-4)
    # the default: a second pass, cropped around the first pass's landmarks
    box, points = landmarker.detect(image)[0]
    np.testing.assert_allclose(box, box_from_landmarks(first), atol=1e-4)
    np.testing.assert_allclose(points, landmarker.predict(image, box), atol=1e-4)
    assert len(landmarker.detect(image, passes=3)) == 2


# --- smoothing ---------------------------------------------------------------------------------


def test_one_euro_reduces_jitter_and_follows_a_step():
    from fld.runtime import OneEuroFilter

    rng = np.random.default_rng(0)
    fps, n = 30.0, 90
    noisy = 100.0 + rng.normal(0, 1.0, (n, 5, 2))
    one_euro = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = np.stack([one_euro(x, i / fps) for i, x in enumerate(noisy)])
    assert out[30:].std() < noisy[30:].std() / 3  # jitter at least 3x lower
    assert abs(out[30:].mean() - 100.0) < 0.3
    # A step of 50: with beta > 0 the filter follows within a few frames.
    step = np.concatenate([np.zeros((30, 2)), np.full((30, 2), 50.0)])
    for beta, frames in ((0.5, 5), (0.0, 30)):
        one_euro = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.stack([one_euro(x, i / fps) for i, x in enumerate(step)])
        assert out[30 + frames - 1].min() > 45.0, (beta, out[30:40, 0])
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    lagged = np.stack([slow(x, i / fps) for i, x in enumerate(step)])
    assert lagged[34].max() < 45.0  # without the speed term the step lags


# The tracker and its per-face smoother: tests/test_tracking.py.


def test_haar_box_mapping_comes_from_metadata_then_scheme(tiny, tmp_path):
    from fld.export.metadata import embed_metadata
    from fld.runtime import BLAZEFACE_BOX_MAPPINGS, HAAR_BOX_MAPPINGS, BoxMapping, Landmarker
    from fld.runtime.metadata import make_model_info

    with open(tiny["nometa"], "rb") as f:
        plain = f.read()
    path = tmp_path / "mapped.tflite"
    path.write_bytes(embed_metadata(plain, make_model_info(TINY_SCHEME, TINY_SIZE,
                                                           box_mapping=(0.0, 0.1, 0.9, 0.8))))
    assert Landmarker(str(path), detector="haar").detector.box_mapping == \
        BoxMapping(0.0, 0.1, 0.9, 0.8)
    with pytest.warns(UserWarning, match="no haar box mapping measured for scheme 'tiny_5'"):
        mapping = Landmarker(tiny["int8"], detector="haar").detector.box_mapping
    assert mapping == HAAR_BOX_MAPPINGS["300w_68"]
    # the default detector, BlazeFace, has its own mappings (the metadata's is Haar's)
    assert Landmarker(str(path)).detector.box_mapping == BLAZEFACE_BOX_MAPPINGS["300w_68"]


@pytest.mark.slow
def test_student_preset_exports_and_runs_in_the_runtime(real_records, tmp_path):
    """The real (untrained) student, int8 at 256 px with 68 points, end to end."""
    fld_models = pytest.importorskip("fld.models")
    from fld.export import convert
    from fld.export.metadata import embed_metadata
    from fld.runtime import Landmarker
    from fld.runtime.metadata import make_model_info

    import keras

    from fld.crop import crop_matrix
    from fld.keras_engine import KerasEngine

    keras.utils.set_random_seed(0)
    model = fld_models.LandmarkDetector(preset="mobilevitv2_050", image_size=256,
                                        scheme="300w_68")
    crops = real_crops(real_records[:8], size=256)
    for _ in range(10):   # BatchNorm statistics of real faces, as after training
        model(np.concatenate(crops), training=True)
    data = convert(model, "int8", crops)
    path = tmp_path / "student_int8.tflite"
    info = make_model_info("300w_68", 256)
    path.write_bytes(embed_metadata(data, info))
    landmarker = Landmarker(str(path))
    assert landmarker.model.output_shape == (1, 64, 64, 68)
    float_landmarker = Landmarker.from_engine(KerasEngine(model), landmarker.info)
    gaps = []
    for record in real_records[8:12]:   # faces calibration did not see
        image, box = read_rgb(record.image_path), box_from_landmarks(record.landmarks)
        points = landmarker.predict(image, box)
        assert points.shape == (68, 2) and np.all(np.isfinite(points))
        scale = crop_matrix(box, 256, info.crop_scale)[0, 0]   # crop px per image px
        gaps.append(scale * np.linalg.norm(points - float_landmarker.predict(image, box),
                                           axis=-1))
    gaps = np.concatenate(gaps)
    print(f"\n256 px int8 vs float, crop px: median {np.median(gaps):.3f}, "
          f"{np.mean(gaps <= 1.0):.0%} within 1 px, max {gaps.max():.1f}")
    # Random weights give flat maps whose argmax any rounding flips (as in test_convert),
    # so the bound is on the typical point: a wrong scale or lost layer moves it by tens.
    # Measured (AMD EPYC, AVX2 only): median 0.49 crop px, 53% within 1 px, max 335.
    assert np.median(gaps) < 1.0


def test_flip_test_maps_the_mirrored_prediction_back(real_records):
    """An oracle engine that answers a crop with the true landmarks' heatmaps and its
    mirror image with the mirrored face's (x -> S-1-x, pairs swapped): both passes, and so
    their average, must land on the truth; a wrong swap or x flip would move them."""
    from fld.crop import crop_matrix, transform_points
    from fld.images import read_image_rgb
    from fld.runtime.landmarker import Landmarker
    from fld.runtime.metadata import ModelInfo
    from fld.schemes import get_scheme

    scheme = get_scheme("300w_68")
    info = ModelInfo(image_size=64, scheme=scheme, stride=4, decode_method="local_soft_argmax")
    record = real_records[0]
    image = read_image_rgb(record.image_path)
    box = box_from_landmarks(record.landmarks)
    truth = transform_points(crop_matrix(box, 64, info.crop_scale), record.landmarks)

    def maps(points):  # Gaussian heatmaps (1, 16, 16, K), sigma 1 cell
        cells = (points + 0.5) / info.stride - 0.5
        grid = np.arange(16, dtype=np.float32)
        gx = np.exp(-(grid[None] - cells[:, :1]) ** 2 / 2.0)   # (K, W)
        gy = np.exp(-(grid[None] - cells[:, 1:]) ** 2 / 2.0)   # (K, H)
        return np.einsum("kh,kw->hwk", gy, gx)[None].astype(np.float32)

    class Oracle:
        def __init__(self):
            self.crop = None

        def run(self, inputs):
            if self.crop is None or np.array_equal(inputs, self.crop):
                self.crop = inputs
                return maps(truth)
            assert np.array_equal(inputs, self.crop[:, :, ::-1]), "second pass is not the mirror"
            mirrored = truth[np.asarray(scheme.flip_perm)].copy()
            mirrored[:, 0] = 63 - mirrored[:, 0]
            return maps(mirrored)

    plain = Landmarker.from_engine(Oracle(), info).predict(image, box)
    flipped = Landmarker.from_engine(Oracle(), info, flip_test=True).predict(image, box)
    io = np.linalg.norm(record.landmarks[36] - record.landmarks[45])
    assert np.abs(plain - record.landmarks).max() < 0.05 * io
    assert np.abs(flipped - record.landmarks).max() < 0.05 * io
    # In the crop's pixels, where a mirror off by one pixel (S - x instead of S - 1 - x)
    # moves the average by 0.5 px in x. The oracle's mirrored maps are the exact mirror of
    # its maps, so the two passes decode to mirror-equal points (measured: 1e-5 px apart;
    # each is off the truth by up to 0.65 px where a Gaussian is cut by the map's border).
    matrix = crop_matrix(box, 64, info.crop_scale)
    shift = transform_points(matrix, flipped) - transform_points(matrix, plain)
    assert np.abs(shift).max() < 0.05, shift
    assert abs(shift[:, 0].mean()) < 0.02, shift[:, 0].mean()


def test_describe_cpu_names_the_int8_kernel_flags(tmp_path):
    from fld.runtime import describe_cpu

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu sse avx2 "
                   "avx512f avx512_vnni\n\nprocessor\t: 1\nmodel name\t: Some Xeon\n")
    assert describe_cpu(str(x86)) == "Some Xeon [avx2 avx512f avx512_vnni]"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp crc32\n")
    assert describe_cpu(str(arm)).endswith("[asimd asimddp]")
    pi5 = tmp_path / "pi5"   # a Raspberry Pi's kernel names the board, not the CPU
    pi5.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0b\n\n"
                   "Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
    assert describe_cpu(str(pi5)) == "Raspberry Pi 5 Model B Rev 1.0 [asimd asimddp]"
    x86.write_text("processor\t: 0\nmodel\t\t: 85\nmodel name\t: Some Xeon\nflags\t: avx2\n")
    assert describe_cpu(str(x86)) == "Some Xeon [avx2]"
    assert "no flags read" in describe_cpu(str(tmp_path / "missing"))


def test_reference_kernels_option(tiny, real_records):
    from fld.evaluation import load_predictor
    from fld.runtime import Landmarker

    record = real_records[0]
    image, box = read_rgb(record.image_path), box_from_landmarks(record.landmarks)
    reference = load_predictor(tiny["int8"], reference_kernels=True)
    assert reference.model.kernels == "reference"
    side = 1.2 * float(max(box[2] - box[0], box[3] - box[1]))
    difference = reference.predict(image, box) - Landmarker(tiny["int8"]).predict(image, box)
    assert np.abs(difference).max() * TINY_SIZE / side < INT8_TOLERANCE_CROP_PX
    with pytest.raises(ValueError, match="tflite models only"):
        load_predictor(os.path.join(tiny["folder"], "model.keras"), reference_kernels=True)
