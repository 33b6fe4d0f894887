"""Smoke tests of tools/predict.py (and tools/benchmark.py) on real faces, as subprocesses.

The model is test_runtime's tiny int8 stand-in (64 px, 5 landmarks); what is checked
is the plumbing: inputs, boxes, outputs, errors.
"""

import os
import shutil

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.data.readers import read_pts
from tests.helpers import REPO, TINY_K, run_tool, tiny_model_files, write_boxes_csv


@pytest.fixture(scope="module")
def tiny(real_records):
    return tiny_model_files(real_records)


@pytest.fixture(scope="module")
def image_dir(real_records, tmp_path_factory):
    """Three real face images in a folder with a subfolder, plus their landmark boxes."""
    folder = tmp_path_factory.mktemp("faces")
    os.makedirs(folder / "sub")
    names = ["a.jpg", "b.jpg", os.path.join("sub", "c.jpg")]
    boxes = {}
    for name, record in zip(names, real_records[:3]):
        shutil.copy(record.image_path, folder / name)
        boxes[name] = box_from_landmarks(record.landmarks)
    return folder, boxes





def test_predict_with_boxes_saves_pts_that_round_trip(tiny, image_dir, tmp_path):
    from fld.runtime import Landmarker

    folder, boxes = image_dir
    csv_path = tmp_path / "boxes.csv"
    second_face = boxes["a.jpg"] * 0.9
    write_boxes_csv(csv_path, list(boxes.items()) + [("a.jpg", second_face)])
    out = tmp_path / "out"
    result = run_tool("predict.py", "--model", tiny["int8"], "--input", str(folder),
                      "--boxes", str(csv_path), "--output_dir", str(out), "--save_pts",
                      "--save_overlay")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "images: 3, faces: 4, skipped: 0"
    landmarker = Landmarker(tiny["int8"])
    for name, box in boxes.items():
        stem = os.path.splitext(name)[0]
        saved = read_pts(str(out / f"{stem}.pts"))
        assert saved.shape == (TINY_K, 2)
        image = landmarker_image(folder / name)
        # .pts holds 6 decimals: the round trip is exact to 1e-5 px.
        np.testing.assert_allclose(saved, landmarker.predict(image, box), atol=1e-4)
        assert (out / f"{stem}.jpg").is_file()
    assert (out / "a_1.pts").is_file()  # the second face of a.jpg
    np.testing.assert_allclose(read_pts(str(out / "a_1.pts")),
                               landmarker.predict(landmarker_image(folder / "a.jpg"), second_face),
                               atol=1e-4)


