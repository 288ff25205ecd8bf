"""Lung zones (the shipped pooling): block5_conv3 averaged over each lung's upper and lower half apart. NumPy and
Keras draw the same zones and pool alike, nothing outside the lungs reaches the logit or its gradient, the heatmap
is each position's gradient x activation, `--heads K` folds K heads into one whose logit is their mean, and a
bundle trains, loads and runs alike on both backends."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.model.pooling import cell_weights, zone_masks, zone_pool

SIZE = 64  # block5_conv3 4x4, lung map 16x16: the bundle
ZONED = 128  # block5_conv3 8x8, lung map 32x32: each zone at least one position of lung


def two_lung_map(n: int = 2, side: int = 32) -> np.ndarray:
    """Lung probabilities: a lung in each half of the view, the right one taller."""
    lungs = np.zeros((n, side, side), np.float32)
    lungs[:, 1:16, : side // 2] = 0.9
    lungs[:, 1:22, side // 2:] = 0.8
    return lungs


def test_zones_split_each_lung_at_the_row_that_reaches_half_its_area():
    lungs = two_lung_map()
    masks = zone_masks(lungs)
    assert masks.shape == (2, 4, 32, 32)
    assert np.array_equal(masks.sum(axis=1), (lungs >= 0.5).astype(np.float32)), "zones must tile the lung map"
    assert masks.max() == 1.0
    left_upper, left_lower, right_upper, right_lower = (masks[0, z] for z in range(4))
    assert left_upper[:, 16:].max() == 0 and right_upper[:, :16].max() == 0, "one lung per half of the view"
    # left lung: rows 1-15, 16 wide; rows 1-7 hold 112 of 240 and row 8 reaches half: it starts the lower half
    assert (left_upper.sum(), left_lower.sum(), right_upper.sum(), right_lower.sum()) == (112, 128, 160, 176)
    assert np.flatnonzero(left_upper.any(axis=1)).max() < np.flatnonzero(left_lower.any(axis=1)).min()


def test_cell_weights_read_only_the_lungs():
    lungs = np.zeros((1, 16, 16), np.float32)
    lungs[:, :, :8] = 0.9  # the left half is lung
    assert np.array_equal(cell_weights(lungs, (2, 2))[0], [[1, 0], [1, 0]])
    assert np.array_equal(cell_weights(np.zeros_like(lungs), (2, 2))[0], np.ones((2, 2))), "no lungs: every cell"


def test_zone_pooling_reads_each_zone_and_keras_agrees():
    from pneumo.model.layers import LungZonePooling

    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8, 5)).astype(np.float32)
    lungs = np.concatenate([two_lung_map(), np.zeros((1, 32, 32), np.float32)])  # the last: no lungs found
    features, positions = zone_pool(maps, lungs)
    assert features.shape == (3, 20) and np.allclose(positions.sum(axis=(2, 3)), 1.0)
    assert np.allclose(features[2].reshape(4, 5), maps[2].mean(axis=(0, 1))), "no lungs: every position, every zone"
    changed = maps.copy()
    changed[:, 6:] += 100.0  # rows below both lungs (the lung map's rows 24-31)
    assert np.allclose(zone_pool(changed, lungs)[0][:2], features[:2]), "what lies outside the lungs adds nothing"
    random_lungs = rng.random((3, 32, 32)).astype(np.float32)
    for probs in (lungs, random_lungs):
        layer_out = np.asarray(LungZonePooling()([maps, probs[..., None]]))
        assert np.allclose(layer_out, zone_pool(maps, probs)[0], atol=1e-6)


@pytest.fixture(scope="module")
def zone_model():
    from pneumo.model.build import HeadConfig, build_full_model, build_head_model
    from pneumo.model.lung_decoder import build_decoder

    head = build_head_model(HeadConfig())
    bn = head.get_layer("head_bn1")  # zones of different weight, so a wrong zone shows
    bn.set_weights([w + np.random.default_rng(2).random(w.shape).astype(np.float32) for w in bn.get_weights()])
    return build_full_model("random", head, ZONED, decoder=build_decoder())


@pytest.mark.slow
def test_zone_model_reads_block5_conv3_and_survives_cloning_and_saving(zone_model, tmp_path):
    import keras

    from pneumo.model.backends import reads_lung_zones

    assert reads_lung_zones(zone_model) and "block5_pool" not in [layer.name for layer in zone_model.layers]
    assert tuple(zone_model.get_layer("lung_zones").input[0].shape[1:3]) == (8, 8)
    assert tuple(zone_model.get_layer("head_log1p").input.shape) == (None, 2048)
    x = np.random.default_rng(1).uniform(-120, 130, (2, ZONED, ZONED, 3)).astype(np.float32)
    clone = keras.models.clone_model(zone_model)
    clone.set_weights(zone_model.get_weights())
    zone_model.save(tmp_path / "model.keras")
    expected = zone_model.predict(x, verbose=0)
    for other in (clone, keras.models.load_model(tmp_path / "model.keras")):
        assert np.allclose(other.predict(x, verbose=0), expected, atol=1e-5)


def test_zone_heatmap_is_gradient_times_activation_and_cold_outside_the_lungs(zone_model):
    """HiResCAM per zone: summed over zones, each position's own contribution, as autodiff gives it."""
    import tensorflow as tf

    from pneumo.infer.gradcam import heatmap_from_weights
    from pneumo.model.backends import _zones_tail

    tail = _zones_tail(zone_model)
    values = np.random.default_rng(3).random((2, 8, 8, 512))
    lungs = two_lung_map()
    activations = tf.constant(values, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(activations)
        logits, head_input = tail([activations, tf.constant(lungs[..., None])])
    gradient, per_zone = (tape.gradient(logits, t).numpy() for t in (activations, head_input))
    assert np.abs(gradient[:, 6:]).max() == 0.0, "positions outside the lungs reached the logit"
    positions = zone_pool(values.astype(np.float32), lungs)[1]
    for k in range(2):
        for positive in (True, False):
            sign = 1.0 if positive else -1.0
            expected = np.maximum(sign * (gradient[k] * values[k]).sum(axis=-1), 0.0)
            expected /= expected.max() + 1e-7
            found = heatmap_from_weights(values[k].astype(np.float32), per_zone[k].reshape(4, 512), positive,
                                         positions[k])
            assert np.allclose(found, expected, atol=1e-4)


def test_numpy_head_matches_keras(zone_model):
    import keras
    import tensorflow as tf

    from pneumo.model.backends import NumpyHead

    head = keras.Model(zone_model.get_layer("head_log1p").input, zone_model.get_layer("logit").output)
    head_input = tf.constant(np.random.default_rng(4).random((5, 2048)) * 3, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(head_input)
        logits = head(head_input, training=False)
    np_logits, np_grad = NumpyHead(zone_model)(head_input.numpy().astype(np.float64))
    assert np.allclose(np_logits, logits.numpy()[:, 0], atol=1e-4)
    assert np.allclose(np_grad, tape.gradient(logits, head_input).numpy(), atol=1e-5)


def test_folded_heads_give_the_mean_logit():
    import keras

    from pneumo.model.build import HeadConfig, build_head_model
    from pneumo.model.heads import fold_into

    rng = np.random.default_rng(4)
    heads = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        head = build_head_model(HeadConfig(pooling="gap"))
        bn = head.get_layer("head_bn1")
        bn.set_weights([w + rng.random(w.shape).astype(np.float32) for w in bn.get_weights()])
        heads.append(head)
    x = rng.random((5, 512)).astype(np.float32) * 3
    logit = lambda h: keras.Model(h.input, h.get_layer("logit").output).predict(x, verbose=0)[:, 0]  # noqa: E731
    expected = np.mean([logit(h) for h in heads], axis=0)
    fold_into(heads[0], heads)
    assert np.allclose(logit(heads[0]), expected, atol=1e-4)


@pytest.fixture(scope="module")
def zones_bundle(tiny_config_factory, tmp_path_factory):
    """The shipped recipe on tiny data: lung zones, the lung-field head, the population check, 2 heads, 1 view."""
    import synth
    from test_lungs import lung_folder

    from pneumo.train.loop import run

    masks = lung_folder(tmp_path_factory.mktemp("lung_masks_zones"))
    adults = synth.adult_folder(tmp_path_factory.mktemp("adults_zones"))
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / "zones", lung_masks=masks, lung_views=2,
                                 lung_epochs=2, pooling="lung-zones", heads=2, views=1, adult_dirs=(adults,),
                                 population_views=1, input_size=SIZE)
    return run(config, log=lambda *_: None)


@pytest.mark.slow
def test_zones_bundle_runs_alike_on_both_backends(zones_bundle):
    import json

    from test_lungs import two_lungs

    from pneumo.infer.predictor import Predictor
    from pneumo.io import DecodedImage

    config = json.loads((zones_bundle / "config.json").read_text())
    assert config["recipe"]["head"]["pooling"] == "lung-zones" and "--heads 2" in config["command"]
    assert {"lungs.npz", "population.npz", "ood.npz"} <= {p.name for p in zones_bundle.iterdir()}
    assert config["chest_check"]["lung_template"] is True, "with a lung head the chest check reads where lungs lie"
    onnx, tf_backend = (Predictor.load(zones_bundle, backend=b) for b in ("onnx", "tf"))
    image = DecodedImage(two_lungs(96)[0], "PNG")
    a, b = onnx.analyze(image), tf_backend.analyze(image)
    assert a.reads_lungs_only and b.reads_lungs_only
    assert a.probability == pytest.approx(b.probability, abs=1e-4)
    assert a.check_features.shape == (512,), "the checks read the global average, whatever the head reads"
    assert np.allclose(a.check_features, b.check_features, atol=1e-3)
    assert a.heatmap.max() > 0 and np.allclose(a.heatmap, b.heatmap, atol=1e-3)
    assert a.to_json()["heat_in_lungs"] == pytest.approx(b.to_json()["heat_in_lungs"], abs=1e-3)


@pytest.mark.slow
def test_feature_extractors_give_the_global_average_then_the_zones(zones_bundle):
    """Training features: the checks' global average of block5_pool, the zones, then the lung signature the chest
    X-ray check reads, on either backend; the signature is the one serving computes."""
    from pneumo.infer.predictor import Predictor
    from pneumo.model.pooling import lung_signature
    from pneumo.train.features import FeatureExtractor

    predictor = Predictor.load(zones_bundle, backend="onnx")
    batch = np.random.default_rng(5).uniform(-120, 130, (2, SIZE, SIZE, 3)).astype(np.float32)
    onnx, keras_features = (FeatureExtractor(predictor.model, b)(batch) for b in ("onnx", "tf"))
    assert onnx.shape == (2, 512) and np.allclose(onnx, keras_features, atol=1e-3)
    assert np.allclose(onnx, predictor.predict_inputs(batch)[1], atol=1e-4)
    both = [FeatureExtractor(predictor.model, b, decoder=predictor.decoder)(batch) for b in ("onnx", "tf")]
    cells = (SIZE // 16) ** 2  # block5_conv3's grid
    assert both[0].shape == (2, 512 * 5 + cells) and np.allclose(both[0][:, :512], onnx, atol=1e-5)
    assert np.allclose(both[0][:, :512 * 5], both[1][:, :512 * 5], atol=1e-3)
    served = lung_signature(predictor._run(batch).lungs, predictor.grid)
    assert served.shape == (2, cells) and np.array_equal(both[0][:, 512 * 5:], served)
    assert np.abs(both[1][:, 512 * 5:] - served).mean() < 0.05, "TF's lung map may flip a pixel at 0.5, no more"


@pytest.mark.slow
def test_a_zones_bundle_without_its_lung_head_is_refused(zones_bundle, tmp_path):
    import shutil

    from pneumo.infer.predictor import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(zones_bundle, broken, ignore=shutil.ignore_patterns("lungs.npz"))
    with pytest.raises(ValueError, match="pools over the lung zones but has no lungs.npz"):
        Predictor.load(broken)
