"""Running the model: one callable per backend, so nothing downstream branches on which one runs.

Both backends run the trunk (image -> block5_conv3) once per image and get the logit and the Grad-CAM
channel weights from the same activations:
- "onnx": VGG16's convolutional trunk (and the lung decoder) as an ONNX graph written directly from the
  Keras layers' weights (pneumo.model.onnx_graph), run by ONNX Runtime, and the head in closed form in
  NumPy, gradient included;
- "tf": the Keras model, with a GradientTape over the tail only (pool + head), not through VGG16.
They agree to ~1e-6 (tests/test_gradcam.py); their speed is compared by `python tools/bench.py`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..config import BACKEND_ENV, CAM_LAYER, IMG_SIZE, backend_env
from .build import split_after
from .lung_decoder import SKIP_LAYERS
from .onnx_graph import OnnxTrunk, trunk_to_onnx
from .pooling import LUNG_POOLED, cell_weights, weighted_average, zone_pool

BACKENDS = ("onnx", "tf")
POOLED = "gap"  # the head's input; any other layer name means that layer's maps (for fine-tuning)


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
    pooled: np.ndarray  # (n, 512) global average of block5_pool: what the two checks read
    activations: np.ndarray  # (n, h, w, 512) block5_conv3
    weights: np.ndarray  # (n, 512) Grad-CAM channel weights: mean d logit / d activations; (n, zones, 512) by zone
    lungs: np.ndarray | None  # (n, 4h, 4w) lung-field probability in the model's view, without a decoder None
    positions: np.ndarray | None = None  # (n, h, w) each position's weight in the pooling, (n, zones, h, w) by
    # zone (--pooling lung-zones); None: all equal (GAP)
    routed: bool = True  # the pooling reads block5_pool, whose max-pool routes each window's gradient to one
    # position; False: it reads block5_conv3 itself (--pooling lung-zones-14)


def lung_pooled(full_model) -> bool:
    """Whether the model pools block5 over the lung fields only (else: global average)."""
    return any(layer.name == LUNG_POOLED for layer in full_model.layers)


def lung_zones(full_model) -> int:
    """How many zones of the lung map a lung-pooled model averages apart (1: both lungs at once; 0: GAP)."""
    return next((layer.zones for layer in full_model.layers if layer.name == LUNG_POOLED), 0)


def lung_fine(full_model) -> bool:
    """Whether a lung-pooled model pools block5_conv3 itself (--pooling lung-zones-14), not block5_pool."""
    if not lung_pooled(full_model):
        return False
    maps = full_model.get_layer(LUNG_POOLED).input[0]
    return maps.shape[1] == full_model.get_layer(CAM_LAYER).output.shape[1]


def lung_pool_inputs(activations: np.ndarray, lungs: np.ndarray, zones: int = 1,
                     fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(head input, position weights) of a lung-pooled model, from block5_conv3 and the lung map.

    Each block5_pool cell is weighted by its share of lung (of each zone's lung, zone by zone: weights
    (n, zones, 2h, 2w), each zone's summing to 1); its 2x2 block5_conv3 positions share its weight, which is
    what the gradient reaching them is proportional to. `fine`: each block5_conv3 position is weighted by its
    own share, zone by zone, and no max-pool comes first."""
    if fine:
        return zone_pool(activations, lungs, zones)
    maps = max_pool2(activations)
    if zones > 1:
        features, cells = zone_pool(maps, lungs, zones)
        return features, _position_weights(cells)
    cells = cell_weights(lungs, maps.shape[1:3])
    return weighted_average(maps, cells), _position_weights(cells)


def _position_weights(cells: np.ndarray) -> np.ndarray:
    """(..., h, w) block5_pool cell weights -> (..., 2h, 2w): each 2x2 window of block5_conv3 shares its cell's."""
    return cells.repeat(2, axis=-2).repeat(2, axis=-1)


