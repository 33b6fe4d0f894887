"""Tests for fld.export.tflite_weights: float Keras weights recovered from the shipped int8 model."""

import os

import numpy as np
import pytest

from fld.export import tflite_weights
from fld.models import LandmarkDetector

SHIPPED = os.path.join(os.path.dirname(__file__), "..", "fld", "runtime", "assets",
                       "default_68.tflite")
PRESET, SIZE = "mobilevitv2_100_gn", 128


@pytest.fixture(scope="module")
def recovered():
    model = LandmarkDetector(preset=PRESET, image_size=SIZE, scheme="300w_68")
    report = tflite_weights.load_tflite_weights(model, SHIPPED)
    return model, report


@pytest.fixture(scope="module")
def crops(real_records):
    from fld.export.calibration import face_crops

    return np.concatenate(face_crops(real_records[:12], SIZE, progress=False))


def test_every_trained_layer_is_recovered(recovered):
    model, report = recovered
    # Only the fixed edge-to-point transform (its values live in the config) is not read.
    assert report["skipped"] == ["head_edge_to_point"]
    assert len(report["folded_bn"]) == 35       # every BatchNorm of the backbone and decoder
    bn = model.get_layer("backbone").get_layer("stem_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.0)
    assert np.abs(bn.beta.numpy()).max() > 0    # the folded bias went to beta
    # GroupNorm affine parameters are read from their MUL / ADD constants, not left at 1 / 0
    # (trained values lie within ~0.02 of them; int8 steps are ~1e-3).
    norm = model.get_layer("backbone").get_layer("layer3_mvit_attn0_norm1")
    assert np.abs(norm.gamma.numpy() - 1).max() > 0.01
    assert np.abs(norm.beta.numpy()).max() > 0.01


def test_recovered_model_predicts_what_the_int8_model_predicts(recovered, real_records):
    from fld.images import read_image_rgb
    from fld.keras_engine import KerasEngine, model_info_for
    from fld.metrics import nme
    from fld.runtime import Landmarker

    model, _ = recovered
    int8_landmarker = Landmarker(SHIPPED)
    # a flip-pair file averages each face with its mirror: the float model does the same
    float_landmarker = Landmarker.from_engine(KerasEngine(model), model_info_for(model),
                                              flip_test=int8_landmarker.info.flip_pair)
    errors, gaps = [], []
    for record in real_records[:8]:
        image = read_image_rgb(record.image_path)
        a = float_landmarker.predict(image, record.face_box)
        b = int8_landmarker.predict(image, record.face_box)
        errors.append(nme(a[None], record.landmarks[None], "300w_68")[0])
        gaps.append(nme(a[None], b[None], "300w_68")[0])
    # Real faces: the recovered float model is a trained landmarker (shipped int8: ~5% on
    # these), and it agrees with the int8 model it came from (measured: 2% io apart, the int8
    # rounding; a wrong layout or a missed BatchNorm scale gives tens of percent).
    assert np.mean(errors) < 0.08, errors
    assert np.mean(gaps) < 0.04, gaps


def test_recalibration_keeps_inference_and_fits_training_mode(crops):
    model = LandmarkDetector(preset=PRESET, image_size=SIZE, scheme="300w_68")
    report = tflite_weights.load_tflite_weights(model, SHIPPED)
    before = np.asarray(model(crops[:4], training=False)["fused"])
    tflite_weights.recalibrate_batchnorm(model, report["folded_bn"], crops)
    after = np.asarray(model(crops[:4], training=False)["fused"])
    np.testing.assert_allclose(after, before, atol=1e-4 * np.abs(before).max())
    # The moving statistics are now those of the data ...
    bn = model.get_layer("backbone").get_layer("stem_bn")
    assert np.abs(bn.moving_mean.numpy()).max() > 1e-3
    # ... so batch statistics (training mode) give nearly the inference-mode maps.
    train = np.asarray(model(crops, training=True)["fused"])
    infer = np.asarray(model(crops, training=False)["fused"])
    assert np.abs(train - infer).mean() < 0.2 * np.abs(infer).mean()


def test_clear_errors(tmp_path):
    model = LandmarkDetector(preset="mobilevitv2_050_gn", image_size=64, scheme="300w_68")
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        tflite_weights.load_tflite_weights(model, str(tmp_path / "missing.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="bad.tflite"):
        tflite_weights.load_tflite_weights(model, str(bad))
    # Another width: only the decoder and heads (fixed widths) carry over, as with .keras.
    report = tflite_weights.load_tflite_weights(model, SHIPPED)
    assert report["copied"] and all(name.startswith(("decoder", "head", "points", "edges"))
                                    for name in report["copied"]), report["copied"]
    # Another model family: nothing matches by name and shape.
    import keras

    inputs = keras.Input((16, 16, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="stem_conv")(inputs))
    with pytest.raises(ValueError, match="no layer matches"):
        tflite_weights.load_tflite_weights(other, SHIPPED)


def test_train_init_from_tflite(data_300w, tmp_path):
    """tools/train.py --init_from=<.tflite>: the student starts from the shipped weights."""
    from fld.training import trainer

    student = LandmarkDetector(preset=PRESET, image_size=SIZE, scheme="300w_68")
    with pytest.raises(ValueError, match="needs training faces"):
        trainer.init_student_weights(student, SHIPPED)
    with pytest.raises(FileNotFoundError, match="--init_from"):
        trainer.init_student_weights(student, str(tmp_path / "none.tflite"))
    (tmp_path / "w.h5").write_text("x")
    with pytest.raises(ValueError, match="expected a .keras model or an fld .tflite"):
        trainer.init_student_weights(student, str(tmp_path / "w.h5"))
    config = trainer.TrainConfig(data_dir=os.path.join(data_300w, "afw"), image_size=SIZE,
                                 max_train_faces=8, batch_size=8,
                                 work_dir=str(tmp_path / "run"))
    data = trainer.load_data(config)
    report = trainer.init_student_weights(student, SHIPPED, data.train)
    assert report["skipped"] == ["head_edge_to_point"]
    # The folded BatchNorms got the statistics of the real training crops.
    bn = student.get_layer("backbone").get_layer("stem_bn")
    assert np.abs(bn.moving_mean.numpy()).max() > 1e-3
    assert np.all(bn.moving_variance.numpy() > 0)


def test_the_fast_model_split_attention_reads_back_into_the_fused_form():
    """fast_68.tflite was exported with split attention projections (tools/convert.py
    --split_attention): no RELU op is left, and its q+k and v kernels merge back into the
    training graph's one qkv layer per block."""
    from fld.export.op_split import op_types
    from fld.export.split_attention import merge_split_kernels
    from fld.runtime import Landmarker

    path = Landmarker(preset="fast").model.path
    with open(path, "rb") as f:
        ops = op_types(f.read(), path)
    assert "RELU" not in ops and ops.count("CONV_2D") > 0
    found = tflite_weights.read_tflite_tensors(path)
    assert not [n for n in found if n.endswith(("_qk", "_v"))]
    model = LandmarkDetector(preset="mobilevitv2_050", image_size=128, scheme="300w_68")
    report = tflite_weights.load_tflite_weights(model, path)
    qkv = [n for n in report["copied"] if n.endswith("_qkv")]
    assert len(qkv) == 9 and found["layer5_mvit_attn2_qkv"]["kernel"].shape == (1, 1, 128, 257)
    # Known gap: BatchNorm token norms (a per-channel MUL in int8, not SampleNormalization's
    # mul_2 / add_1) are not read back, so fld.keras_engine refuses such a file by name.
    assert all(n == "head_edge_to_point" or "_norm" in n for n in report["skipped"])
    # the merge itself: two halves of a kernel and bias come back as the whole, in order
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(1, 1, 8, 9)), rng.normal(size=9)
    split = {"a_qk": {"kernel": kernel[..., :5], "bias": bias[:5], "op": "CONV_2D",
                      "bias_owners": set()},
             "a_v": {"kernel": kernel[..., 5:], "bias": bias[5:], "op": "CONV_2D",
                     "bias_owners": set()}, "other": {"gamma": bias}}
    merged = merge_split_kernels(split)
    assert set(merged) == {"a_qkv", "other"}
    np.testing.assert_array_equal(merged["a_qkv"]["kernel"], kernel)
    np.testing.assert_array_equal(merged["a_qkv"]["bias"], bias)
