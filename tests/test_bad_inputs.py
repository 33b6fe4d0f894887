"""Hostile inputs a new user would try, each pinned: the outcome (exit status or
exception) and a message naming the file. Real faces from ../shared/data, the shipped
model (no --model)."""

import dataclasses
import os
import shutil
import threading

import numpy as np
import pytest

from fld.crop import box_from_landmarks
from fld.data.readers import read_pts

from tests.helpers import copy_annotated_faces, run_tool


def predict(*args):
    return run_tool("predict.py", *args, timeout=300)


@pytest.fixture
def annotated_folder(real_records, tmp_path):
    """Two real faces with their ground-truth .pts beside them."""
    folder = copy_annotated_faces(real_records[:2], tmp_path / "faces")
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
    """Threads sharing one Landmarker (the interpreter serializes set-input / invoke /
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
    from fld.export.mean_split import main

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


# --- the table: hostile input -> outcome and a message naming the file -------------------
# Each row: (case id, what is given, the exception or exit status, fragments of the one
# message). The helpers below build each input from real faces and the shipped model.


def shipped_bytes():
    from fld.runtime.landmarker import DEFAULT_MODEL_PATH

    with open(DEFAULT_MODEL_PATH, "rb") as f:
        return f.read()


def model_with_metadata(tmp_path, payload: bytes, name="hostile.tflite"):
    from fld.export.metadata import embed_metadata_bytes

    path = tmp_path / name
    path.write_bytes(embed_metadata_bytes(shipped_bytes(), payload))
    return str(path)


def edited_metadata(edit) -> bytes:
    """The shipped model's metadata JSON after ``edit(meta_dict)``, as text edits allow
    values json.dumps cannot write (1e400, NaN, 5,000 digits)."""
    import json

    from fld.runtime.metadata import read_metadata

    meta = read_metadata(shipped_bytes())
    text = json.dumps(meta, sort_keys=True)
    return edit(meta, text).encode("utf-8")


def _set(path, value):
    """An edit: the JSON with ``path`` (dotted keys) set to the raw JSON text ``value``."""
    import json

    def edit(meta, _text):
        keys = path.split(".")
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = "@@VALUE@@"
        return json.dumps(meta, sort_keys=True).replace('"@@VALUE@@"', value)
    return edit


METADATA_CASES = [   # item 4: (field, raw JSON value, fragment of the message)
    ("decode.radius", "2000", "'decode.radius' = 2000 is outside [0, 32]"),
    ("decode.radius", "300", "'decode.radius' = 300 is outside"),
    ("decode.radius", "-1", "'decode.radius' = -1 is outside"),
    ("decode.radius", "2.5", "'decode.radius' must be an integer"),
    ("crop_scale", "0", "'crop_scale' = 0 is outside [0.5, 4.0]"),
    ("crop_scale", "-1.2", "'crop_scale' = -1.2 is outside"),
    ("crop_scale", "NaN", "NaN is not a number fld writes"),
    ("crop_scale", "1e30", "'crop_scale' = 1e+30 is outside"),
    ("crop_scale", "1e-30", "'crop_scale' = 1e-30 is outside"),
    ("box_mapping", "[0, 0, NaN, 1]", "NaN is not a number fld writes"),
    ("box_mapping", "[0, 0, 0, 1]", "'box_mapping.sx' = 0 is outside"),
    ("image_size", "1e400", "'image_size' must be an integer, got inf"),
    ("image_size", "9" * 5000, "not UTF-8 JSON"),
    ("image_size", "130", "'image_size' = 130 is not a multiple of stride 4"),
    ("image_size", "256", "input"),                # not the tensor's 128: check_shapes
    ("stride", "0", "'stride' = 0 is outside [1, 64]"),
    ("fine_output.ratio", "1", "'fine_output.ratio' = 1 is outside"),
    ("scheme.io_indices", "[36.9, 45]", "scheme.io_indices[0] must be an integer"),
]


@pytest.mark.parametrize("field,value,fragment", METADATA_CASES,
                         ids=[f"{f}={v[:12]}" for f, v, _ in METADATA_CASES])
def test_metadata_fields_are_validated_on_read(field, value, fragment, tmp_path):
    from fld.runtime import Landmarker, MetadataError, ModelError

    path = model_with_metadata(tmp_path, edited_metadata(_set(field, value)))
    with pytest.raises((MetadataError, ModelError)) as error:
        Landmarker(path)
    assert path in str(error.value) and fragment in str(error.value), str(error.value)[:300]


def test_metadata_nested_100000_deep_is_refused(tmp_path):
    from fld.runtime import Landmarker, MetadataError

    path = model_with_metadata(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(MetadataError, match="nested too deeply") as error:
        Landmarker(path)
    assert path in str(error.value)


def test_metadata_error_is_one_line_in_predict(real_records, tmp_path):
    path = model_with_metadata(tmp_path, edited_metadata(_set("decode.radius", "2000")))
    done = predict("--model", path, "--input", real_records[0].image_path)
    assert one_error_line(done, "predict.py") == (
        f"predict.py: error: {path}: metadata field 'decode.radius' = 2000 is outside [0, 32]")


# item 5: annotations whose points lie outside their image


@pytest.mark.parametrize("shift", ["plus_5000", "negated", "scaled_1e30"])
def test_annotation_outside_its_image_is_rejected_or_skipped(shift, real_records, tmp_path):
    from fld.data.readers import AnnotationError, AnnotationWarning, read_pts_dir, write_pts

    folder = tmp_path / "faces"
    folder.mkdir()
    good, bad = real_records[0], real_records[1]
    for record in (good, bad):
        shutil.copy(record.image_path, folder)
    moved = {"plus_5000": bad.landmarks + 5000, "negated": -bad.landmarks,
             "scaled_1e30": bad.landmarks * 1e30}[shift]
    write_pts(str(folder / (os.path.splitext(os.path.basename(bad.image_path))[0] + ".pts")),
              moved)
    write_pts(str(folder / (os.path.splitext(os.path.basename(good.image_path))[0] + ".pts")),
              good.landmarks)
    bad_pts = str(folder / (os.path.splitext(os.path.basename(bad.image_path))[0] + ".pts"))
    with pytest.raises(AnnotationError, match="lie outside the") as error:
        read_pts_dir(str(folder))
    assert bad_pts in str(error.value)
    with pytest.warns(AnnotationWarning, match="skipped 1 bad annotation"):
        kept = read_pts_dir(str(folder), skip_bad=True)
    assert [r.image_path for r in kept] == [str(folder / os.path.basename(good.image_path))]


def test_every_real_training_face_lies_inside_its_image(data_300w):
    """The margin rule rejects none of the 2,012 real faces (all of them are read)."""
    from fld.data.readers import read_pts_dir

    assert len(read_pts_dir(data_300w)) == 2012


# items 6, 7: one-line errors in train / distill / evaluate, skip-and-count


def one_error_line(done, tool):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in lines if line.startswith(f"{tool}: error: ")]
    assert len(errors) == 1, lines[-5:]
    return errors[0]


def test_train_distill_evaluate_fail_in_one_line(real_records, tmp_path):
    missing = str(tmp_path / "no_such_folder")
    line = one_error_line(run_tool("train.py", f"--data_dir={missing}",
                                   f"--work_dir={tmp_path / 'w'}"), "train.py")
    assert missing in line and "does not exist" in line
    line = one_error_line(run_tool("distill.py", f"--data_dir={missing}",
                                   f"--work_dir={tmp_path / 'w2'}",
                                   f"--teacher={tmp_path / 't.keras'}"), "distill.py")
    assert missing in line
    line = one_error_line(run_tool("evaluate.py", "--model", str(tmp_path / "m.tflite"),
                                   "--data_dir", os.path.dirname(real_records[0].image_path)),
                          "evaluate.py")
    assert str(tmp_path / "m.tflite") in line and "not found" in line


def test_evaluate_checks_images_up_front_or_skips_and_counts(real_records, tmp_path):
    folder = copy_annotated_faces(real_records[:3], tmp_path / "faces")
    broken = folder / os.path.basename(real_records[1].image_path)
    broken.write_bytes(b"not an image at all" * 10)
    line = one_error_line(run_tool("evaluate.py", "--model", "fld/runtime/assets/default_68.tflite",
                                   "--data_dir", str(folder), timeout=300), "evaluate.py")
    assert str(broken) in line and "no readable header" in line
    done = run_tool("evaluate.py", "--model", "fld/runtime/assets/default_68.tflite",
                    "--data_dir", str(folder), "--skip_bad", "--report_dir",
                    str(tmp_path / "report"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 faces," in done.stdout and "skipped 1 bad annotation" in done.stderr
    assert (tmp_path / "report" / "per_face.csv").is_file()


def test_train_skip_bad_counts_unreadable_faces(real_records, tmp_path):
    from fld.data.readers import AnnotationWarning
    from fld.training import trainer

    folder = copy_annotated_faces(real_records[:6], tmp_path / "faces")
    broken = folder / os.path.basename(real_records[2].image_path)
    broken.write_bytes(b"\xff\xd8 truncated")
    config = trainer.TrainConfig(data_dir=str(folder), work_dir=str(tmp_path / "w"),
                                 image_size=32, batch_size=2, val_every=0)
    with pytest.raises(ValueError, match="no readable header") as error:
        trainer.load_data(config)
    assert str(broken) in str(error.value)
    with pytest.warns(AnnotationWarning, match="skipped 1 bad annotation"):
        data = trainer.load_data(dataclasses.replace(config, skip_bad=True))
    assert len(data.train) == 5


# item 8: huge or degenerate boxes; one bad image never ends a folder


@pytest.mark.parametrize("box", [(0, 0, 1e30, 1e30), (5, 5, 5, 5), (np.nan, 0, 10, 10)],
                         ids=["1e30", "zero_size", "nan"])
def test_degenerate_boxes_raise_value_error(box, real_records):
    from fld.images import read_image_rgb
    from fld.runtime import Landmarker

    with pytest.raises(ValueError, match="degenerate face box"):
        Landmarker().predict(read_image_rgb(real_records[0].image_path), box)


def test_predict_boxes_csv_with_1e30_is_refused_naming_the_line(real_records, tmp_path):
    (tmp_path / "boxes.csv").write_text(f"image,x0,y0,x1,y1\n"
                                        f"{os.path.basename(real_records[0].image_path)},"
                                        f"0,0,1e30,1e30\n")
    done = predict("--input", real_records[0].image_path, "--boxes", str(tmp_path / "boxes.csv"))
    line = one_error_line(done, "predict.py")
    assert f"{tmp_path / 'boxes.csv'}:2" in line


def test_predict_folder_survives_any_error_of_one_image(real_records, tmp_path, monkeypatch):
    """A non-ValueError inside one image's work is reported and counted, not fatal."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("predict_tool", os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "predict.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)    # defines its flags; run_images reads none of them
    from fld.runtime import Landmarker

    landmarker = Landmarker()
    real_predict = landmarker.predict
    victim = os.path.basename(real_records[1].image_path)

    def flaky(image, box):
        if image.shape == victim_shape:
            raise ZeroDivisionError("float division by zero")
        return real_predict(image, box)

    from fld.images import read_image_rgb

    victim_shape = read_image_rgb(real_records[1].image_path).shape
    landmarker.predict = flaky
    folder = tmp_path / "in"
    folder.mkdir()
    for record in real_records[:3]:
        shutil.copy(record.image_path, folder)
    boxes = {os.path.basename(r.image_path): [box_from_landmarks(r.landmarks)]
             for r in real_records[:3]}
    outputs = tool.Outputs(str(tmp_path / "out"), True, False)
    counts = tool.run_images(landmarker, str(folder), sorted(boxes), boxes, outputs, False)
    assert counts == (2, 2, 1)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.pts")) == sorted(
        os.path.splitext(n)[0] + ".pts" for n in boxes if n != victim)


