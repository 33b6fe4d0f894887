"""Tests for fld.models at tiny shapes (64 px input, the 51-point scheme)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fld.models as models
from fld.models.layers import FixedPointwise, InstanceNormalization, SampleNormalization
from fld.models.mobilevitv2 import PatchFold, PatchUnfold
from fld.schemes import get_scheme
from tests.helpers import TINY_SCHEME_TWO_EDGES

SIZE = 64
TINY_SCHEME = TINY_SCHEME_TWO_EDGES
CASES = {
    "student": dict(preset="mobilevitv2_050", scheme="pair_51"),
    "student_gn": dict(preset="mobilevitv2_050_gn", scheme="pair_51"),
    "student_nearest": dict(preset="mobilevitv2_050", scheme="pair_51", decoder="nearest"),
    "teacher_cpu": dict(preset="swinv2_cpu_window8_256", scheme=TINY_SCHEME,
                        return_features=True),
}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    kwargs = CASES[request.param]
    return kwargs, models.LandmarkDetector(image_size=SIZE, **kwargs)


def _numpy(outputs):
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def test_output_shapes_dtypes_and_ranges(case, images):
    kwargs, model = case
    scheme = get_scheme(kwargs["scheme"])
    k, e, side = scheme.num_points, scheme.num_edges, SIZE // 4
    out = _numpy(model(images))
    expected = {"heatmaps": k, "points": k, "edges": e, "fused": k}
    if kwargs.get("return_features"):
        expected["features"] = out["features"].shape[-1]
    assert {name: v.shape for name, v in out.items()} == {
        name: (2, side, side, c) for name, c in expected.items()}
    for name, value in out.items():
        assert value.dtype == np.float32, name
        assert np.isfinite(value).all(), f"{name} has NaN/inf"
    assert out["heatmaps"].min() >= 0.0
    for name in ("points", "edges"):
        assert 0.0 <= out[name].min() and out[name].max() <= 1.0
    # AAM: fused = (edges @ M + bias) * points * heatmaps.
    matrix, bias = scheme.edge_to_point()
    mask = (out["edges"] @ matrix + bias) * out["points"]
    np.testing.assert_allclose(out["fused"], mask * out["heatmaps"], rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_save_load(case, images, tmp_path):
    _, model = case
    clone = models.LandmarkDetector.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    expected = _numpy(model(images))
    for name, value in _numpy(clone(images)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, models.LandmarkDetector)
    for name, value in _numpy(loaded(images)).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_every_trainable_weight_gets_a_gradient(case, images):
    _, model = case
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = sum(tf.reduce_mean(tf.square(v - 0.1)) for v in out.values())
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    bad = [w.path for w, g in zip(model.trainable_weights, grads)
           if not np.isfinite(keras.ops.convert_to_numpy(g)).all()]
    assert not bad, f"NaN gradient for {bad}"
    zero = [w.path for w, g in zip(model.trainable_weights, grads)
            if not np.any(keras.ops.convert_to_numpy(g))]
    assert not zero, f"all-zero gradient for {zero}"


def test_pyramid_strides():
    for preset in ("mobilevitv2_050", "swinv2_cpu_window8_256"):
        pyramid = models.build_backbone(preset, SIZE)(np.zeros((1, SIZE, SIZE, 3), np.float32))
        assert [pyramid[f"P{i}"].shape[1] for i in (2, 3, 4, 5)] == [16, 8, 4, 2], preset


def test_patch_unfold_fold_round_trip():
    x = np.random.default_rng(1).normal(size=(2, 8, 6, 3)).astype(np.float32)
    tokens = keras.ops.convert_to_numpy(PatchUnfold(2)(x))
    assert tokens.shape == (2, 4, 12, 3)
    # token (pixel j of the patch, patch n): pixel (1, 0) of patch (row 1, col 2) ...
    np.testing.assert_array_equal(tokens[:, 2, 1 * 3 + 2], x[:, 3, 4])
    back = keras.ops.convert_to_numpy(PatchFold(2, 8, 6)(tokens))
    np.testing.assert_array_equal(back, x)


def test_instance_norm_and_fixed_pointwise():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(2, 5, 5, 4)).astype(np.float32)
    y = keras.ops.convert_to_numpy(InstanceNormalization()(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1.0, atol=1e-3)
    matrix, bias = TINY_SCHEME.edge_to_point()
    edges = x[..., :2]
    got = keras.ops.convert_to_numpy(FixedPointwise(matrix, bias)(edges))
    np.testing.assert_allclose(got, edges @ matrix + bias, rtol=1e-6)


def test_sample_norm_is_per_sample_and_scale_free():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, size=(3, 4, 6, 5)).astype(np.float32) * [[[[1.0]]], [[[50.0]]],
                                                                      [[[0.1]]]]
    layer = SampleNormalization()
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y.reshape(3, -1).mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.reshape(3, -1).std(axis=1), 1.0, atol=1e-2)
    # A sample scaled by 1000 comes out the same (BatchNorm would pass the 1000 on).
    y_big = keras.ops.convert_to_numpy(layer(x * 1000.0))
    np.testing.assert_allclose(y_big, y, atol=5e-3)  # only epsilon differs
    layer.gamma.assign(np.arange(1, 6, dtype=np.float32))
    layer.beta.assign(np.full(5, 0.5, np.float32))
    z = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(z, y * np.arange(1, 6) + 0.5, rtol=1e-4, atol=1e-4)


def test_presets_and_errors():
    names = models.list_presets()
    for name in ("swinv2_base_window16_256", "swinv2_tiny_window8_256",
                 "swinv2_cpu_window8_256", "mobilevitv2_050", "mobilevitv2_200",
                 "mobilevitv2_100_gn"):
        assert name in names and name in models.PRESETS
    with pytest.raises(ValueError, match="unknown model preset"):
        models.LandmarkDetector(preset="resnet50", image_size=SIZE)
    with pytest.raises(ValueError, match="multiple of 64"):
        models.LandmarkDetector(preset="mobilevitv2_050", image_size=96)
    with pytest.raises(ValueError, match="token_norm"):
        models.MobileViTV2Backbone(image_size=SIZE, token_norm="layer")


@pytest.mark.slow
def test_paper_preset_sizes():
    def backbone_params(preset):
        model = models.LandmarkDetector(preset=preset, image_size=256, scheme="300w_68")
        return model.backbone.count_params(), model

    swin, teacher = backbone_params("swinv2_base_window16_256")
    assert 86e6 < swin < 88.5e6, swin  # SwinV2-B: 87.9 M with its 1000-class head
    assert teacher.output["fused"].shape[1:] == (64, 64, 68)
    mvit, student = backbone_params("mobilevitv2_050")
    trainable = sum(int(np.prod(w.shape)) for w in student.backbone.trainable_weights)
    assert 1.05e6 < trainable < 1.2e6, trainable  # MobileViT-v2-0.5: 1.37 M - 0.26 M head
    assert student.output["fused"].shape[1:] == (64, 64, 68)


def test_split_attention_is_the_same_function_with_two_projections(tmp_path):
    from fld.export.split_attention import split_attention

    keras.utils.set_random_seed(3)
    fused = models.LandmarkDetector(preset="mobilevitv2_050", image_size=64, scheme="300w_68")
    for layer in fused.backbone.layers:   # non-trivial biases, so a wrong slice shows
        if layer.name.endswith("_qkv"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(0).normal(size=bias.shape)])
    split = split_attention(fused)
    names = [layer.name for layer in split.backbone.layers]
    assert split.backbone.attention_form == "split" and split.count_params() == fused.count_params()
    assert not any(n.endswith("_qkv") for n in names)
    assert sum(n.endswith("_qk") for n in names) == sum(n.endswith("_v") for n in names) == 9
    assert split.backbone.get_layer("layer3_mvit_attn0_v").activation.__name__ == "relu"
    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    want, got = fused(images), split(images)
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), atol=1e-5)
    assert split_attention(split) is split                        # already split: unchanged
    path = str(tmp_path / "split.keras")                          # its config round-trips
    split.save(path)
    assert keras.saving.load_model(path).backbone.attention_form == "split"
    with pytest.raises(ValueError, match="attention_form must be one of"):
        models.LandmarkDetector(preset="mobilevitv2_050", image_size=64, attention_form="x")
    with pytest.raises(ValueError, match="MobileViT-v2 presets"):
        models.LandmarkDetector(preset="swinv2_cpu_window8_256", image_size=64,
                                attention_form="split")
