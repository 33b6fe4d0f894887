"""Tests of the training orchestration: schedule, EMA, flags, checkpoints and resume, CLIs.

Fast tests train a tiny stand-in detector (32 px input, stride-4 maps, 300W-68) on a few
real faces in-process; the slow ones run the CLIs end to end with configs/smoke.flags.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from fld.training import LandmarkTrainer
from fld.training import checkpoint as ck
from fld.training import trainer
from fld.training.schedules import WarmupCosine
from tests.helpers import (SCHEME, read_history, synthetic_batch, tiny_config, tiny_detector,
                           tiny_model)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- schedule, EMA, flags -------------------------------------------------------------------


def test_warmup_cosine_values():
    s = WarmupCosine(peak=1e-3, total_steps=110, warmup_steps=10, final_fraction=0.1)
    value = lambda step: float(keras.ops.convert_to_numpy(s(step)))  # noqa: E731
    assert value(0) == pytest.approx(0.0)
    assert value(5) == pytest.approx(0.5e-3)
    assert value(10) == pytest.approx(1e-3)                     # peak after warm-up
    assert value(60) == pytest.approx(0.1e-3 + 0.9e-3 * 0.5)    # half-way down the cosine
    assert value(110) == pytest.approx(0.1e-3)                  # end
    assert value(500) == pytest.approx(0.1e-3)                  # stays there
    no_warmup = WarmupCosine(peak=2.0, total_steps=4)
    assert float(keras.ops.convert_to_numpy(no_warmup(0))) == pytest.approx(2.0)
    restored = WarmupCosine.from_config(s.get_config())
    assert float(keras.ops.convert_to_numpy(restored(60))) == pytest.approx(value(60))


def test_ema_updates_toward_weights_and_swaps():
    student = tiny_model(3)
    model = LandmarkTrainer(student, io_indices=(0, 1), ema_momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(v) for v in student.trainable_variables]
    model.train_on_batch(*synthetic_batch())
    after = [np.array(v) for v in student.trainable_variables]
    decay = min(0.5, 1.0 / 10.0)  # warm-up of the decay at the first update
    for b, a, e in zip(before, after, model.ema_vars):
        np.testing.assert_allclose(np.array(e), decay * b + (1 - decay) * a, rtol=1e-5, atol=1e-7)
    assert float(np.array(model.ema_updates)) == 1.0
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    with model.ema_weights() as swapped:
        assert swapped is student
        inside = [np.array(w) for w in student.trainable_variables]
    for i, b, a in zip(inside, before, after):  # the EMA values were in the student
        np.testing.assert_allclose(i, decay * b + (1 - decay) * a, rtol=1e-5, atol=1e-7)
    for w, a in zip(student.trainable_variables, after):  # and the weights came back exactly
        np.testing.assert_array_equal(np.array(w), a)


def test_flags_round_trip_through_flagfile(tmp_path):
    from absl import flags

    fv = flags.FlagValues()
    trainer.define_flags(fv)
    config = trainer.TrainConfig(data_dir="faces", work_dir="w", epochs=7, jit_compile=True,
                                 kd_weight=3.0, strategy="mirrored", lr_head=5e-4)
    path = tmp_path / "flags.txt"
    path.write_text(trainer.config_to_flagfile(config, "python tools/train.py"))
    fv(["prog", f"--flagfile={path}"])
    assert trainer.config_from_flags(fv) == config


# --- training runs (tiny stand-in model, real faces) ------------------------------------


def test_train_writes_outputs_and_resumes(data_300w, tmp_path):
    config = tiny_config(data_300w, tmp_path / "run")
    first = trainer.train(config, student=tiny_detector(), verbose=0)
    work = tmp_path / "run"
    for name in ("flags.txt", "state.npz", "best.keras", "history.csv", "samples.png"):
        assert (work / name).is_file(), name
    assert any((work / "logs" / "validation").iterdir())
    meta = ck.load_training_state(first.trainer_model, str(work / "state.npz"))
    steps = 8 // 4
    assert (meta["epoch"], meta["step"], meta["iterations"]) == (1, 0, steps)
    # Same work_dir, more epochs: continues at epoch 2 with the optimizer state.
    second = trainer.train(dataclasses.replace(config, epochs=3), student=tiny_detector(seed=5),
                           verbose=0)
    history = read_history(work / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2, 3]
    assert int(np.array(second.trainer_model.optimizer.iterations)) == 3 * steps
    assert int(np.array(second.trainer_model.backbone_optimizer.iterations)) == 3 * steps
    assert float(np.array(second.trainer_model.ema_updates)) == 3 * steps
    assert np.isfinite(second.best_score) and second.best_path == str(work / "best.keras")
    # best.keras: the student alone, loads in safe mode and predicts.
    model = keras.saving.load_model(second.best_path)
    out = model(np.zeros((1, 32, 32, 3), np.float32))
    assert out["fused"].shape == (1, 8, 8, SCHEME.num_points)
    # The flags file re-parses to the config.
    text = (work / "flags.txt").read_text()
    assert "--epochs=3" in text and "--ema_momentum=0.9" in text


def test_resume_matches_uninterrupted_run(data_300w, tmp_path):
    """2 epochs in one go == 1 epoch + resume (data order seeded per epoch)."""
    config = tiny_config(data_300w, tmp_path / "a", epochs=2, ema_momentum=0.0,
                         num_sample_images=0, val_every=0, occlusion_prob=0.0)
    full = trainer.train(config, student=tiny_detector(), verbose=0)
    split = dataclasses.replace(config, work_dir=str(tmp_path / "b"), epochs=1)
    trainer.train(split, student=tiny_detector(), verbose=0)
    resumed = trainer.train(dataclasses.replace(split, epochs=2), student=tiny_detector(),
                            verbose=0)
    for a, b in zip(full.trainer_model.student.weights, resumed.trainer_model.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_clear_errors(data_300w, tmp_path):
    with pytest.raises(FileNotFoundError, match="--teacher"):
        trainer.load_teacher(str(tmp_path / "missing.keras"), tiny_config(data_300w, tmp_path))
    bad = tmp_path / "teacher.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a loadable Keras model"):
        trainer.load_teacher(str(bad), tiny_config(data_300w, tmp_path))
    other = tiny_detector(points=5, name="teacher")
    other.save(str(tmp_path / "five.keras"))
    with pytest.raises(ValueError, match="scheme mismatch"):
        trainer.load_teacher(str(tmp_path / "five.keras"), tiny_config(data_300w, tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError):
        trainer.load_data(tiny_config(data_300w, tmp_path, data_dir=str(empty)))


def test_init_from_copies_matching_layers(data_300w, tmp_path):
    source = tiny_detector(seed=1)
    source.save(str(tmp_path / "source.keras"))
    # Same scheme: every layer is copied.
    target = tiny_detector(seed=2)
    report = trainer.init_student_weights(target, str(tmp_path / "source.keras"))
    assert report["skipped"] == [] and report["copied_params"] == source.count_params()
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # Another scheme (5 points): the backbone and the edge head carry over, the point heads not.
    five = tiny_detector(seed=3, points=5)
    before = five.get_layer("heatmaps").get_weights()[0].copy()
    report = trainer.init_student_weights(five, str(tmp_path / "source.keras"))
    assert {"bb1", "bb2"} <= set(report["copied"])
    assert {"heatmaps", "points"} <= set(report["skipped"])
    np.testing.assert_array_equal(five.get_layer("heatmaps").get_weights()[0], before)
    np.testing.assert_array_equal(five.get_layer("backbone").get_layer("bb2").get_weights()[0],
                                  source.get_layer("backbone").get_layer("bb2").get_weights()[0])
    # A run started from it (learning rate 0) keeps the copied weights, and so does its EMA:
    # the average starts from the copied weights, not from the random init.
    config = tiny_config(data_300w, tmp_path / "run", init_from=str(tmp_path / "source.keras"),
                         lr_backbone=0.0, lr_head=0.0, num_sample_images=0)
    result = trainer.train(config, student=tiny_detector(seed=4), verbose=0)
    best = keras.saving.load_model(result.best_path, compile=False)
    for model in (result.trainer_model.student, best):
        for a, b in zip(source.trainable_weights, model.trainable_weights):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)


def test_init_from_clear_errors(tmp_path):
    student = tiny_detector()
    with pytest.raises(FileNotFoundError, match="--init_from"):
        trainer.init_student_weights(student, str(tmp_path / "missing.keras"))
    bad = tmp_path / "bad.keras"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a loadable Keras model"):
        trainer.init_student_weights(student, str(bad))
    (tmp_path / "weights.h5").write_text("x")
    with pytest.raises(ValueError, match="expected a .keras model or an fld .tflite"):
        trainer.init_student_weights(student, str(tmp_path / "weights.h5"))
    inp = keras.Input((32, 32, 3))
    other = keras.Model(inp, keras.layers.Dense(3, name="unrelated")(inp))
    other.save(str(tmp_path / "other.keras"))
    with pytest.raises(ValueError, match="no layer matches"):
        trainer.init_student_weights(student, str(tmp_path / "other.keras"))


# --- CLIs end to end (real presets, configs/smoke.flags) -------------------------------------


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def _cli(script, *args, timeout=600):
    proc = subprocess.run([sys.executable, os.path.join("tools", script),
                           "--flagfile=configs/smoke.flags", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.mark.slow
def test_smoke_flags_run_both_stages(tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    out = _cli("train.py", f"--work_dir={teacher_dir}")
    assert "best model:" in out
    history = read_history(teacher_dir / "history.csv")
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    out = _cli("distill.py", "--model=mobilevitv2_050", f"--work_dir={student_dir}",
               f"--teacher={teacher_dir / 'best.keras'}")
    history = read_history(student_dir / "history.csv")
    assert "kd" in history[0] and float(history[-1]["loss"]) < float(history[0]["loss"])
    import fld.models  # noqa: F401 - registers LandmarkDetector

    model = keras.saving.load_model(str(student_dir / "best.keras"))
    out = model(np.zeros((2, 64, 64, 3), np.float32))
    assert out["fused"].shape == (2, 16, 16, 68)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume(tmp_path):
    """kill -9 after the first mid-epoch checkpoint; the restart completes every epoch once."""
    work = tmp_path / "run"
    args = [sys.executable, os.path.join("tools", "train.py"), "--flagfile=configs/smoke.flags",
            f"--work_dir={work}", "--model=mobilevitv2_050", "--epochs=2",
            "--checkpoint_every_steps=1", "--num_sample_images=0"]
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = work / "state.npz"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert state.exists(), "no checkpoint before the run ended"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "history.csv").exists() or len(read_history(work / "history.csv")) < 2
    out = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    assert "resuming from" in out.stdout
    assert [int(r["epoch"]) for r in read_history(work / "history.csv")] == [1, 2]
    import json

    with np.load(state) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["epoch"] == 2 and meta["iterations"] == 2 * (32 // 8)


def test_mirrored_strategy_run(data_300w, tmp_path):
    """--strategy mirrored (one CPU replica here): models built in scope, EMA, checkpoint."""
    config = tiny_config(data_300w, tmp_path / "m", strategy="mirrored", num_sample_images=0)
    result = trainer.train(config, student=tiny_detector, verbose=0)  # built in the scope
    assert np.isfinite(result.best_score)
    assert float(np.array(result.trainer_model.ema_updates)) == 2
    assert (tmp_path / "m" / "best.keras").is_file()


def test_replicated_strategies_restart_without_the_onednn_rewrite(monkeypatch, capsys):
    """--strategy mirrored / multi_worker re-runs the command with TF_ENABLE_ONEDNN_OPTS=0
    while the rewrite is on (it breaks replicas on a second device); nothing else does."""
    calls = []
    execve = lambda path, args, env: calls.append((path, args, env))  # noqa: E731
    monkeypatch.setattr(trainer, "onednn_enabled", lambda: True)
    monkeypatch.setattr(sys, "argv", ["tools/distill.py", "--strategy=multi_worker"])
    monkeypatch.delenv(trainer.ONEDNN_ENV, raising=False)
    trainer.restart_without_onednn("default", execve)
    assert calls == []
    for name in ("mirrored", "multi_worker"):
        trainer.restart_without_onednn(name, execve)
        path, args, env = calls.pop()
        assert path == sys.executable and args[1:] == sys.argv
        assert env[trainer.ONEDNN_ENV] == "0"
        assert f"--strategy {name}: restarting with TF_ENABLE_ONEDNN_OPTS=0" in \
            capsys.readouterr().out
    monkeypatch.setenv(trainer.ONEDNN_ENV, "0")    # the restarted process: no loop
    trainer.restart_without_onednn("multi_worker", execve)
    monkeypatch.delenv(trainer.ONEDNN_ENV)
    monkeypatch.setattr(trainer, "onednn_enabled", lambda: False)   # e.g. an AVX2-only CPU
    trainer.restart_without_onednn("multi_worker", execve)
    assert calls == []
