"""Lung-masked pooling: NumPy and Keras agree, outside the lungs adds nothing to the logit or its gradient, and a
bundle trained with `--pooling lungs --head linear` loads, runs on both backends alike and says what it is."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.model.pooling import cell_weights, lung_pool

SIZE = 64  # block5_pool 2x2, block5_conv3 4x4, lung map 16x16


def left_lung(n: int = 3, side: int = 16) -> np.ndarray:
    """Lung probabilities: the left half is lung, the right half is not."""
    lungs = np.zeros((n, side, side), np.float32)
    lungs[:, :, : side // 2] = 0.9
    return lungs


def test_cell_weights_and_pooling_read_only_the_lungs():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 2, 2, 5)).astype(np.float32)
    lungs = left_lung()
    assert np.array_equal(cell_weights(lungs, (2, 2))[0], [[1, 0], [1, 0]])
    expected = maps[:, :, 0].mean(axis=1)  # the left column of cells only
    assert np.allclose(lung_pool(maps, lungs), expected)
    changed = maps.copy()
    changed[:, :, 1] += 100.0  # whatever lies outside the lungs
    assert np.allclose(lung_pool(changed, lungs), expected)
    none = np.zeros_like(lungs)  # no lungs found: every cell counts, as global average pooling
    assert np.allclose(lung_pool(maps, none), maps.mean(axis=(1, 2)))


def test_keras_layer_matches_numpy():
    rng = np.random.default_rng(1)
    maps = rng.random((4, 2, 2, 5)).astype(np.float32)
    lungs = rng.random((4, 16, 16)).astype(np.float32)
    lungs[3] = 0.0
    from pneumo.model.layers import LungPooling

    layer_out = np.asarray(LungPooling()([maps, lungs[..., None]]))
    assert np.allclose(layer_out, lung_pool(maps, lungs), atol=1e-6)


@pytest.fixture(scope="module")
def lung_model():
    from pneumo.model.build import HeadConfig, build_full_model, build_head_model
    from pneumo.model.lung_decoder import build_decoder

    head = build_head_model(HeadConfig(kind="linear", pooling="lungs"))
    return build_full_model("random", head, SIZE, lungs=build_decoder())


def test_lung_pooled_model_can_be_cloned_saved_and_loaded(lung_model, tmp_path):
    import keras

    x = np.random.default_rng(6).uniform(-120, 130, (2, SIZE, SIZE, 3)).astype(np.float32)
    clone = keras.models.clone_model(lung_model)
    clone.set_weights(lung_model.get_weights())
    lung_model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    expected = lung_model.predict(x, verbose=0)
    for other in (clone, loaded):
        assert np.allclose(other.predict(x, verbose=0), expected, atol=1e-5)


def test_no_gradient_reaches_block5_outside_the_lungs(lung_model):
    import tensorflow as tf

    from pneumo.model.backends import _lung_tail

    tail = _lung_tail(lung_model)
    activations = tf.constant(np.random.default_rng(2).random((3, 4, 4, 512)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(activations)
        logits, _ = tail([activations, tf.constant(left_lung()[..., None])])
    gradient = tape.gradient(logits, activations).numpy()
    assert np.abs(gradient[:, :, 2:]).max() == 0.0, "positions outside the lungs reached the logit"
    assert np.abs(gradient[:, :, :2]).max() > 0.0


def test_numpy_linear_head_matches_keras(lung_model):
    import keras
    import tensorflow as tf

    from pneumo.model.backends import NumpyHead

    head = keras.Model(lung_model.get_layer("head_log1p").input, lung_model.get_layer("logit").output)
    bn = lung_model.get_layer("head_bn1")
    bn.set_weights([w + np.random.default_rng(3).random(w.shape).astype(np.float32) for w in bn.get_weights()])
    pooled = tf.constant(np.random.default_rng(4).random((5, 512)) * 3, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(pooled)
        logits = head(pooled, training=False)
    np_logits, np_grad = NumpyHead(lung_model)(pooled.numpy().astype(np.float64))
    assert np.allclose(np_logits, logits.numpy()[:, 0], atol=1e-4)
    assert np.allclose(np_grad, tape.gradient(logits, pooled).numpy(), atol=1e-5)


def test_lung_pooling_needs_lung_masks(tiny_config_factory, tmp_path):
    config = tiny_config_factory(tmp_path / "out", pooling="lungs")
    with pytest.raises(ValueError, match="--pooling lungs needs --lung-masks"):
        config.validate()


@pytest.fixture(scope="module")
def pooled_bundle(tiny_config_factory, tmp_path_factory):
    from pneumo.train.loop import run

    from test_lungs import lung_folder

    masks = lung_folder(tmp_path_factory.mktemp("lung_masks_pool"))
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / "pooled", lung_masks=masks, lung_views=2,
                                 lung_epochs=2, pooling="lungs", head_kind="linear", weight_decay=0.01,
                                 input_size=SIZE)
    return run(config, log=lambda *_: None)


def test_lung_pooled_bundle_runs_alike_on_both_backends(pooled_bundle):
    import json

    from pneumo.infer.predictor import Predictor
    from pneumo.io import DecodedImage

    from test_lungs import two_lungs

    config = json.loads((pooled_bundle / "config.json").read_text())
    assert config["recipe"]["head"]["pooling"] == "lungs" and config["recipe"]["head"]["kind"] == "linear"
    assert "--head linear" in config["command"] and "--pooling lungs" in config["command"]
    onnx, tf_backend = (Predictor.load(pooled_bundle, backend=b) for b in ("onnx", "tf"))
    assert onnx.model.get_layer("lung_pool") is not None
    image = DecodedImage(two_lungs(96)[0], "PNG")
    a, b = onnx.analyze(image), tf_backend.analyze(image)
    assert a.probability == pytest.approx(b.probability, abs=1e-4)
    assert np.allclose(a.pooled, b.pooled, atol=1e-3), "the checks must read the same global average"
    assert a.pooled.shape == (512,)
    assert np.allclose(a.heatmap, b.heatmap, atol=1e-3)
    assert a.to_json()["heat_in_lungs"] == pytest.approx(b.to_json()["heat_in_lungs"], abs=1e-3)


def test_feature_extractors_give_the_global_average_of_a_lung_pooled_model(pooled_bundle):
    """Training features and the checks read the global average of block5_pool, on either backend."""
    from pneumo.infer.predictor import Predictor
    from pneumo.train.features import FeatureExtractor

    predictor = Predictor.load(pooled_bundle, backend="onnx")
    batch = np.random.default_rng(5).uniform(-120, 130, (2, SIZE, SIZE, 3)).astype(np.float32)
    onnx, keras_features = (FeatureExtractor(predictor.model, b)(batch) for b in ("onnx", "tf"))
    assert onnx.shape == (2, 512) and np.allclose(onnx, keras_features, atol=1e-3)
    assert np.allclose(onnx, predictor.predict_inputs(batch)[1], atol=1e-4)
    both = FeatureExtractor(predictor.model, "onnx", decoder=predictor.decoder)(batch)
    assert both.shape == (2, 1024) and np.allclose(both[:, :512], onnx, atol=1e-5)


def test_a_lung_pooled_bundle_without_its_lung_head_is_refused(pooled_bundle, tmp_path):
    import shutil

    from pneumo.infer.predictor import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(pooled_bundle, broken, ignore=shutil.ignore_patterns("lungs.npz"))
    with pytest.raises(ValueError, match="pools over the lung fields but has no lungs.npz"):
        Predictor.load(broken)


def test_lung_pooled_heatmap_is_gradient_times_activation(lung_model):
    """HiResCAM: each block5_conv3 position's own contribution, from autodiff through the max-pool and the pooling."""
    import tensorflow as tf

    from pneumo.infer.gradcam import heatmap_from_weights
    from pneumo.model.backends import _lung_tail, _position_weights

    tail = _lung_tail(lung_model)
    values = np.random.default_rng(7).random((3, 4, 4, 512))
    values[:, 1, 1] = values[:, 0, 0] / 2  # never its window's maximum, in any channel
    activations = tf.constant(values, tf.float32)
    lungs = left_lung()
    with tf.GradientTape() as tape:
        tape.watch(activations)
        logits, _ = tail([activations, tf.constant(lungs[..., None])])
    gradient, activations = tape.gradient(logits, activations).numpy(), activations.numpy()
    positions = _position_weights(cell_weights(lungs, (2, 2)))
    for k in range(3):
        for positive in (True, False):
            sign = 1.0 if positive else -1.0
            expected = np.maximum(sign * (gradient[k] * activations[k]).sum(axis=-1), 0.0)
            expected /= expected.max() + 1e-7
            found = heatmap_from_weights(activations[k], gradient[k].mean(axis=(0, 1)), positive, positions[k])
            assert np.allclose(found, expected, atol=1e-4)
            assert found[:, 2:].max() == 0.0, "heat outside the lungs"
            assert found[1, 1] == 0.0, "heat on a position the max-pool never read"
