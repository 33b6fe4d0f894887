"""The bundled default model: full-integer int8, loads with no path, sensible landmarks.

Runs on the bundled sample faces (data/sample_300w), so it needs nothing outside the
repository. The same accuracy check runs under tflite-runtime 2.14 in CI
(tests/runtime_only/test_runtime_env.py).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests import default_model_check as check


@pytest.fixture(scope="module")
def landmarker():
    from fld.runtime import Landmarker

    return Landmarker()


def test_default_model_is_full_integer_int8(landmarker):
    from fld.export import audit
    from fld.runtime.landmarker import DEFAULT_MODEL_PATH

    info = landmarker.info
    assert info.scheme.name == "300w_68" and info.scheme.num_points == 68
    assert info.quantization == "int8"
    # the two-range output (fld.export.capped_fused_model): its fine tensor is loaded
    assert info.fine_output is not None and landmarker.model.fine_ratio == info.fine_output[1]
    # a flip pair (MODEL_CARD.md): the crop and its mirror in one invoke of batch 2
    assert info.flip_pair and landmarker.flip_test
    assert landmarker.model.input_shape == (2, info.image_size, info.image_size, 3)
    with open(DEFAULT_MODEL_PATH, "rb") as f:
        report = audit(f.read(), int8=True)  # raises on any float32 tensor or op
    assert sum(report.op_counts.values()) > 0 and not report.float_ops and not report.problems


def test_default_model_landmarks_on_held_out_real_faces(landmarker):
    nme, results = check.sample_results(landmarker)
    assert np.isfinite(nme).all()
    assert nme.mean() < check.MAX_MEAN_NME_IO, (
        f"mean NME io {nme.mean():.4f} on {len(nme)} sample faces, bound "
        f"{check.MAX_MEAN_NME_IO}; worst: {results[int(np.argmax(nme))].image_path}")


def test_default_model_finds_the_face_in_the_bundled_photo(landmarker):
    assert check.photo_nme(landmarker) < check.MAX_PHOTO_NME_IO


def test_demo_shipped_model_step(tmp_path):
    done = subprocess.run(
        [sys.executable, "tools/demo.py", "--skip_training", "--output_dir", str(tmp_path)],
        cwd=check.REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    overlay = tmp_path / os.path.basename(check.PHOTO)
    assert overlay.is_file() and overlay.stat().st_size > 10_000


@pytest.mark.slow
def test_demo_whole_pipeline(tmp_path):
    """tools/demo.py end to end (teacher -> distil -> int8 -> evaluate), 2 epochs each."""
    done = subprocess.run(
        [sys.executable, "tools/demo.py", "--epochs", "2", "--output_dir", str(tmp_path)],
        cwd=check.REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = tmp_path / "report"
    for name in ("ced.png", "per_face.csv", "summary.md"):
        assert (report / name).is_file(), name
    assert (tmp_path / "student_int8.tflite").stat().st_size > 100_000
    assert "nme_io:" in done.stdout


def test_reference_kernels_score_like_xnnpack_on_real_faces(landmarker):
    """The reference-kernel interpreter (tools/evaluate.py --reference_kernels) really runs
    the model and lands within a fraction of a point of XNNPACK on the 60 sample faces."""
    from fld.runtime import Landmarker

    reference = Landmarker(reference_kernels=True)
    assert reference.model.kernels == "reference" and landmarker.model.kernels == "xnnpack"
    nme_ref, _ = check.sample_results(reference)
    nme_xnn, _ = check.sample_results(landmarker)
    assert nme_ref.mean() < check.MAX_MEAN_NME_IO
    # Same weights, different int8 kernels: the means agree within half a point, typical
    # faces within a fifth (measured on a Xeon with AVX-512 VNNI: 4.74% vs 4.76% mean, median
    # per-face difference 0.09 points, one hard face 1.2 points).
    assert abs(nme_ref.mean() - nme_xnn.mean()) < 0.005
    assert np.median(np.abs(nme_ref - nme_xnn)) < 0.002