def landmarker_image(path):
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_predict_with_detector_skips_a_corrupt_image(tiny, image_dir, tmp_path):
    folder, _ = image_dir
    work = tmp_path / "in"
    shutil.copytree(folder, work)
    (work / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "out"
    result = run_tool("predict.py", "--model", tiny["int8"], "--input", str(work),
                      "--output_dir", str(out), "--save_pts")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broken.jpg" in result.stderr and "skipped" in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("images: 3, faces: ") and summary.endswith("skipped: 1")
    faces = int(summary.split("faces: ")[1].split(",")[0])
    assert faces >= 2  # the detector (BlazeFace) finds these real faces
    saved = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pts"))
    assert len(saved) == faces and all(read_pts(str(out / p)).shape == (TINY_K, 2) for p in saved)


@pytest.mark.parametrize("case", ["missing", "not_image", "empty_dir", "no_metadata",
                                  "wrong_shape", "bad_boxes"])
def test_predict_bad_inputs_fail_clearly(case, tiny, image_dir, tmp_path):
    folder, _ = image_dir
    model, target = tiny["int8"], str(folder)
    expected = None
    if case == "missing":
        target, expected = str(tmp_path / "nowhere.jpg"), "input not found"
    elif case == "not_image":
        target = str(tmp_path / "notes.txt")
        open(target, "w").write("hello")
        expected = "notes.txt: not a readable image"
    elif case == "empty_dir":
        target = str(tmp_path / "empty")
        os.makedirs(target)
        expected = "no images"
    elif case == "no_metadata":
        model, expected = tiny["nometa"], "no 'fld' metadata"
    elif case == "wrong_shape":
        model, expected = tiny["wrong_shape"], "wrong model for its metadata"
    elif case == "bad_boxes":
        csv_path = tmp_path / "boxes.csv"
        csv_path.write_text("image,x0,y0,x1,y1\na.jpg,10,10,5,20\n")
        result = run_tool("predict.py", "--model", model, "--input", target,
                          "--boxes", str(csv_path))
        assert result.returncode == 1 and "x1 > x0" in result.stderr, result.stderr[-2000:]
        return
    result = run_tool("predict.py", "--model", model, "--input", target)
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    assert "predict.py: error:" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_benchmark_prints_latency(tiny):
    result = run_tool("benchmark.py", "--model", tiny["int8"], "--threads", "1", "--runs", "20")
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("latency_ms: ") and float(last.split()[1]) > 0
    result = run_tool("benchmark.py", "--model", tiny["int8"], "--runs", "20", "--flip_test")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "flip_test (two invokes per face)" in result.stdout
    assert float(result.stdout.strip().splitlines()[-1].split()[1]) > 0


def test_benchmark_baseline_times_both_models_in_one_run(tiny):
    # the fast bundled model against the default one, by name, interleaved
    result = run_tool("benchmark.py", "--model", "fast", "--baseline", "default", "--runs", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout.strip().splitlines()
    lines = dict(line.split(": ", 1) for line in out if ": " in line)
    assert "fast_68.tflite" in lines["model"]
    assert lines["baseline"].endswith("default_68.tflite, flip pair")
    ratio = float(lines["landmark_step_ratio"].split()[0])
    latency, baseline = float(lines["latency_ms"]), float(lines["baseline_latency_ms"])
    assert ratio == pytest.approx(latency / baseline, abs=2e-3)
    assert ratio < 1       # width 0.5, one crop vs width 1.0, a flip pair: faster on any CPU
    assert 0 < float(lines["landmark_step_cpu_ratio"].split()[0]) < 1
    assert out[-1].startswith("latency_ms: ")
    bad = run_tool("benchmark.py", "--model", tiny["int8"], "--baseline", "quick")
    assert bad.returncode == 1 and "--baseline: model file not found: quick" in bad.stderr, \
        bad.stderr[-500:]


def test_benchmark_pipeline_prints_its_lines():
    # the bundled model: tracking needs points that follow the face (a tiny model's don't)
    result = run_tool("benchmark.py", "--runs", "3", "--pipeline", "--detector", "haar")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines()
                 if ": " in line)
    assert "avx" in lines["cpu"] or "asimd" in lines["cpu"] or "no flags" in lines["cpu"]
    for prefix in ("", "haar_"):
        for key in ("detector_ms", "landmarks_ms", "full_image_ms"):
            assert float(lines[prefix + key]) > 0, (prefix + key, result.stdout)
    assert float(lines["full_image_ms"]) > float(lines["detector_ms"])
    assert lines["faces found"] == "blazeface 1, haar 1"
    assert float(lines["detector_speedup"].split()[0]) > 1   # BlazeFace is the faster one
    assert float(lines["tracking_frame_ms"]) > 0
    assert float(lines["tracking_ratio"].split()[0]) > 0


def write_still_clip(path, record, frames=6):
    """An MJPG clip of one real face, still: the same frame plus fresh pixel noise each time."""
    import cv2

    frame = cv2.resize(cv2.imread(record.image_path), (320, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 320))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8))
    writer.release()
    return str(path)


def read_frame_pts(folder, count):
    """(frames, K, 2): frame_000000.pts ... of one video's output folder."""
    return np.stack([read_pts(str(folder / f"frame_{i:06d}.pts")) for i in range(count)])