# item 9: a bad --detector fails once, at start-up


@pytest.mark.parametrize("case", ["unknown", "missing_onnx", "corrupt_onnx"])
def test_bad_detector_fails_at_start_up(case, real_records, tmp_path):
    detector = {"unknown": "blazefaec", "missing_onnx": str(tmp_path / "yunet.onnx"),
                "corrupt_onnx": str(tmp_path / "bad.onnx")}[case]
    if case == "corrupt_onnx":
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x01garbage" * 50)
    folder = tmp_path / "in"
    folder.mkdir()
    for record in real_records[:2]:
        shutil.copy(record.image_path, folder)
    done = predict("--input", str(folder), "--detector", detector)
    line = one_error_line(done, "predict.py")
    assert f"--detector {detector}" in line
    assert {"unknown": "unknown face detector", "missing_onnx": "not found",
            "corrupt_onnx": "not a loadable YuNet"}[case] in line
    assert "images:" not in done.stdout and "skipped" not in done.stderr


# item 10: float, uint16 and NaN images; a box outside the image


def test_float_and_uint16_images_give_the_uint8_result(real_records):
    from fld.images import read_image_rgb
    from fld.runtime import Landmarker

    landmarker = Landmarker()
    image = read_image_rgb(real_records[0].image_path)
    box = box_from_landmarks(real_records[0].landmarks)
    want = landmarker.predict(image, box)
    for variant in (image / 255.0, image.astype(np.float32),
                    image.astype(np.uint16) * 257):
        np.testing.assert_allclose(landmarker.predict(variant, box), want, atol=1e-4)


