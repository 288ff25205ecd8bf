"""Grad-CAM (Selvaraju et al. 2017) for the sigmoid head, as small pure functions.

`split_at_cam_layer` cuts the flat model at `block5_conv3` into a trunk and a
tail; `make_cam_function` runs both in one forward pass and differentiates the
logit only through the tail (pool + head), which is cheap. `heatmap` and
`overlay` are NumPy/OpenCV functions with no I/O.
"""

from __future__ import annotations

import cv2
import numpy as np

from .constants import CAM_LAYER, IMG_SIZE

EPS = 1e-7


def split_at_cam_layer(full_model, layer_name: str = CAM_LAYER):
    """(trunk: image -> CAM activations, tail: activations -> (logit, pooled features)).

    Both reuse the full model's layers (shared weights). The model is a chain,
    so the tail is the layers after `layer_name` applied in order.
    """
    import keras

    cam_layer = full_model.get_layer(layer_name)
    trunk = keras.Model(full_model.input, cam_layer.output, name="cam_trunk")
    names = [layer.name for layer in full_model.layers]
    x = inputs = keras.Input(cam_layer.output.shape[1:], name="cam_activations")
    pooled = logit = None
    for layer in full_model.layers[names.index(layer_name) + 1:]:
        x = layer(x)
        if layer.name == "gap":
            pooled = x
        if layer.name == "logit":
            logit = x
    if pooled is None or logit is None:
        raise ValueError("the model needs layers named 'gap' and 'logit' after the CAM layer.")
    return trunk, keras.Model(inputs, [logit, pooled], name="cam_tail")


def make_cam_function(trunk, tail, input_size: int = IMG_SIZE):
    """A tf.function: images -> (logits, pooled features, activations, d logit / d activations).

    Traced once: the fixed input signature (any batch size) stops per-call retracing.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)])
    def cam(images):
        activations = trunk(images, training=False)
        with tf.GradientTape() as tape:
            tape.watch(activations)  # the tape sees only the tail: no gradient through VGG16's 13 convs
            logits, pooled = tail(activations, training=False)
        return logits[:, 0], pooled, activations, tape.gradient(logits, activations)

    return cam


def heatmap(activations: np.ndarray, gradients: np.ndarray, positive: bool = True) -> np.ndarray:
    """Grad-CAM map in [0, 1] for one image, (h, w) at the activation's resolution.

    `gradients` are d logit / d activations. For the positive class (pneumonia)
    the evidence is the logit; for the negative class (normal) it is -logit.
    """
    sign = 1.0 if positive else -1.0
    weights = sign * gradients.mean(axis=(0, 1))  # one weight per channel
    cam = np.maximum((activations * weights).sum(axis=-1), 0.0)
    return (cam / (cam.max() + EPS)).astype(np.float32)


def overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.5,
            colormap: int = cv2.COLORMAP_INFERNO) -> np.ndarray:
    """RGB uint8 at the image's own size and aspect: the heatmap blended over the X-ray.

    Blending is weighted by the heat itself, so cold regions show the X-ray
    unchanged and only the regions that drove the score are coloured.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    height, width = gray.shape[:2]
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if gray.ndim == 2 else gray
    heat_full = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    heat_full = np.clip(heat_full, 0.0, 1.0)
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(heat_full * 255), colormap), cv2.COLOR_BGR2RGB)
    alpha = (opacity * heat_full)[..., None]
    return np.uint8(base * (1.0 - alpha) + colours * alpha + 0.5)