def video_frame_count(path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_predict_video_tracks_and_smooths(real_records, tmp_path):
    import cv2

    # Tracking needs a model that finds landmarks (the tiny stand-in's points would walk
    # the crop away): the bundled default model.
    video = write_still_clip(tmp_path / "clip.avi", real_records[0])
    out = tmp_path / "out"
    result = run_tool("predict.py", "--input", video, "--smooth",
                      "--output_dir", str(out), "--save_pts", "--save_overlay")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "frames: 6, faces: 6, skipped: 0"
    assert len(list((out / "clip").glob("frame_*.pts"))) == 6
    assert cv2.VideoCapture(str(out / "clip.mp4")).isOpened()
    assert video_frame_count(out / "clip.mp4") == 6

    # --smooth must change the points, and only by filtering them: the tracker's crops
    # come from the raw points either way, so the first frame (where the 1-Euro filter
    # starts) is identical and later frames differ. The face is still, so frame-to-frame
    # motion is jitter: smoothing must lower it. --notrack detects on every frame.
    runs = {}
    for name, flags in (("smooth", ["--smooth"]), ("raw", []), ("detect", ["--notrack"])):
        result = run_tool("predict.py", "--input", video, *flags,
                          "--output_dir", str(tmp_path / name), "--save_pts")
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip().splitlines()[-1] == "frames: 6, faces: 6, skipped: 0"
        runs[name] = read_frame_pts(tmp_path / name / "clip", 6)
    smooth, raw = runs["smooth"], runs["raw"]
    np.testing.assert_allclose(smooth[0], raw[0], atol=1e-5)
    assert all(np.abs(smooth[i] - raw[i]).max() > 1e-3 for i in range(1, 6)), smooth - raw
    # Tracking crops frame 1 from frame 0's points, detecting crops it from the detector.
    np.testing.assert_allclose(raw[0], runs["detect"][0], atol=1e-5)
    assert np.abs(raw[1:] - runs["detect"][1:]).max() > 1e-3
    jitter = {name: float(np.linalg.norm(np.diff(p, axis=0), axis=-1).mean())
              for name, p in runs.items()}
    assert jitter["raw"] > 0.05, jitter  # the noise does move the raw points
    assert jitter["smooth"] < 0.6 * jitter["raw"], jitter


def test_predict_video_max_frames_and_webcam_errors(tiny, real_records, tmp_path):
    video = write_still_clip(tmp_path / "clip.avi", real_records[0])
    out = tmp_path / "out"
    result = run_tool("predict.py", "--model", tiny["int8"], "--input", video,
                      "--max_face_spread", "1",
                      "--max_frames", "3", "--output_dir", str(out), "--save_pts",
                      "--save_overlay")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "frames: 3, faces: 3, skipped: 0"
    assert sorted(p.name for p in (out / "clip").glob("*.pts")) == [
        f"frame_{i:06d}.pts" for i in range(3)]
    assert video_frame_count(out / "clip.mp4") == 3
    # A digit string is a webcam index (cv2.VideoCapture(int)); none is attached here.
    result = run_tool("predict.py", "--model", tiny["int8"], "--input", "97",
                      "--max_frames", "3")
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("predict.py: error: "), result.stderr
    assert "97" in errors[0], errors
    assert "Traceback" not in result.stderr and "frames:" not in result.stdout


@pytest.mark.slow
def test_benchmark_in_a_tflite_runtime_venv(tiny):
    venv = os.environ.get("FLD_TFLITE_VENV", os.path.join(REPO, ".venv-tflite"))
    if not os.path.isfile(os.path.join(venv, "bin", "python")):
        pytest.skip(f"no tflite-runtime venv at {venv} (see tools/benchmark.py; "
                    f"FLD_TFLITE_VENV overrides the path)")
    result = run_tool("benchmark.py", "--model", tiny["int8"], "--runs", "20",
                      "--runtime", "tflite_runtime", "--venv", venv, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tflite_runtime" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("latency_ms: ")
