"""The int8 trunk: weights quantized without 16-bit saturation, the graph ONNX Runtime really runs in integers,
close to the float trunk, rebuilt identically from the stored ranges, and an int8 bundle end to end (training on
its own features, serving, the TF float reference, refusals)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pneumo.model import bundle as bundles
from pneumo.model.build import build_backbone
from pneumo.model.int8 import (
    INT8_FILE,
    WEIGHT_LEVELS,
    Int8Ranges,
    quantized_weights,
)
from pneumo.model.onnx_graph import OnnxTrunk, activation_ranges, conv_names, trunk_to_onnx

SIZE = 64


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("random", SIZE)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (12, SIZE, SIZE, 1)).astype(np.float32)
    return np.repeat(gray, 3, axis=-1) - np.array([103.939, 116.779, 123.68], np.float32)  # caffe-like


@pytest.fixture(scope="module")
def ranges(backbone, images):
    return activation_ranges(backbone, images[:8])


def test_weights_use_seven_bits_and_round_to_the_nearest_level():
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.05, (8, 4, 3, 3)).astype(np.float32)
    kernel[3] = 0  # a dead channel must not divide by zero
    bias = rng.normal(0, 0.1, 8).astype(np.float32)
    q_kernel, scales, q_bias, bias_scales = quantized_weights(kernel, bias, input_scale=0.5)
    assert q_kernel.dtype == np.int8 and np.abs(q_kernel).max() == WEIGHT_LEVELS == 64
    assert 255 * WEIGHT_LEVELS * 2 <= 32767, "a pair of uint8 x int8 products must fit a signed 16-bit sum"
    error = np.abs(q_kernel * scales[:, None, None, None] - kernel)
    assert np.all(error <= scales[:, None, None, None] / 2 + 1e-7)
    assert np.all(q_kernel[3] == 0) and scales[3] == 1.0
    np.testing.assert_allclose(bias_scales, 0.5 * scales, rtol=1e-6)
    assert q_bias.dtype == np.int32 and np.all(np.abs(q_bias * bias_scales - bias) <= bias_scales / 2 + 1e-7)


def test_calibration_records_every_convolution(backbone, ranges):
    assert list(ranges.maxima) == conv_names(backbone) and len(ranges.maxima) == 13
    assert all(value > 0 for value in ranges.maxima.values())
    assert ranges.images == 8


def test_onnx_runtime_runs_the_convolutions_in_integers(backbone, ranges, tmp_path):
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(trunk_to_onnx(backbone, int8=ranges), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]
    # the first convolution reads float pixels; the other twelve are fused QDQ groups
    assert ops.count("QLinearConv") == 12 and ops.count("Conv") == 1


def test_int8_activations_follow_the_float_ones(backbone, ranges, images):
    exact = OnnxTrunk(trunk_to_onnx(backbone))(images[8:])
    quantized = OnnxTrunk(trunk_to_onnx(backbone, int8=ranges))(images[8:])
    assert quantized.shape == exact.shape and quantized.dtype == np.float32
    relative = np.abs(quantized - exact).mean() / np.abs(exact).mean()
    assert 0 < relative < 0.1, f"int8 activations {relative:.3f} away from float on average"
    pooled = np.corrcoef(exact.mean(axis=(1, 2)).ravel(), quantized.mean(axis=(1, 2)).ravel())[0, 1]
    assert pooled > 0.99


def test_graph_is_rebuilt_identically_from_the_stored_ranges(backbone, ranges, tmp_path):
    ranges.save(tmp_path / INT8_FILE)
    loaded = Int8Ranges.load(tmp_path / INT8_FILE)
    assert loaded.fingerprint() == ranges.fingerprint()
    assert trunk_to_onnx(backbone, int8=loaded) == trunk_to_onnx(backbone, int8=ranges)
    other = Int8Ranges({**ranges.maxima, "block5_conv3": ranges.maxima["block5_conv3"] * 2}, ranges.images)
    assert other.fingerprint() != ranges.fingerprint(), "other ranges must not share cached features"


def test_ranges_of_another_version_are_refused(tmp_path):
    np.savez(tmp_path / INT8_FILE, version=99, names=np.array(["block1_conv1"]), maxima=np.ones(1), images=1)
    with pytest.raises(ValueError, match="version 99"):
        Int8Ranges.load(tmp_path / INT8_FILE)


def test_missing_range_is_named():
    with pytest.raises(ValueError, match="block2_conv1"):
        Int8Ranges({"block1_conv1": 1.0}, 1).scale("block2_conv1")


@pytest.fixture(scope="module")
def int8_bundle(tiny_config_factory, tmp_path_factory):
    from pneumo.train.loop import run

    return run(tiny_config_factory(tmp_path_factory.mktemp("int8") / "bundle", precision="int8"),
               log=lambda *_: None)


def test_int8_bundle_records_its_precision_and_ranges(int8_bundle):
    config = json.loads((int8_bundle / "config.json").read_text())
    assert config["precision"] == "int8" and config["recipe"]["precision"] == "int8"
    assert config["int8"]["file"] == INT8_FILE and config["int8"]["weight_levels"] == WEIGHT_LEVELS
    stored = Int8Ranges.load(int8_bundle / INT8_FILE)
    assert stored.fingerprint() == config["int8"]["fingerprint"]
    assert "--precision" not in config["command"]  # int8 is train.py's default: the shipped recipe


def test_the_float_trunk_is_an_option_the_command_names(tiny_bundle):
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config["precision"] == "fp32" and "--precision fp32" in config["command"]


def test_int8_bundle_serves_int8_and_tf_is_the_float_reference(int8_bundle, tiny_data):
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image

    paths = sorted((tiny_data / "test").rglob("*.jpeg"))
    images = [read_image(p) for p in paths]
    served = Predictor.load(int8_bundle, backend="onnx")
    reference = Predictor.load(int8_bundle, backend="tf")
    assert served.backend == "onnx" and reference.backend == "tf"
    int8 = np.array([served.analyze(image).probability for image in images])
    fp32 = np.array([reference.analyze(image).probability for image in images])
    # apart (the trunks differ), but the int8 trunk is a close copy of the float one
    assert np.abs(int8 - fp32).max() < 0.1
    assert not np.allclose(int8, fp32, atol=1e-6), "the ONNX path must run the int8 trunk, not the float one"
    assert served.analyze(images[0]).heatmap is not None


@pytest.mark.slow
def test_features_are_cached_per_precision(tiny_config_factory, int8_bundle, tmp_path):
    from pneumo.train.features import trunk_fingerprint

    ranges = Int8Ranges.load(int8_bundle / INT8_FILE)
    assert trunk_fingerprint("random") == "vgg16-random"
    assert trunk_fingerprint("random", ranges) == f"vgg16-random-int8-{ranges.fingerprint()}"


def test_int8_bundle_without_its_ranges_is_refused(int8_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(int8_bundle, broken)
    (broken / INT8_FILE).unlink()
    with pytest.raises(ValueError, match="without int8.npz"):
        bundles.load_int8_ranges(bundles.load_bundle(broken))


def test_int8_features_need_onnx_runtime(backbone, ranges):
    from pneumo.model.backends import make_feature_function

    with pytest.raises(ValueError, match="ONNX Runtime only"):
        make_feature_function(backbone, "tf", int8=ranges)


@pytest.mark.slow
def test_precision_is_checked_up_front(tiny_config_factory, tmp_path):
    config = tiny_config_factory(tmp_path / "out", precision="int4")
    with pytest.raises(ValueError, match=r"--precision must be one of \('fp32', 'int8'\), got 'int4'"):
        config.validate()
