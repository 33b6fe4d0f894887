"""The TensorFlow-free runtime in an environment with only numpy, OpenCV and tflite-runtime.

Run by ``.ci/tflite_runtime_check.sh`` inside ``.venv-tflite`` (numpy<2,
opencv-python-headless, tflite-runtime 2.14, pytest; no TensorFlow, no Keras), with
``FLD_TFLITE_CHECK_DIR`` naming the artifacts ``make_expected.py`` wrote in the main
environment: an int8 student converted by ``tools/convert.py`` and the landmarks
ai-edge-litert computed for it. Skipped elsewhere (the main test run).
"""

import importlib.util
import os
import sys

import numpy as np
import pytest

CHECK_DIR = os.environ.get("FLD_TFLITE_CHECK_DIR")
pytestmark = pytest.mark.skipif(
    not CHECK_DIR, reason="run by .ci/tflite_runtime_check.sh (set FLD_TFLITE_CHECK_DIR)")

# tflite-runtime 2.14 and ai-edge-litert do NOT give bit-identical int8 outputs: their
# int8 kernels round differently (CONV_2D / DEPTHWISE_CONV_2D / MUL outputs off by one
# step in ~0.3% of elements, measured with default delegates off in both), and the
# differences accumulate over the student's 327 ops. Measured on this 64 px student,
# 16 faces x 51 points: mean |int8 output difference| 1.24 steps (max 25); landmark
# difference median 0.04 heatmap px, 80% of points within 0.25 px; on the random-weight
# maps' flat peaks argmax flips elsewhere (max 16.6 px). Where the reference map has a
# clear peak (>= 20 steps above every cell outside its 3x3 neighborhood, ~20% of
# points) the difference is <= 0.56 px. Bounds, with margin:
MAX_MEAN_OUTPUT_STEPS = 3.0
CLEAR_PEAK_STEPS, CLEAR_PEAK_TOLERANCE_PX = 20, 1.0
MEDIAN_TOLERANCE_PX, MIN_FRACTION_WITHIN = 0.25, 0.7


@pytest.fixture(scope="module")
def expected():
    data = np.load(os.path.join(CHECK_DIR, "expected.npz"))
    return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def landmarker():
    from fld.runtime import Landmarker

    return Landmarker(os.path.join(CHECK_DIR, "student_int8.tflite"))


def test_tensorflow_and_keras_are_absent():
    assert importlib.util.find_spec("tensorflow") is None
    assert importlib.util.find_spec("keras") is None
    assert importlib.util.find_spec("ai_edge_litert") is None
    import fld.runtime  # noqa: F401

    assert "tensorflow" not in sys.modules and "keras" not in sys.modules


def test_model_loads_in_tflite_runtime_with_metadata(landmarker):
    import tflite_runtime

    assert tflite_runtime.__version__ == "2.14.0"
    assert landmarker.model.runtime == "tflite_runtime"
    info = landmarker.info
    assert (info.quantization, info.image_size, info.stride) == ("int8", 64, 4)
    assert info.scheme.name == "pair_51" and info.box_mapping is not None
    assert landmarker.model.input_dtype == np.int8 and landmarker.model.output_dtype == np.int8


def _peak_margins(raw: np.ndarray) -> np.ndarray:
    """(K,) int8-step margin of each map's peak over every cell outside its 3x3 window."""
    maps = raw[0].astype(np.int32)
    margins = []
    for k in range(maps.shape[-1]):
        m = maps[..., k]
        y, x = np.unravel_index(m.argmax(), m.shape)
        rest = m.copy()
        rest[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = np.iinfo(np.int32).min
        margins.append(m[y, x] - rest.max())
    return np.array(margins)


def test_landmarks_match_ai_edge_litert(landmarker, expected):
    from fld.export.calibration import read_rgb

    model, stride = landmarker.model, landmarker.info.stride
    steps, diffs, clear = [], [], []
    for path, box, want, raw in zip(expected["image_paths"], expected["boxes"],
                                    expected["landmarks"], expected["raw_outputs"]):
        image = read_rgb(str(path))
        assert image is not None, f"missing test image {path}"
        inputs, matrix = landmarker.crop(image, box)
        got_raw = model.invoke_raw(model.quantize_input(inputs))
        steps.append(np.abs(got_raw.astype(np.int32) - raw.astype(np.int32)).mean())
        zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # image px -> crop px
        diffs.append(np.linalg.norm(landmarker.predict(image, box) - want, axis=-1)
                     * zoom / stride)
        clear.append(_peak_margins(raw) >= CLEAR_PEAK_STEPS)
    diffs, clear = np.concatenate(diffs), np.concatenate(clear)
    within = float((diffs <= MEDIAN_TOLERANCE_PX).mean())
    print(f"\ntflite-runtime vs ai-edge-litert on {len(steps)} faces: mean |output difference| "
          f"{np.mean(steps):.2f} steps; landmarks (heatmap px) median {np.median(diffs):.3f}, "
          f"{within:.0%} within {MEDIAN_TOLERANCE_PX}, max {diffs.max():.2f}; on the "
          f"{clear.mean():.0%} clear peaks max {diffs[clear].max():.3f}")
    assert np.mean(steps) <= MAX_MEAN_OUTPUT_STEPS
    assert np.median(diffs) <= MEDIAN_TOLERANCE_PX and within >= MIN_FRACTION_WITHIN
    assert clear.sum() >= 10 and diffs[clear].max() <= CLEAR_PEAK_TOLERANCE_PX


def test_bundled_default_model_under_tflite_runtime():
    """The shipped int8 model, loaded with no path, on the bundled held-out faces."""
    from fld.runtime import Landmarker
    from tests import default_model_check as check

    landmarker = Landmarker()
    assert landmarker.model.runtime == "tflite_runtime"
    nme, _ = check.sample_results(landmarker)
    assert nme.mean() < check.MAX_MEAN_NME_IO, f"mean NME io {nme.mean():.4f}"
    assert check.photo_nme(landmarker) < check.MAX_PHOTO_NME_IO


def test_bundled_fast_model_under_tflite_runtime():
    """The fast model by name (``preset="fast"``), on the same faces."""
    from fld.runtime import Landmarker
    from tests import default_model_check as check

    landmarker = Landmarker(preset="fast")
    assert landmarker.model.runtime == "tflite_runtime" and not landmarker.info.flip_pair
    check.assert_sample_nme_below(landmarker, check.FAST_MAX_MEAN_NME_IO)
    assert check.photo_nme(landmarker) < check.FAST_MAX_PHOTO_NME_IO
