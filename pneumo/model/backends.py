"""Running the model: one callable per backend, so nothing downstream branches on which one runs.

Both backends run the trunk (image -> block5_conv3) once per image and get the logit and the Grad-CAM
channel weights from the same activations:
- "onnx": VGG16's convolutional trunk (and the lung decoder) as an ONNX graph written directly from the
  Keras layers' weights (pneumo.model.onnx_graph), run by ONNX Runtime, and the head in closed form in
  NumPy, gradient included;
- "tf": the Keras model, with a GradientTape over the tail only (pool + head), not through VGG16.
They agree to ~1e-6 (tests/test_gradcam.py); their speed is compared by `python -m tools.bench`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..config import BACKEND_ENV, CAM_LAYER, IMG_SIZE, backend_env
from .build import split_after
from .int8 import Int8Ranges
from .lung_decoder import SKIP_LAYERS
from .onnx_graph import OnnxTrunk, trunk_to_onnx
from .pooling import GAP, ZONES, ZONES_LAYER, lung_signature, zone_pool, zone_positions

# Keras/TensorFlow are imported inside the functions that need them (4.3-4.5 s: `python -c 'import keras'`): the
# served ONNX Runtime path never does.

BACKENDS = ("onnx", "tf")


def default_backend() -> str:
    """PNEUMO_BACKEND if set, else ONNX Runtime when installed, else TensorFlow."""
    choice = backend_env()
    if choice:
        if choice not in BACKENDS:
            raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS}, got '{choice}'.")
        return choice
    try:
        import onnxruntime  # noqa: F401

        return "onnx"
    except ImportError:
        return "tf"


class Run(NamedTuple):
    """What one forward pass gives for a batch of n images."""
    probs: np.ndarray  # (n,) probability of pneumonia
    check_features: np.ndarray  # (n, 512) global average of block5_pool: what the two checks read
    activations: np.ndarray  # (n, h, w, 512) block5_conv3
    weights: np.ndarray  # Grad-CAM channel weights, mean d logit / d activations: (n, 512), by zone (n, ZONES, 512)
    lungs: np.ndarray | None  # (n, 4h, 4w) lung-field probability in the model's view, without a decoder None
    positions: np.ndarray | None = None  # (n, ZONES, h, w) each position's weight in its zone; None: GAP


def reads_lung_zones(full_model) -> bool:
    """Whether the model pools block5_conv3 over the lung zones (else: global average of block5_pool)."""
    return any(layer.name == ZONES_LAYER for layer in full_model.layers)


def make_runner(full_model, backend: str | None = None, decoder=None, int8: Int8Ranges | None = None):
    """A callable: preprocessed images (n, size, size, 3) -> Run. `decoder`: the lung-field head, if any.
    `int8`: the bundle's int8 ranges; ONNX Runtime then runs the int8 trunk, and TensorFlow, the float32
    reference the tests compare it with."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'.")
    return OnnxRunner(full_model, decoder, int8) if backend == "onnx" else TfRunner(full_model, decoder)


def make_feature_function(full_model, backend: str | None = None, decoder=None, int8: Int8Ranges | None = None):
    """A callable: preprocessed images -> float32 rows: the global average of block5_pool (512), or with a lung
    `decoder` that, the lung zones' averages and the lung signature side by side (512 + ZONES * 512 + h * w), from
    one pass. With `int8` ranges, from the int8 trunk (ONNX Runtime only: heads are fitted on what serves)."""
    backend = backend or default_backend()
    if int8 is not None and backend != "onnx":
        raise ValueError(f"int8 features come from ONNX Runtime only; backend '{backend}' was asked for.")
    if backend == "onnx":
        trunk = OnnxTrunk(trunk_to_onnx(full_model, decoder=decoder, int8=int8))
        run = lambda batch: trunk(batch, every=True)  # noqa: E731
    else:
        import keras

        names = SKIP_LAYERS if decoder is not None else (CAM_LAYER,)
        skips = [full_model.get_layer(name).output for name in names]
        outputs = [skips[-1], decoder(skips)] if decoder is not None else [skips[-1]]
        run = keras.Model(full_model.input, outputs).predict_on_batch

    def features(batch):
        activations, *lungs = (np.asarray(out, np.float32) for out in _as_list(run(batch)))
        rows = [pool_activations(activations)]
        if lungs:
            rows.append(zone_pool(activations, lungs[0][..., 0])[0])
            rows.append(lung_signature(lungs[0][..., 0], activations.shape[1:3]))
        return np.concatenate(rows, 1)

    return features


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


