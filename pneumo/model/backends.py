"""Running the model: one callable per backend, so nothing downstream branches on which one runs.

Both backends run the trunk (image -> block5_conv3) once per image and get the logit and the Grad-CAM
channel weights from the same activations:
- "onnx": VGG16's convolutional trunk as an ONNX graph written directly from the Keras layers' weights
  (13 3x3 convolutions with ReLU and 4 max-pools: no converter package), run by ONNX Runtime, and the head
  in closed form in NumPy, gradient included;
- "tf": the Keras model, with a GradientTape over the tail only (pool + head), not through VGG16.
They agree to ~1e-6 (tests/test_gradcam.py); their speed is compared by `python tools/bench.py`.
"""

from __future__ import annotations

import numpy as np

from ..config import BACKEND_ENV, CAM_LAYER, IMG_SIZE, backend_env
from .build import split_after

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


def make_runner(full_model, backend: str | None = None):
    """A callable: preprocessed images (n, size, size, 3) -> (probabilities, pooled, activations, cam weights)."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'.")
    return OnnxRunner(full_model) if backend == "onnx" else TfRunner(full_model)


def make_feature_function(full_model, backend: str | None = None, layer: str = POOLED):
    """A callable: preprocessed images -> pooled features (layer "gap") or the maps of `layer`, float32."""
    backend = backend or default_backend()
    if backend == "onnx":
        if layer == POOLED:
            trunk = OnnxTrunk(trunk_to_onnx(full_model))
            return lambda batch: pool_activations(trunk(batch))
        return OnnxTrunk(trunk_to_onnx(full_model, layer))
    import keras

    return keras.Model(full_model.input, full_model.get_layer(layer).output).predict_on_batch


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


class OnnxRunner:
    name = "onnx"

    def __init__(self, full_model):
        self.trunk = OnnxTrunk(trunk_to_onnx(full_model))
        self.head = NumpyHead(full_model)

    def __call__(self, batch: np.ndarray):
        activations = self.trunk(batch)
        pooled = pool_activations(activations)
        logits, grad_pooled = self.head(pooled)
        # Each 2x2 max-pool window passes its gradient to exactly one activation, so the mean gradient per
        # channel (Grad-CAM's weight) is d logit / d pooled / (h * w): no backward pass through the pooling.
        weights = grad_pooled / (activations.shape[1] * activations.shape[2])
        return sigmoid(logits), pooled, activations, weights


class TfRunner:
    name = "tf"

    def __init__(self, full_model):
        self.cam = make_cam_function(full_model, int(full_model.input_shape[1]))

    def __call__(self, batch: np.ndarray):
        logits, pooled, activations, gradients = (t.numpy() for t in self.cam(np.asarray(batch, np.float32)))
        return sigmoid(logits), pooled, activations, gradients.mean(axis=(1, 2))


def make_cam_function(full_model, input_size: int = IMG_SIZE):
    """A tf.function: images -> (logits, pooled features, activations, d logit / d activations).

    Traced once: the fixed input signature (any batch size) stops per-call retracing.
    """
    import tensorflow as tf

    trunk, tail = split_after(full_model, CAM_LAYER, outputs=("logit", "gap"))

    @tf.function(input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.float32)])
    def cam(images):
        activations = trunk(images, training=False)
        with tf.GradientTape() as tape:
            tape.watch(activations)  # the tape sees only the tail: no gradient through VGG16's 13 convs
            logits, pooled = tail(activations, training=False)
        return logits[:, 0], pooled, activations, tape.gradient(logits, activations)

    return cam


def trunk_to_onnx(full_model, last_layer: str = CAM_LAYER) -> bytes:
    """Serialized ONNX model: NHWC float32 caffe-preprocessed images -> NHWC activations of `last_layer`."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2])]
    weights, current = [], "x0"
    for layer in full_model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kernel, bias = layer.get_weights()
            w, b = f"{layer.name}_w", f"{layer.name}_b"
            weights += [numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).astype(np.float32), w),
                        numpy_helper.from_array(bias.astype(np.float32), b)]
            nodes += [helper.make_node("Conv", [current, w, b], [f"{layer.name}_conv"], pads=[1, 1, 1, 1],
                                       kernel_shape=[3, 3]),
                      helper.make_node("Relu", [f"{layer.name}_conv"], [layer.name])]
            current = layer.name
        elif kind == "MaxPooling2D":
            nodes.append(helper.make_node("MaxPool", [current], [layer.name], kernel_shape=[2, 2], strides=[2, 2]))
            current = layer.name
        if layer.name == last_layer:
            break
    else:
        raise ValueError(f"layer '{last_layer}' not found in the model")
    nodes.append(helper.make_node("Transpose", [current], ["activations"], perm=[0, 2, 3, 1]))
    size = full_model.input_shape[1]
    graph = helper.make_graph(
        nodes, "vgg16_trunk",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("activations", TensorProto.FLOAT, None)], initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older ONNX Runtime releases too
    return model.SerializeToString()


class OnnxTrunk:
    """Callable: (n, size, size, 3) float32 -> (n, h, w, c) activations."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["activations"], {"image": np.ascontiguousarray(images, np.float32)})[0]


# After block5_conv3 the model is max-pool 2x2 -> global average -> BN -> Dense+ReLU -> BN -> Dense.

def pool_activations(activations: np.ndarray) -> np.ndarray:
    """(n, h, w, c) block5_conv3 -> (n, c): VGG16's 2x2 max-pool, then global average."""
    n, h, w, c = activations.shape
    pooled = activations[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    return pooled.mean(axis=(1, 2))


def _affine_bn(layer) -> tuple[np.ndarray, np.ndarray]:
    gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


class NumpyHead:
    """The trained head as NumPy arrays: logits and d logit / d pooled features, batched."""

    def __init__(self, model):
        self.s1, self.t1 = _affine_bn(model.get_layer("head_bn1"))
        self.w1, self.b1 = (w.astype(np.float64) for w in model.get_layer("head_dense").get_weights())
        self.s2, self.t2 = _affine_bn(model.get_layer("head_bn2"))
        w2, b2 = model.get_layer("logit").get_weights()
        self.w2, self.b2 = w2[:, 0].astype(np.float64), float(b2[0])

    def __call__(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hidden = (pooled * self.s1 + self.t1) @ self.w1 + self.b1
        active = hidden > 0
        logits = (np.maximum(hidden, 0) * self.s2 + self.t2) @ self.w2 + self.b2
        grad_pooled = ((self.w2 * self.s2) * active) @ self.w1.T * self.s1
        return logits, grad_pooled
