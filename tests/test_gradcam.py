"""Grad-CAM on a tiny random-weight model: shape, range, constant input, and that it follows the evidence."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.infer import gradcam
from pneumo.model.backends import make_cam_function
from pneumo.model.build import HeadConfig, build_full_model, build_head_model
from pneumo.preprocess import to_model_input

SIZE = 64


@pytest.fixture(scope="module")
def cam():
    """A model whose logit grows with every pooled feature, so image evidence is positive evidence."""
    head = build_head_model(HeadConfig(pooling="gap"))  # log1p -> BN (identity as built) -> Dense
    head.get_layer("logit").set_weights([np.ones((512, 1), np.float32), np.zeros(1, np.float32)])
    return make_cam_function(build_full_model("random", head, SIZE), SIZE)


def blob(side: str) -> np.ndarray:
    img = np.full((SIZE, SIZE), 40, np.uint8)
    cx = 14 if side == "left" else SIZE - 14
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img[(xx - cx) ** 2 + (yy - SIZE // 2) ** 2 < 100] = 255
    return img


def run(cam, gray, positive=True):
    _, _, activations, gradients = cam(to_model_input(gray, SIZE)[None])
    return gradcam.heatmap(activations.numpy()[0], gradients.numpy()[0], positive)


def centre_x(heat: np.ndarray) -> float:
    return float((heat.sum(axis=0) * np.arange(heat.shape[1])).sum() / (heat.sum() + 1e-7) / (heat.shape[1] - 1))


def test_heatmap_shape_and_range(cam):
    heat = run(cam, blob("left"))
    assert heat.shape == (SIZE // 16, SIZE // 16) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0, abs=1e-5)


def test_constant_image_gives_finite_heatmap(cam):
    for value in (0, 128, 255):
        heat = run(cam, np.full((SIZE, SIZE), value, np.uint8))
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


def test_heatmap_follows_the_evidence(cam):
    left, right = run(cam, blob("left")), run(cam, blob("right"))
    assert centre_x(left) < 0.5 < centre_x(right)
    hottest_column = lambda heat: np.unravel_index(heat.argmax(), heat.shape)[1]
    assert hottest_column(left) < left.shape[1] / 2 <= hottest_column(right)


def test_negative_class_uses_negated_gradients():
    activations = np.ones((2, 2, 3), np.float32)
    gradients = np.zeros((2, 2, 3), np.float32)
    gradients[..., 0] = 1.0
    assert gradcam.heatmap(activations, gradients, True).max() == pytest.approx(1.0)
    assert gradcam.heatmap(activations, gradients, False).max() == 0.0  # evidence against "normal" is clipped


def test_overlay_keeps_the_original_size_and_cold_pixels():
    gray = np.tile(np.arange(300, dtype=np.uint8)[None, :200], (120, 1))
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = gradcam.overlay(gray, heat, opacity=0.6, margin=0.0)
    assert out.shape == (120, 200, 3) and out.dtype == np.uint8
    assert np.array_equal(out[-1, -1], [gray[-1, -1]] * 3), "cold regions show the X-ray unchanged"
    assert not np.array_equal(out[0, 0], [gray[0, 0]] * 3)
    assert np.array_equal(gradcam.overlay(gray, heat, opacity=0.0), np.repeat(gray[..., None], 3, -1))
    framed = gradcam.overlay(gray, heat, opacity=0.6)  # default: the cropped margin the model never saw
    assert np.array_equal(framed[:10, :18], np.repeat(gray[:10, :18, None], 3, -1))
    assert not np.array_equal(framed[14, 22], [gray[14, 22]] * 3), "hot cell drawn just inside the margin"
    with pytest.raises(ValueError, match="opacity"):
        gradcam.overlay(gray, heat, 1.5)


def test_cam_function_is_traced_once(cam):
    for batch in (1, 2, 1, 3):
        cam(np.zeros((batch, SIZE, SIZE, 3), np.float32))
    assert cam.experimental_get_tracing_count() == 1


def test_backends_agree_with_the_naive_two_pass_grad_cam(tiny_bundle):
    """ONNX Runtime + closed-form head gradient, the TF tail-only tape, and keras-io's naive recipe
    (model.predict, then a GradientTape over the whole model) give the same numbers."""
    import synth
    import tensorflow as tf

    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image

    onnx, tf_backend = Predictor.load(tiny_bundle, backend="onnx"), Predictor.load(tiny_bundle, backend="tf")
    model = onnx.model
    # keras-io's recipe differentiates the output probability: p(1-p) times the logit's gradient,
    # a positive factor that the heatmap's normalisation removes.
    grad_model = tf.keras.Model(model.input, [model.get_layer("block5_conv3").output, model.output])
    for seed in range(3):
        image = read_image(_png(synth.xray(seed, seed % 2 == 1)), "x.png")
        a, b = onnx.analyze(image), tf_backend.analyze(image)
        x = to_model_input(image, onnx.input_size)[None]
        naive_prob = float(model.predict(x, verbose=0)[0, 0])
        with tf.GradientTape() as tape:
            conv, prob = grad_model(x)
            target = prob[:, 0] if naive_prob >= onnx.threshold else -prob[:, 0]
        grads = tape.gradient(target, conv).numpy()[0]
        naive_heat = gradcam.heatmap(conv.numpy()[0], grads)
        assert abs(a.probability - naive_prob) < 1e-3 and abs(b.probability - naive_prob) < 1e-3
        assert np.abs(a.heatmap - naive_heat).max() < 1e-3 and np.abs(b.heatmap - naive_heat).max() < 1e-3


def _png(pixels):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
