"""Lung zones (`--pooling lung-zones`): each lung's upper and lower half pooled apart, over block5_pool, or over
block5_conv3's positions (`lung-zones-14`). NumPy and Keras draw the same zones and pool alike, the heatmap is still
each position's gradient x activation, a bundle trains, loads and runs alike on both backends, and `--heads K` folds K
heads into one whose logit is their mean."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.model.pooling import lung_pool, zone_masks, zone_pool

SIZE = 64  # block5_pool 2x2, block5_conv3 4x4, lung map 16x16: the bundle
ZONED = 128  # block5_pool 4x4, block5_conv3 8x8, lung map 32x32: each zone at least one cell of lung


def two_lung_map(n: int = 2, side: int = 32) -> np.ndarray:
    """Lung probabilities: a lung in each half of the view, the right one taller. The left lung's upper half is
    the top row of block5_pool cells under it, its lower half the second row."""
    lungs = np.zeros((n, side, side), np.float32)
    lungs[:, 1:16, : side // 2] = 0.9
    lungs[:, 1:22, side // 2:] = 0.8
    return lungs


def test_zones_split_each_lung_at_the_row_that_reaches_half_its_area():
    lungs = two_lung_map()
    masks = zone_masks(lungs, 4)
    assert masks.shape == (2, 4, 32, 32)
    assert np.array_equal(masks.sum(axis=1), (lungs >= 0.5).astype(np.float32)), "zones must tile the lung map"
    assert masks.max() == 1.0
    left_upper, left_lower, right_upper, right_lower = (masks[0, z] for z in range(4))
    assert left_upper[:, 16:].max() == 0 and right_upper[:, :16].max() == 0, "one lung per half of the view"
    # left lung: rows 1-15, 16 wide; rows 1-7 hold 112 of 240 and row 8 reaches half: it starts the lower half
    assert (left_upper.sum(), left_lower.sum(), right_upper.sum(), right_lower.sum()) == (112, 128, 160, 176)
    assert np.flatnonzero(left_upper.any(axis=1)).max() < np.flatnonzero(left_lower.any(axis=1)).min()
    assert np.array_equal(zone_masks(lungs, 1)[:, 0], (lungs >= 0.5).astype(np.float32))
    with pytest.raises(ValueError, match="pairs"):
        zone_masks(lungs, 3)


def test_zone_pooling_reads_each_zone_and_keras_agrees():
    from pneumo.model.layers import LungPooling

    rng = np.random.default_rng(0)
    maps = rng.random((3, 4, 4, 5)).astype(np.float32)
    lungs = np.concatenate([two_lung_map(), np.zeros((1, 32, 32), np.float32)])  # the last: no lungs found
    features, cells = zone_pool(maps, lungs, 4)
    assert features.shape == (3, 20) and np.allclose(cells.sum(axis=(2, 3)), 1.0)
    assert np.allclose(features[0, :5], maps[0, 0, :2].mean(axis=0)), "left upper half: the top-left two cells"
    assert np.allclose(features[0, 5:10], maps[0, 1, :2].mean(axis=0)), "left lower half: the two under them"
    assert np.allclose(features[2].reshape(4, 5), maps[2].mean(axis=(0, 1))), "no lungs: every cell, every zone"
    random_lungs = rng.random((3, 32, 32)).astype(np.float32)
    for zones in (2, 4, 6):
        for probs in (lungs, random_lungs):
            layer_out = np.asarray(LungPooling(zones=zones)([maps, probs[..., None]]))
            assert np.allclose(layer_out, zone_pool(maps, probs, zones)[0], atol=1e-6)
    assert np.allclose(np.asarray(LungPooling()([maps, lungs[..., None]])), lung_pool(maps, lungs), atol=1e-6)


@pytest.fixture(scope="module", params=["lung-zones", "lung-zones-14"])
def zone_model(request):
    from pneumo.model.build import HeadConfig, build_full_model, build_head_model
    from pneumo.model.lung_decoder import build_decoder

    head = build_head_model(HeadConfig(kind="linear", pooling=request.param))
    fine = request.param.endswith("14")
    return build_full_model("random", head, ZONED, lungs=build_decoder(), fine=fine), fine


def test_zone_model_reads_2048_features_and_survives_saving(zone_model, tmp_path):
    import keras

    from pneumo.model.backends import lung_fine

    zone_model, fine = zone_model
    assert zone_model.get_layer("lung_pool").zones == 4 and lung_fine(zone_model) == fine
    assert ("block5_pool" in [layer.name for layer in zone_model.layers]) != fine, "14x14 reads block5_conv3 itself"
    maps = zone_model.get_layer("lung_pool").input[0]
    assert tuple(maps.shape[1:3]) == ((8, 8) if fine else (4, 4))
    assert tuple(zone_model.get_layer("head_log1p").input.shape) == (None, 2048)
    x = np.random.default_rng(1).uniform(-120, 130, (2, ZONED, ZONED, 3)).astype(np.float32)
    zone_model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.get_layer("lung_pool").zones == 4
    assert np.allclose(loaded.predict(x, verbose=0), zone_model.predict(x, verbose=0), atol=1e-5)


def test_zone_heatmap_is_gradient_times_activation(zone_model):
    """HiResCAM per zone: summed over zones, each position's own contribution, as autodiff gives it."""
    import tensorflow as tf

    from pneumo.infer.gradcam import heatmap_from_weights
    from pneumo.model.backends import _lung_tail, lung_pool_inputs

    zone_model, fine = zone_model
    bn = zone_model.get_layer("head_bn1")  # zones of different weight, so a wrong zone shows
    bn.set_weights([w + np.random.default_rng(2).random(w.shape).astype(np.float32) for w in bn.get_weights()])
    tail = _lung_tail(zone_model)
    values = np.random.default_rng(3).random((2, 8, 8, 512))
    lungs = two_lung_map()
    activations = tf.constant(values, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(activations)
        logits, pooled = tail([activations, tf.constant(lungs[..., None])])
    gradient, per_zone = (tape.gradient(logits, t).numpy() for t in (activations, pooled))
    positions = lung_pool_inputs(values.astype(np.float32), lungs, 4, fine)[1]
    for k in range(2):
        for positive in (True, False):
            sign = 1.0 if positive else -1.0
            expected = np.maximum(sign * (gradient[k] * values[k]).sum(axis=-1), 0.0)
            expected /= expected.max() + 1e-7
            found = heatmap_from_weights(values[k].astype(np.float32), per_zone[k].reshape(4, 512), positive,
                                         positions[k], routed=not fine)
            assert np.allclose(found, expected, atol=1e-4)


def test_folded_heads_give_the_mean_logit():
    import keras

    from pneumo.model.build import HeadConfig, build_head_model
    from pneumo.train.heads import fold_into

    rng = np.random.default_rng(4)
    heads = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        head = build_head_model(HeadConfig(kind="linear"), feature_dim=6)
        bn = head.get_layer("head_bn1")
        bn.set_weights([w + rng.random(w.shape).astype(np.float32) for w in bn.get_weights()])
        heads.append(head)
    x = rng.random((5, 6)).astype(np.float32) * 3
    logit = lambda h: keras.Model(h.input, h.get_layer("logit").output).predict(x, verbose=0)[:, 0]
    expected = np.mean([logit(h) for h in heads], axis=0)
    fold_into(heads[0], heads)
    assert np.allclose(logit(heads[0]), expected, atol=1e-4)


@pytest.fixture(scope="module", params=["lung-zones", "lung-zones-14"])
def zones_bundle(request, tiny_config_factory, tmp_path_factory):
    from pneumo.train.loop import run

    from test_lungs import lung_folder

    masks = lung_folder(tmp_path_factory.mktemp("lung_masks_zones"))
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / request.param, lung_masks=masks, lung_views=2,
                                 lung_epochs=2, pooling=request.param, head_kind="linear", weight_decay=0.01,
                                 heads=2, input_size=SIZE)
    return run(config, log=lambda *_: None), request.param


