"""Tests for fld.training.LandmarkTrainer on tiny functional models (16x16 maps, K=5, E=2)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from fld.codec import decode_ops
from fld.training import LandmarkTrainer
from fld.training.nme_metric import NormalizedMeanError
from tests.helpers import REPO, synthetic_batch, tiny_model

def _weights(model):
    return [np.array(w) for w in model.weights]


def test_distillation_step_freezes_teacher_and_updates_student():
    teacher, student = tiny_model(1, 12, "teacher"), tiny_model(2, 8, "student")
    before_t, before_s = _weights(teacher), _weights(student)
    model = LandmarkTrainer(student, teacher, io_indices=(0, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, targets = synthetic_batch()
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert set(logs) == {"loss", "star", "aam", "kd"}
    assert logs["kd"] > 0
    assert logs["loss"] == pytest.approx(logs["star"] + logs["aam"] + logs["kd"], rel=1e-5)
    # Teacher: every weight (BN moving statistics included) bit-identical.
    for a, b in zip(before_t, _weights(teacher)):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(before_s, _weights(student))]
    assert all(changed[i] for i, w in enumerate(student.weights) if w.trainable)
    assert not teacher.trainable


def test_kd_term_matches_weighted_mse_of_fused():
    teacher, student = tiny_model(1, name="teacher"), tiny_model(2, name="student")
    images, targets = synthetic_batch()
    model = LandmarkTrainer(student, teacher, kd_weight=7.0)
    model.compile(optimizer="sgd")
    logs = model.test_on_batch(images, targets, return_dict=True)
    s = student(images, training=False)["fused"]
    t = teacher(images, training=False)["fused"]
    assert logs["kd"] == pytest.approx(7.0 * float(np.mean((np.array(s) - np.array(t)) ** 2)), rel=1e-4)


def test_without_teacher_is_supervised_and_loss_falls():
    student = tiny_model(3)
    model = LandmarkTrainer(student, io_indices=(0, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, targets = synthetic_batch()
    history = model.fit(images, targets, batch_size=4, epochs=30, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert set(history.history) == {"loss", "star", "aam"}
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    logs = model.evaluate(images, targets, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "star", "aam", "nme"}
    assert np.isfinite(logs["nme"])


def test_call_delegates_to_student_and_student_saves(tmp_path):
    student = tiny_model(4)
    model = LandmarkTrainer(student)
    images, _ = synthetic_batch(2)
    out = model(images)
    np.testing.assert_allclose(out["fused"], student(images)["fused"])
    path = str(tmp_path / "student.keras")
    model.student.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(images)["fused"], out["fused"], atol=1e-6)


def test_config_round_trip():
    model = LandmarkTrainer(tiny_model(1, name="student"), tiny_model(2, name="teacher"),
                      io_indices=(0, 1), kd_form="l2_sum", star_weight=2.0)
    restored = LandmarkTrainer.from_config(model.get_config())
    assert restored.kd_loss.form == "l2_sum" and restored.star_weight == 2.0
    assert restored.io_indices == (0, 1) and not restored.teacher.trainable
    assert restored.student.name == "student"


def test_separate_backbone_optimizer():
    student = tiny_model(5)
    model = LandmarkTrainer(student, backbone=student.get_layer("stem"))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), backbone_optimizer=keras.optimizers.SGD(0.0)
    )
    before = {w.path: np.array(w) for w in student.trainable_weights}
    model.train_on_batch(*synthetic_batch())
    for w in student.trainable_weights:
        same = np.array_equal(before[w.path], np.array(w))
        assert same == w.path.startswith("stem/"), w.path


def test_argmax_decode_and_validation_nme_golden():
    hm = np.zeros((1, 4, 6, 3), np.float32)
    hm[0, 1, 2, 0] = hm[0, 3, 5, 1] = hm[0, 0, 0, 2] = 1.0  # (row, col) -> (x, y) = (col, row)
    pred = np.asarray(decode_ops(hm, "argmax"))
    np.testing.assert_array_equal(pred, [[[2, 1], [5, 3], [0, 0]]])
    target = pred + np.array([[[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]], np.float32)  # errors 5, 0, 0
    io = np.linalg.norm(target[0, 0] - target[0, 1])
    metric = NormalizedMeanError(scheme=None, io_indices=(0, 1))  # the LandmarkTrainer's validation NME
    metric.update_state(target, pred)
    np.testing.assert_allclose(float(metric.result()), 5.0 / 3.0 / io, rtol=1e-6)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from fld.training import LandmarkTrainer
    from tests.helpers import tiny_model, synthetic_batch

    images, targets = synthetic_batch(4)
    def run(strategy):
        with strategy.scope():
            teacher = tiny_model(1, 12, "teacher", batchnorm=False)
            student = tiny_model(2, 8, "student", batchnorm=False)
            model = LandmarkTrainer(student, teacher)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        logs = model.fit(images, targets, batch_size=4, epochs=1, shuffle=False, verbose=0)
        return logs.history["loss"][0], [np.array(w) for w in student.weights]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    loss_2, w_2 = run(strategy)
    loss_1, w_1 = run(tf.distribute.get_strategy())
    assert np.isfinite(loss_2), loss_2
    assert abs(loss_2 - loss_1) < 1e-4 * abs(loss_1), (loss_2, loss_1)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(w_2, w_1))
    assert err < 1e-5, err  # global-batch scaling: same update as one replica
    print("MIRRORED_OK", loss_2, loss_1, err)
    """
)


