"""Evaluation: golden numbers, the CLI end to end, Keras and .tflite on one code path."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from fld import evaluation
from fld.crop import box_from_landmarks
from fld.schemes import get_scheme

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


class ShiftedTruth:
    """A predictor that returns the ground truth moved by a fixed offset."""

    scheme = get_scheme("300w_68")

    def __init__(self, truth, offset):
        self.truth, self.offset = truth, np.asarray(offset, np.float32)

    def predict(self, image, box):
        gt = self.truth[tuple(np.round(box, 3))]
        return gt + self.offset

    def detect(self, image):
        return []


def test_golden_nme_through_evaluate(real_records):
    records = real_records[:3]
    truth = {tuple(np.round(box_from_landmarks(r.landmarks), 3)): r.landmarks for r in records}
    results = evaluation.evaluate(records, ShiftedTruth(truth, (3.0, 4.0)),
                                  get_scheme("300w_68"), progress=False)
    for r in results:
        # Every point is off by exactly 5 px: NME = 5 / |p36 - p45|.
        expected = 5.0 / np.linalg.norm(r.gt[36] - r.gt[45])
        assert r.nme_io == pytest.approx(expected, rel=1e-6)
    rows = evaluation.summary_rows(results)
    assert rows[-1]["subset"] == "all" and rows[-1]["faces"] == 3
    assert rows[-1]["nme_io_mean"] == pytest.approx(100 * np.mean([r.nme_io for r in results]))
    text = evaluation.format_table(rows)
    assert "NME io %" in text and "all" in text


def test_detector_mode_counts_missed_faces(real_records):
    results = evaluation.evaluate(real_records[:2], ShiftedTruth({}, (0, 0)),
                                  get_scheme("300w_68"), boxes="detector", progress=False)
    row = evaluation.summary_rows(results)[-1]
    assert row["faces"] == 2 and row["detected"] == 0 and "nme_io_mean" not in row


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory, real_records):
    import fld.models as models
    from fld.crop import crop_face
    from fld.data.pipeline import read_image_rgb

    keras.utils.set_random_seed(0)
    model = models.LandmarkDetector(preset="mobilevitv2_050", image_size=SIZE,
                                    scheme="300w_68")
    crops = np.stack([crop_face(read_image_rgb(r.image_path), box_from_landmarks(r.landmarks),
                                SIZE)[0] for r in real_records[:16]]) / 127.5 - 1.0
    for _ in range(20):  # BatchNorm statistics of real faces, as after training
        model(crops.astype(np.float32), training=True)
    path = str(tmp_path_factory.mktemp("model") / "tiny.keras")
    model.save(path)
    return path


def test_keras_and_float_tflite_agree(tiny_model_path, real_records):
    from fld import export
    from fld.export_metadata import embed_metadata
    from fld.keras_engine import keras_landmarker, load_keras_model, model_info_for
    from fld.runtime.landmarker import Landmarker

    model = load_keras_model(tiny_model_path)
    info = model_info_for(model)
    tflite_path = tiny_model_path.replace(".keras", "_float.tflite")
    with open(tflite_path, "wb") as f:
        f.write(embed_metadata(export.convert(model, "none"), info))
    scheme = get_scheme("300w_68")
    records = real_records[:8]
    a = evaluation.evaluate(records, keras_landmarker(tiny_model_path), scheme, progress=False)
    b = evaluation.evaluate(records, Landmarker(tflite_path), scheme, progress=False)
    diffs = np.abs([x.nme_io - y.nme_io for x, y in zip(a, b)])
    assert diffs.max() < 1e-3, diffs


def test_cli_end_to_end_on_real_faces(tiny_model_path, data_300w, tmp_path):
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", tiny_model_path,
         "--data_dir", os.path.join(data_300w, "afw"), "--scheme", "300w_68", "--limit", "20",
         "--report_dir", str(report)],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("nme_io: ") and float(lines[-1].split()[1]) > 0
    assert "FR@0.10 %" in proc.stdout and " 20 " in proc.stdout
    for name in ("per_face.csv", "ced.png", "summary.md", "worst16_tiny.keras.png"):
        assert (report / name).stat().st_size > 100, name
    assert len((report / "per_face.csv").read_text().splitlines()) == 21


def test_cli_rejects_a_model_of_the_wrong_kind(tmp_path, data_300w):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", str(bad),
         "--data_dir", os.path.join(data_300w, "afw"), "--limit", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "notes.keras" in proc.stderr


def test_cli_names_two_runs_best_models_by_path(tiny_model_path, data_300w, tmp_path):
    import shutil

    other = tmp_path / "run2" / os.path.basename(tiny_model_path)
    other.parent.mkdir()
    shutil.copy(tiny_model_path, other)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", tiny_model_path,
         "--model", str(other), "--data_dir", os.path.join(data_300w, "afw"), "--limit", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.normpath(tiny_model_path) in proc.stdout and str(other) in proc.stdout


def test_probe_layers_cli_on_real_faces(tiny_model_path, data_300w, tmp_path):
    def probe(*args):
        return subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", "probe_layers.py"), *args],
            capture_output=True, text=True, cwd=REPO, timeout=300)

    proc = probe("--model", tiny_model_path, "--data_dir", os.path.join(data_300w, "afw"),
                 "--limit", "12", "--factor", "1.5", "--top", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "on 12 faces" in lines[0]
    ratio = float(lines[-1].split()[1])
    assert lines[-1].startswith("max_ratio: ") and ratio >= 1.0
    if ratio > 1.5:  # some layer flagged: the table names its worst face
        assert "median peak" in proc.stdout and ".jpg" in proc.stdout
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    proc = probe("--model", str(bad), "--data_dir", os.path.join(data_300w, "afw"))
    assert proc.returncode == 1 and "notes.keras" in proc.stderr
    proc = probe("--model", tiny_model_path, "--data_dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 1 and "nowhere" in proc.stderr