@pytest.mark.parametrize("case,fragment", [("nan", "NaN or infinite"),
                                           ("negative", "span [-1"),
                                           ("bool", "not a pixel type"),
                                           ("box_outside", "lies entirely outside")])
def test_unusable_images_and_boxes_are_refused(case, fragment, real_records):
    from fld.images import read_image_rgb
    from fld.runtime import Landmarker

    image = read_image_rgb(real_records[0].image_path)
    box = box_from_landmarks(real_records[0].landmarks)
    if case == "nan":
        image = image.astype(np.float32)
        image[10, 10, 0] = np.nan
    elif case == "negative":
        image = image.astype(np.float32) - 1
    elif case == "bool":
        image = image > 128
    else:
        box = box + 5000
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        Landmarker().predict(image, box)


# item 11: a model of the wrong kind


def test_model_files_of_the_wrong_kind_say_what_they_are(real_records, tmp_path):
    from fld.keras_engine import load_keras_model
    from fld.runtime import Landmarker, ModelError

    from tests.helpers import tiny_detector

    keras_path = tmp_path / "student.keras"
    tiny_detector(image_size=32).save(str(keras_path))
    with pytest.raises(ModelError, match="is a Keras model, not a .tflite: convert it with "
                                         "tools/convert.py"):
        Landmarker(str(keras_path))
    renamed = tmp_path / "model.keras"
    renamed.write_bytes(shipped_bytes())
    with pytest.raises(ValueError, match="is a TFLite model, not a Keras file"):
        load_keras_model(str(renamed))
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        Landmarker(str(tmp_path))
    weights = tmp_path / "foreign.weights.h5"
    tiny_detector(image_size=32).save_weights(str(weights))
    with pytest.raises(ValueError, match="cannot load these weights") as error:
        load_keras_model(str(weights), "mobilevitv2_050", 128, "300w_68")
    assert str(weights) in str(error.value) and len(str(error.value)) < 600
    line = one_error_line(predict("--model", str(keras_path), "--input",
                                  real_records[0].image_path), "predict.py")
    assert str(keras_path) in line and "convert it" in line