def test_zones_bundle_runs_alike_on_both_backends(zones_bundle):
    import json

    from pneumo.infer.predictor import Predictor
    from pneumo.io import DecodedImage

    from test_lungs import two_lungs

    zones_bundle, pooling = zones_bundle
    config = json.loads((zones_bundle / "config.json").read_text())
    assert config["recipe"]["head"]["pooling"] == pooling and "--heads 2" in config["command"]
    onnx, tf_backend = (Predictor.load(zones_bundle, backend=b) for b in ("onnx", "tf"))
    image = DecodedImage(two_lungs(96)[0], "PNG")
    a, b = onnx.analyze(image), tf_backend.analyze(image)
    assert a.probability == pytest.approx(b.probability, abs=1e-4)
    assert a.pooled.shape == (512,) and np.allclose(a.pooled, b.pooled, atol=1e-3)
    assert a.heatmap.max() > 0 and np.allclose(a.heatmap, b.heatmap, atol=1e-3)
    assert a.to_json()["heat_in_lungs"] == pytest.approx(b.to_json()["heat_in_lungs"], abs=1e-3)


def test_heads_need_a_linear_head(tiny_config_factory, tmp_path):
    config = tiny_config_factory(tmp_path / "out", heads=3)
    with pytest.raises(ValueError, match="--heads 3 needs --head linear"):
        config.validate()