def test_mirrored_strategy_two_cpus_matches_single_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "MIRRORED_OK" in proc.stdout, proc.stdout + proc.stderr[-4000:]


def test_resumed_distillation_reloads_the_teacher_and_matches_one_run(data_300w, tmp_path):
    """Distill 2 epochs in one go == 1 epoch + resume: the resumed run reloads the frozen
    teacher from --teacher (state.npz holds the student only) and keeps distilling."""
    import dataclasses

    from fld.training import trainer
    from tests.helpers import read_history, tiny_config, tiny_detector

    teacher_path = str(tmp_path / "teacher.keras")
    saved_teacher = tiny_detector(seed=7, name="teacher")
    saved_teacher.save(teacher_path)
    config = tiny_config(data_300w, tmp_path / "a", epochs=2, ema_momentum=0.0,
                         num_sample_images=0, val_every=0, occlusion_prob=0.0,
                         teacher=teacher_path)
    full = trainer.train(config, student=tiny_detector(), verbose=0)
    split = dataclasses.replace(config, work_dir=str(tmp_path / "b"), epochs=1)
    trainer.train(split, student=tiny_detector(), verbose=0)
    resumed = trainer.train(dataclasses.replace(split, epochs=2), student=tiny_detector(),
                            verbose=0)
    teacher = resumed.trainer_model.teacher
    assert teacher is not None and not teacher.trainable
    assert len(teacher.weights) == len(saved_teacher.weights)
    for a, b in zip(saved_teacher.weights, teacher.weights):  # untouched by 2 epochs
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # The KD term was on in the resumed epoch, with the value of the uninterrupted run.
    rows = {run: read_history(tmp_path / run / "history.csv") for run in ("a", "b")}
    assert [int(r["epoch"]) for r in rows["b"]] == [1, 2]
    for a, b in zip(rows["a"], rows["b"]):
        assert float(b["kd"]) > 0
        assert float(b["kd"]) == pytest.approx(float(a["kd"]), rel=1e-4)
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-4)
    fresh = tiny_detector()
    assert any(not np.allclose(np.array(a), np.array(b))
               for a, b in zip(fresh.weights, resumed.trainer_model.student.weights))
    for a, b in zip(full.trainer_model.student.weights, resumed.trainer_model.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)
