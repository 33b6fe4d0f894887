"""Hostile inputs a new user would try, each pinned: the outcome (exit status or
exception) and a message naming the file. Real faces from ../shared/data, the shipped
model (no --model)."""

import os
import shutil
import threading

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.data.readers import read_pts

from tests.test_predict_cli import run_tool


def predict(*args):
    return run_tool("predict.py", *args, timeout=300)


@pytest.fixture
def annotated_folder(real_records, tmp_path):
    """Two real faces with their ground-truth .pts beside them."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for record in real_records[:2]:
        shutil.copy(record.image_path, folder)
        shutil.copy(os.path.splitext(record.image_path)[0] + ".pts", folder)
    return folder


def test_predict_never_overwrites_the_ground_truth_beside_its_inputs(annotated_folder):
    truth = {p: p.read_bytes() for p in annotated_folder.glob("*.pts")}
    done = predict("--input", str(annotated_folder), "--output_dir", str(annotated_folder),
                   "--save_pts")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "predict.py: error:" in done.stderr and "--overwrite" in done.stderr
    assert any(str(p) in done.stderr for p in truth), done.stderr
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in truth} == truth            # nothing was touched
    done = predict("--input", str(annotated_folder), "--output_dir", str(annotated_folder),
                   "--save_pts", "--overwrite")
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(p.read_bytes() != data for p, data in truth.items())   # replaced on request


def test_inputs_that_differ_only_in_extension_keep_distinct_outputs(real_records, tmp_path):
    import cv2

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    rows = ["image,x0,y0,x1,y1"]
    for record, ext in zip(real_records[:3], (".jpg", ".jpeg", ".png")):
        cv2.imwrite(str(folder / f"face{ext}"), cv2.imread(record.image_path))
        rows.append(f"face{ext}," + ",".join(repr(float(v))
                                           for v in box_from_landmarks(record.landmarks)))
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    done = predict("--input", str(folder), "--boxes", str(tmp_path / "boxes.csv"),
                   "--output_dir", str(out), "--save_pts", "--save_overlay")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "images: 3, faces: 3, skipped: 0"
    written = sorted(p.name for p in out.glob("*.pts"))
    assert written == ["face_jpeg.pts", "face_jpg.pts", "face_png.pts"], written
    assert len(list(out.glob("face_*.*g"))) == 3                   # three overlays
    # each .pts is its own face's prediction: about where its ground truth is
    for record, ext in zip(real_records[:3], ("jpg", "jpeg", "png")):
        io = np.linalg.norm(record.landmarks[36] - record.landmarks[45])
        error = np.linalg.norm(read_pts(str(out / f"face_{ext}.pts")) - record.landmarks, axis=-1)
        assert error.mean() < 0.2 * io, (ext, error.mean() / io)


def test_one_landmarker_shared_by_threads_gives_the_serial_results(real_records):
    """Threads sharing one Landmarker (the interpreter serialises set-input / invoke /
    read-outputs, fld.runtime.TFLiteModel): every call returns exactly what a lone call
    does. Without the lock most calls raised and some returned points 6-50 px off."""
    from fld.images import read_image_rgb
    from fld.runtime import Landmarker

    landmarker = Landmarker()
    jobs = [(read_image_rgb(r.image_path), box_from_landmarks(r.landmarks))
            for r in real_records[:8]]
    serial = [landmarker.predict(image, box) for image, box in jobs]
    results, errors = {}, []

    def work(worker):
        try:
            for round_ in range(3):
                for i in range(len(jobs)):
                    j = (i + worker) % len(jobs)
                    results[(worker, round_, j)] = landmarker.predict(*jobs[j])
        except Exception as e:   # noqa: BLE001 - any error in a thread fails the test
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) == 4 * 3 * len(jobs)
    worst = max(float(np.abs(points - serial[j]).max()) for (_, _, j), points in results.items())
    assert worst == 0.0, f"a shared call moved a point by {worst:.3f} px"


@pytest.mark.parametrize("case", ["missing", "not_tflite", "unwritable"])
def test_mean_split_cli_bad_inputs_fail_in_one_line(case, tmp_path, capsys):
    from fld.runtime.landmarker import DEFAULT_MODEL_PATH
    from fld.tflite_mean_split import main

    source, target = str(tmp_path / "missing.tflite"), str(tmp_path / "out.tflite")
    expected = (source, "cannot read")
    if case == "not_tflite":
        source = str(tmp_path / "notes.tflite")
        open(source, "w").write("not a model\n" * 10)
        expected = (source, "not a readable .tflite flatbuffer")
    elif case == "unwritable":
        source = DEFAULT_MODEL_PATH
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = str(blocker / "out.tflite")            # a folder that is a file
        expected = (target, "cannot write")
    assert main([source, target]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and all(e in err[0] for e in expected)
    assert not os.path.exists(str(tmp_path / "out.tflite"))