def make_runner(full_model, backend: str | None = None, decoder=None):
    """A callable: preprocessed images (n, size, size, 3) -> Run. `decoder`: the lung-field head, if any."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'.")
    return OnnxRunner(full_model, decoder) if backend == "onnx" else TfRunner(full_model, decoder)


def make_feature_function(full_model, backend: str | None = None, layer: str = POOLED, decoder=None,
                          zones: int = 1, fine: bool = False):
    """A callable: preprocessed images -> pooled features (layer "gap") or the maps of `layer`, float32.

    With a lung `decoder`: (n, 512 * (1 + zones)) rows, global average then lung-masked average(s) of
    block5_pool, one pass."""
    backend = backend or default_backend()
    if decoder is not None:
        return _both_poolings(full_model, backend, decoder, zones, fine)
    if backend == "onnx":
        if layer == POOLED:
            trunk = OnnxTrunk(trunk_to_onnx(full_model))
            return lambda batch: pool_activations(trunk(batch))
        return OnnxTrunk(trunk_to_onnx(full_model, layer))
    import keras

    if layer == POOLED:  # the global average of block5_pool, whatever pooling the model's head reads (a model
        # pooling block5_conv3 has no block5_pool layer: the same max-pool, in NumPy)
        maps = keras.Model(full_model.input, full_model.get_layer(CAM_LAYER).output).predict_on_batch
        return lambda batch: pool_activations(np.asarray(maps(batch)))
    return keras.Model(full_model.input, full_model.get_layer(layer).output).predict_on_batch


def _both_poolings(full_model, backend: str, decoder, zones: int = 1, fine: bool = False):
    if backend == "onnx":
        trunk = OnnxTrunk(trunk_to_onnx(full_model, decoder=decoder))
        run = lambda batch: trunk(batch, every=True)
    else:
        import keras

        skips = [full_model.get_layer(name).output for name in SKIP_LAYERS]
        run = keras.Model(full_model.input, [skips[-1], decoder(skips)]).predict_on_batch

    def features(batch):
        activations, lungs = (np.asarray(out, np.float32) for out in run(batch))
        head_input = lung_pool_inputs(activations, lungs[..., 0], zones, fine)[0]
        return np.concatenate([pool_activations(activations), head_input], 1)

    return features


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


class OnnxRunner:
    name = "onnx"

    def __init__(self, full_model, decoder=None):
        self.lung_pooled, self.zones, self.fine = lung_pooled(full_model), lung_zones(full_model), lung_fine(full_model)
        if self.lung_pooled and decoder is None:
            raise ValueError("this model pools over the lung fields: it needs its lung decoder.")
        self.trunk = OnnxTrunk(trunk_to_onnx(full_model, decoder=decoder))
        self.head = NumpyHead(full_model)

    def __call__(self, batch: np.ndarray) -> Run:
        activations, *lungs = self.trunk(batch, every=True)
        lungs = lungs[0][..., 0] if lungs else None
        pooled = pool_activations(activations)
        head_input, positions = lung_pool_inputs(activations, lungs, self.zones, self.fine) if self.lung_pooled \
            else (pooled, None)
        logits, grad_pooled = self.head(head_input)
        # Each 2x2 max-pool window passes its gradient to exactly one activation (with --pooling lung-zones-14
        # there is no max-pool), and the pooling weights sum to one, so the mean gradient per channel (Grad-CAM's
        # weight) is d logit / d pooled / (h * w), for global and lung-masked pooling alike: no backward pass.
        weights = grad_pooled / (activations.shape[1] * activations.shape[2])
        if self.zones > 1:  # zone after zone, as the pooling concatenates them
            weights = weights.reshape(len(weights), self.zones, -1)
        return Run(sigmoid(logits), pooled, activations, weights, lungs, positions, not self.fine)


class TfRunner:
    name = "tf"

    def __init__(self, full_model, decoder=None):
        self.lung_pooled, self.zones, self.fine = lung_pooled(full_model), lung_zones(full_model), lung_fine(full_model)
        self.cam = make_cam_function(full_model, int(full_model.input_shape[1]), decoder)
        self.head = NumpyHead(full_model) if self.zones > 1 else None

    def __call__(self, batch: np.ndarray) -> Run:
        logits, pooled, activations, gradients, *lungs = (t.numpy() for t in self.cam(np.asarray(batch, np.float32)))
        lungs = lungs[0][..., 0] if lungs else None
        positions, weights = None, gradients.mean(axis=(1, 2))
        if self.lung_pooled:  # the tail's pooled output is the head's input; the checks read the global average
            _, positions = lung_pool_inputs(activations, lungs, self.zones, self.fine)
            if self.zones > 1:  # the mean gradient mixes the zones: each zone's own, from the head's input
                weights = self.head(pooled)[1].reshape(len(pooled), self.zones, -1) / np.prod(activations.shape[1:3])
            pooled = pool_activations(activations)
        return Run(sigmoid(logits), pooled, activations, weights, lungs, positions, not self.fine)


def make_cam_function(full_model, input_size: int = IMG_SIZE, decoder=None):
    """A tf.function: images -> (logits, the head's input, activations, d logit / d activations[, lungs]).

    Traced once: the fixed input signature (any batch size) stops per-call retracing.
    """
    import keras
    import tensorflow as tf

    pooled_by_lungs = lung_pooled(full_model)
    if pooled_by_lungs and decoder is None:
        raise ValueError("this model pools over the lung fields: it needs its lung decoder.")
    tail = _lung_tail(full_model) if pooled_by_lungs else split_after(full_model, CAM_LAYER, ("logit", "gap"))[1]
    skips = SKIP_LAYERS if decoder is not None else (CAM_LAYER,)
    trunk = keras.Model(full_model.input, [full_model.get_layer(name).output for name in skips])

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)])
    def cam(images):
        features = trunk(images, training=False)
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        activations = features[-1]  # block5_conv3 is the last skip layer
        lungs = decoder(features, training=False) if decoder is not None else None
        with tf.GradientTape() as tape:
            tape.watch(activations)  # the tape sees only the tail: no gradient through VGG16's 13 convs
            logits, pooled = tail([activations, lungs] if pooled_by_lungs else activations, training=False)
        found = (logits[:, 0], pooled, activations, tape.gradient(logits, activations))
        return found + (lungs,) if decoder is not None else found

    return cam


def _lung_tail(full_model):
    """[block5_conv3 activations, lung map] -> [logit, lung-pooled features]: a lung-pooled model after block5_conv3."""
    import keras

    names = [layer.name for layer in full_model.layers]
    pool = full_model.get_layer(LUNG_POOLED)
    activations = keras.Input(full_model.get_layer(CAM_LAYER).output.shape[1:], name=f"{CAM_LAYER}_out")
    lungs = keras.Input(pool.input[1].shape[1:], name="lungs")
    maps = activations if lung_fine(full_model) else full_model.get_layer("block5_pool")(activations)
    x = pooled = pool([maps, lungs])
    found = {}
    for layer in full_model.layers[names.index(LUNG_POOLED) + 1:]:  # the head, in order
        x = found[layer.name] = layer(x)
    return keras.Model([activations, lungs], [found["logit"], pooled], name="after_block5_conv3")


# After block5_conv3 the model is max-pool 2x2 -> global average -> BN -> Dense+ReLU -> BN -> Dense.

def max_pool2(activations: np.ndarray) -> np.ndarray:
    """(n, h, w, c) -> (n, h // 2, w // 2, c): VGG16's 2x2 max-pool (block5_conv3 -> block5_pool)."""
    n, h, w, c = activations.shape
    return activations[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def pool_activations(activations: np.ndarray) -> np.ndarray:
    """(n, h, w, c) block5_conv3 -> (n, c): VGG16's 2x2 max-pool, then global average."""
    return max_pool2(activations).mean(axis=(1, 2))


def _affine_bn(layer) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


class NumpyHead:
    """The trained head as NumPy arrays: logits and d logit / d pooled features, batched.

    MLP: BN -> Dense+ReLU -> (Dropout) -> BN -> Dense(1); linear: log1p -> BN -> Dense(1)."""

    def __init__(self, model):
        names = {layer.name for layer in model.layers}
        self.linear = "head_dense" not in names
        self.s1, self.t1 = _affine_bn(model.get_layer("head_bn1"))
        w2, b2 = model.get_layer("logit").get_weights()
        self.w2, self.b2 = w2[:, 0].astype(np.float64), float(b2[0])
        if not self.linear:
            self.w1, self.b1 = (w.astype(np.float64) for w in model.get_layer("head_dense").get_weights())
            self.s2, self.t2 = _affine_bn(model.get_layer("head_bn2"))

    def __call__(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.linear:
            logits = (np.log1p(pooled) * self.s1 + self.t1) @ self.w2 + self.b2
            return logits, (self.w2 * self.s1) / (1.0 + pooled)
        hidden = (pooled * self.s1 + self.t1) @ self.w1 + self.b1
        active = hidden > 0
        logits = (np.maximum(hidden, 0) * self.s2 + self.t2) @ self.w2 + self.b2
        grad_pooled = ((self.w2 * self.s2) * active) @ self.w1.T * self.s1
        return logits, grad_pooled