class OnnxRunner:
    name = "onnx"

    def __init__(self, full_model, decoder=None, int8: Int8Ranges | None = None):
        self.zones = reads_lung_zones(full_model)
        if self.zones and decoder is None:
            raise ValueError("this model pools over the lung zones: it needs its lung decoder.")
        self.trunk = OnnxTrunk(trunk_to_onnx(full_model, decoder=decoder, int8=int8))
        self.head = NumpyHead(full_model)

    def __call__(self, batch: np.ndarray) -> Run:
        activations, *lungs = self.trunk(batch, every=True)
        lungs = lungs[0][..., 0] if lungs else None
        check_features = pool_activations(activations)
        head_input, positions = zone_pool(activations, lungs) if self.zones else (check_features, None)
        logits, gradient = self.head(head_input)
        # The pooling weights sum to one (each zone's; with GAP each 2x2 max-pool window passes its gradient to
        # exactly one activation), so the mean gradient per channel, Grad-CAM's weight, is d logit / d head input
        # / (h * w): no backward pass.
        weights = gradient / (activations.shape[1] * activations.shape[2])
        if self.zones:  # zone after zone, as the pooling concatenates them
            weights = weights.reshape(len(weights), ZONES, -1)
        return Run(sigmoid(logits), check_features, activations, weights, lungs, positions)


class TfRunner:
    name = "tf"

    def __init__(self, full_model, decoder=None):
        self.zones = reads_lung_zones(full_model)
        self.cam = make_cam_function(full_model, int(full_model.input_shape[1]), decoder)
        self.head = NumpyHead(full_model) if self.zones else None

    def __call__(self, batch: np.ndarray) -> Run:
        outputs = self.cam(np.asarray(batch, np.float32))
        logits, head_input, activations, gradients, *lungs = (t.numpy() for t in outputs)
        lungs = lungs[0][..., 0] if lungs else None
        if not self.zones:
            return Run(sigmoid(logits), head_input, activations, gradients.mean(axis=(1, 2)), lungs)
        # The mean gradient mixes the zones: each zone's own comes from the head's input.
        weights = self.head(head_input)[1].reshape(len(head_input), ZONES, -1) / np.prod(activations.shape[1:3])
        positions = zone_positions(lungs, activations.shape[1:3])  # the head input came from the tape's pass
        return Run(sigmoid(logits), pool_activations(activations), activations, weights, lungs, positions)


def make_cam_function(full_model, input_size: int = IMG_SIZE, decoder=None):
    """A tf.function: images -> (logits, the head's input, activations, d logit / d activations[, lungs]).

    Traced once: the fixed input signature (any batch size) stops per-call retracing.
    """
    import keras
    import tensorflow as tf

    zones = reads_lung_zones(full_model)
    if zones and decoder is None:
        raise ValueError("this model pools over the lung zones: it needs its lung decoder.")
    tail = _zones_tail(full_model) if zones else split_after(full_model, CAM_LAYER, ("logit", GAP))[1]
    skips = SKIP_LAYERS if decoder is not None else (CAM_LAYER,)
    trunk = keras.Model(full_model.input, [full_model.get_layer(name).output for name in skips])

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)])
    def cam(images):
        features = _as_list(trunk(images, training=False))
        activations = features[-1]  # block5_conv3 is the last skip layer
        lungs = decoder(features, training=False) if decoder is not None else None
        with tf.GradientTape() as tape:
            tape.watch(activations)  # the tape sees only the tail: no gradient through VGG16's 13 convs
            logits, head_input = tail([activations, lungs] if zones else activations, training=False)
        found = (logits[:, 0], head_input, activations, tape.gradient(logits, activations))
        return found + (lungs,) if decoder is not None else found

    return cam


def _zones_tail(full_model):
    """[block5_conv3 activations, lung map] -> [logit, the lung zones' averages]: the model after block5_conv3."""
    import keras

    names = [layer.name for layer in full_model.layers]
    pool = full_model.get_layer(ZONES_LAYER)
    activations = keras.Input(full_model.get_layer(CAM_LAYER).output.shape[1:], name=f"{CAM_LAYER}_out")
    lungs = keras.Input(pool.input[1].shape[1:], name="lungs")
    x = head_input = pool([activations, lungs])
    found = {}
    for layer in full_model.layers[names.index(ZONES_LAYER) + 1:]:  # the head, in order
        x = found[layer.name] = layer(x)
    return keras.Model([activations, lungs], [found["logit"], head_input], name="after_block5_conv3")


def max_pool2(activations: np.ndarray) -> np.ndarray:
    """(n, h, w, c) -> (n, h // 2, w // 2, c): VGG16's 2x2 max-pool (block5_conv3 -> block5_pool)."""
    n, h, w, c = activations.shape
    return activations[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def pool_activations(activations: np.ndarray) -> np.ndarray:
    """(n, h, w, c) block5_conv3 -> (n, c): VGG16's 2x2 max-pool, then global average (what the checks read)."""
    return max_pool2(activations).mean(axis=(1, 2))


def affine_bn(layer) -> tuple[np.ndarray, np.ndarray]:
    """A BatchNormalization layer at inference as (scale, shift): y = x * scale + shift."""
    gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


class NumpyHead:
    """The trained head, log1p -> BN -> Dense(1), as NumPy arrays: logits and d logit / d head input, batched."""

    def __init__(self, model):
        self.scale, self.shift = affine_bn(model.get_layer("head_bn1"))
        kernel, bias = model.get_layer("logit").get_weights()
        self.kernel, self.bias = kernel[:, 0].astype(np.float64), float(bias[0])

    def __call__(self, head_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = (np.log1p(head_input) * self.scale + self.shift) @ self.kernel + self.bias
        return logits, (self.kernel * self.scale) / (1.0 + head_input)