# items 12, 13: temporary files and unwritable outputs


def test_stale_temporaries_are_removed_and_writes_are_fsynced(tmp_path, monkeypatch):
    from fld import fileio

    target = tmp_path / "face.pts"
    dead = tmp_path / ".tmp-999999999-face.pts-abc123.pts"      # no such process
    alive = tmp_path / f".tmp-{os.getppid()}-face.pts-def456.pts"   # a live writer
    other = tmp_path / ".tmp-999999999-other.pts-abc123.pts"     # another target's
    for path in (dead, alive, other):
        path.write_text("half")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    fileio.write_text_atomic(str(target), "done\n")
    assert target.read_text() == "done\n"
    assert not dead.exists() and alive.exists() and other.exists()
    assert len(synced) >= 1                          # the data, before the rename
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")
                and p not in (alive, other)]


def blocked_dir(tmp_path):
    """A folder path that cannot be created: its parent is a file (works as root too)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return str(blocker / "out")


def test_unwritable_outputs_fail_before_any_work(real_records, tmp_path):
    out = blocked_dir(tmp_path)
    line = one_error_line(predict("--input", real_records[0].image_path, "--output_dir", out,
                                  "--save_pts"), "predict.py")
    assert out in line and "cannot write to the --output_dir" in line
    line = one_error_line(run_tool("evaluate.py", "--model",
                                   "fld/runtime/assets/default_68.tflite", "--data_dir",
                                   os.path.dirname(real_records[0].image_path), "--limit", "2",
                                   "--report_dir", out), "evaluate.py")
    assert out in line and "--report_dir" in line
    line = one_error_line(run_tool("train.py", "--flagfile=configs/smoke.flags",
                                   f"--work_dir={out}"), "train.py")
    assert out in line and "--work_dir" in line
    done = run_tool("convert.py", "--checkpoint", "fld/runtime/assets/default_68.tflite",
                    "--model", "mobilevitv2_100_gn", "--quantize", "none",
                    "--output", os.path.join(out, "m.tflite"))
    line = one_error_line(done, "convert.py")
    assert out in line and ".tmp" not in line


# item 14: the training loss of an epoch interrupted and resumed


def test_history_after_a_mid_epoch_resume_counts_every_step(data_300w, tmp_path, monkeypatch):
    from fld.training import checkpoint as cb
    from fld.training import trainer

    from tests.helpers import read_history, tiny_config, tiny_detector

    config = tiny_config(data_300w, tmp_path / "full", max_train_faces=16, ema_momentum=0.0,
                         num_sample_images=0, val_every=0, occlusion_prob=0.0)
    trainer.train(config, student=tiny_detector(), verbose=0)
    want = float(read_history(tmp_path / "full" / "history.csv")[0]["loss"])

    class Interrupt(Exception):
        pass

    original = cb.TrainingCheckpoint.on_train_batch_end

    def stop_after_two(self, batch, logs=None):
        original(self, batch, logs)
        if self.skip + batch + 1 == 2:
            raise Interrupt

    split = dataclasses.replace(config, work_dir=str(tmp_path / "split"))
    monkeypatch.setattr(cb.TrainingCheckpoint, "on_train_batch_end", stop_after_two)
    with pytest.raises(Interrupt):
        trainer.train(split, student=tiny_detector(), verbose=0)
    monkeypatch.setattr(cb.TrainingCheckpoint, "on_train_batch_end", original)
    trainer.train(split, student=tiny_detector(), verbose=0)
    got = float(read_history(tmp_path / "split" / "history.csv")[0]["loss"])
    assert got == pytest.approx(want, rel=1e-3), (got, want)


# item 15: truncated videos and huge images


def test_truncated_video_warns_about_the_short_read(real_records, tmp_path):
    import cv2

    from fld.images import read_image_rgb

    frame = cv2.resize(cv2.cvtColor(read_image_rgb(real_records[0].image_path),
                                    cv2.COLOR_RGB2BGR), (320, 240))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(20):
        writer.write(np.roll(frame, i, axis=1))
    writer.release()
    data = clip.read_bytes()
    clip.write_bytes(data[:int(len(data) * 0.55)])
    done = predict("--input", str(clip))
    assert done.returncode == 0, done.stderr[-2000:]
    read = int(done.stdout.strip().splitlines()[-1].split(",")[0].split(":")[1])
    assert 0 < read < 20
    assert f"warning: {clip}: read {read} of the 20 frames" in done.stderr


def test_image_size_headers_match_the_decoded_images(real_records, tmp_path):
    import cv2

    from fld.images import image_size, read_image_rgb

    image = read_image_rgb(real_records[0].image_path)
    assert image_size(real_records[0].image_path) == (image.shape[1], image.shape[0])
    for ext in (".png", ".bmp", ".webp", ".jpg"):
        path = str(tmp_path / f"face{ext}")
        cv2.imwrite(path, image[:301, :257])
        assert image_size(path) == (257, 301), ext


def test_pixel_limit_refuses_huge_images_before_decoding(real_records, tmp_path):
    import cv2

    from fld.images import ImageError, read_image_rgb

    huge = str(tmp_path / "huge.png")
    cv2.imwrite(huge, np.zeros((12_000, 9_000), np.uint8))   # 108 M pixels, ~100 KB on disk
    with pytest.raises(ImageError, match="12000 = 108 M pixels is over the limit of 100 M"):
        read_image_rgb(huge)
    line = one_error_line(predict("--input", real_records[0].image_path, "--max_pixels",
                                  "10000"), "predict.py")
    assert real_records[0].image_path in line and "over the limit" in line


# item 16: custom scheme files


SCHEME_CASES = [
    ({"num_points": 4, "io_indices": [0, 1], "flip_pairs": [[0, 1], [2, 9]]},
     "flip_pairs[1] = [2, 9]: index out of range 0..3"),
    ({"num_points": 4, "io_indices": [0.9, 1]}, "io_indices[0] must be an integer, got 0.9"),
    ({"num_points": 4, "io_indices": [0, 1], "edges": [{"name": "a", "points": [0, 7]}]},
     "indices out of range 0..3: [7]"),
    ({"num_points": 4, "io_indices": [0, 1], "flip_pairs": [[0, 1]],
      "edges": [{"name": "brow", "points": [0, 2]}]},
     "the mirror of edge 'brow' is not an edge of the scheme"),
]


@pytest.mark.parametrize("spec,fragment", SCHEME_CASES, ids=["pair", "float", "edge", "mirror"])
def test_scheme_files_name_the_bad_entry(spec, fragment, tmp_path):
    import json

    from fld.schemes import get_scheme

    path = tmp_path / "my_4.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError) as error:
        get_scheme(str(path))
    assert str(path) in str(error.value) and fragment in str(error.value), str(error.value)
