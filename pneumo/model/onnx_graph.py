"""ONNX graphs written directly from Keras layers' weights (no converter package).

- The VGG16 trunk: 13 3x3 convolutions with ReLU and 4 max-pools, up to `block5_conv3`.
- Optionally the lung-field decoder (pneumo.model.lung_decoder) on the same pass: its 1x1/3x3 convolutions,
  bilinear 2x upsampling and concatenations read block3/4/5_conv3, so one session gives both the
  Grad-CAM activations and the lung map.
Inside the graph tensors are NCHW (ONNX's convention); inputs and outputs are NHWC like Keras.
"""

from __future__ import annotations

import numpy as np

from ..config import CAM_LAYER
from .int8 import Int8Ranges, dequantized_initializers, qdq_nodes

# onnx and onnxruntime are imported where a graph is written or run (0.8 s and 0.15 s at import).

ACTIVATIONS, LUNGS = "activations", "lungs"  # output names


def _conv(layer, source: str, nodes: list, weights: list, int8: dict | None = None) -> str:
    """A Keras Conv2D (stride 1, 'same' padding, ReLU or sigmoid) as ONNX nodes; returns the output name.

    `int8`: the int8 trunk's state, {"ranges": Int8Ranges, "scales": {float tensor: its quantization scale}}.
    A convolution reading a quantized tensor gets int8 weights; every trunk convolution's output is quantized."""
    from onnx import helper, numpy_helper

    kernel, bias = layer.get_weights()
    kernel = kernel.transpose(3, 2, 0, 1).astype(np.float32)
    scales = int8["scales"] if int8 else {}
    if source in scales:
        w, b = dequantized_initializers(layer.name, kernel, bias.astype(np.float32), scales[source], nodes, weights)
    else:
        w, b = f"{layer.name}_w", f"{layer.name}_b"
        weights += [numpy_helper.from_array(kernel, w), numpy_helper.from_array(bias.astype(np.float32), b)]
    k = kernel.shape[2]
    nodes.append(helper.make_node("Conv", [source, w, b], [f"{layer.name}_conv"], pads=[k // 2] * 4,
                                  kernel_shape=[k, k]))
    activation = {"relu": "Relu", "sigmoid": "Sigmoid"}[layer.activation.__name__]
    if not int8 or layer.name not in int8["ranges"].maxima:
        nodes.append(helper.make_node(activation, [f"{layer.name}_conv"], [layer.name]))
        return layer.name
    nodes.append(helper.make_node(activation, [f"{layer.name}_conv"], [f"{layer.name}_float"]))
    scales[layer.name] = int8["ranges"].scale(layer.name)
    return qdq_nodes(f"{layer.name}_float", layer.name, scales[layer.name], nodes, weights)


def conv_names(full_model) -> list[str]:
    """The trunk's convolutions in order, up to CAM_LAYER: the tensors the int8 trunk quantizes."""
    names = []
    for layer in full_model.layers:
        if type(layer).__name__ == "Conv2D":
            names.append(layer.name)
        if layer.name == CAM_LAYER:
            return names
    raise ValueError(f"layer '{CAM_LAYER}' not found in the model")


def _trunk_nodes(full_model, last_layer: str, nodes: list, weights: list, int8: dict | None = None) -> None:
    from onnx import helper

    current = "x0"
    for layer in full_model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            current = _conv(layer, current, nodes, weights, int8)
        elif kind == "MaxPooling2D":
            pooled = f"{layer.name}_float" if int8 else layer.name
            nodes.append(helper.make_node("MaxPool", [current], [pooled], kernel_shape=[2, 2], strides=[2, 2]))
            if int8:  # the same scale in and out: ONNX Runtime then pools the uint8 values directly
                int8["scales"][layer.name] = int8["scales"][current]
                qdq_nodes(pooled, layer.name, int8["scales"][layer.name], nodes, weights)
            current = layer.name
        if layer.name == last_layer:
            return
    raise ValueError(f"layer '{last_layer}' not found in the model")


def _decoder_nodes(decoder, nodes: list, weights: list) -> str:
    """The decoder's layers in order; its inputs are the trunk tensors of the same names (block3/4/5_conv3)."""
    from onnx import helper, numpy_helper

    names = {}  # Keras tensor name -> ONNX tensor name
    for layer in decoder.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            names[layer.output.name] = layer.name[: -len("_in")]  # "block3_conv3_in" reads block3_conv3
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        sources = [names[t.name] for t in inputs]
        if kind == "Conv2D":
            out = _conv(layer, sources[0], nodes, weights)
        elif kind == "UpSampling2D":
            scales = f"{layer.name}_scales"
            weights.append(numpy_helper.from_array(np.array([1, 1, *layer.size], np.float32), scales))
            # Keras' bilinear resize samples at pixel centres without antialiasing: ONNX "half_pixel"
            nodes.append(helper.make_node("Resize", [sources[0], "", scales], [layer.name], mode="linear",
                                          coordinate_transformation_mode="half_pixel"))
            out = layer.name
        elif kind == "Concatenate":
            nodes.append(helper.make_node("Concat", sources, [layer.name], axis=1))
            out = layer.name
        else:
            raise ValueError(f"the lung decoder has a layer of kind {kind}, which the ONNX export does not know.")
        names[layer.output.name] = out
    return names[decoder.output.name]


def trunk_to_onnx(full_model, last_layer: str = CAM_LAYER, decoder=None, extra: tuple[str, ...] = (),
                  int8: Int8Ranges | None = None) -> bytes:
    """Serialized ONNX model: NHWC float32 caffe-preprocessed images -> NHWC activations of `last_layer`
    (output "activations"), then those of the earlier layers named in `extra` (outputs "<name>_out") and,
    with a lung decoder, its lung probabilities (output "lungs"). With `int8` ranges the trunk is the int8 one
    (pneumo.model.int8) and every output is dequantized float32."""
    from onnx import TensorProto, helper

    nodes, weights = [helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2])], []
    _trunk_nodes(full_model, last_layer, nodes, weights, {"ranges": int8, "scales": {}} if int8 else None)
    outputs = []
    for name, out in [(last_layer, ACTIVATIONS), *((n, f"{n}_out") for n in extra)]:
        nodes.append(helper.make_node("Transpose", [name], [out], perm=[0, 2, 3, 1]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    if decoder is not None:
        lungs = _decoder_nodes(decoder, nodes, weights)
        nodes.append(helper.make_node("Transpose", [lungs], [LUNGS], perm=[0, 2, 3, 1]))
        outputs.append(helper.make_tensor_value_info(LUNGS, TensorProto.FLOAT, None))
    size = full_model.input_shape[1]
    graph = helper.make_graph(
        nodes, "vgg16_trunk", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, 3])],
        outputs, initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older ONNX Runtime releases too
    return model.SerializeToString()


class OnnxTrunk:
    """Callable: (n, size, size, 3) float32 -> (n, h, w, c) activations, or a list of all outputs with `every`."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray, every: bool = False):
        found = self.session.run(self.outputs, {"image": np.ascontiguousarray(images, np.float32)})
        return found if every else found[0]


def activation_ranges(full_model, images: np.ndarray, batch_size: int = 16) -> Int8Ranges:
    """Ranges from the float trunk's activations on `images` (preprocessed, (n, size, size, 3))."""
    names = conv_names(full_model)
    trunk = OnnxTrunk(trunk_to_onnx(full_model, names[-1], extra=tuple(names[:-1])))
    maxima = np.zeros(len(names))
    for start in range(0, len(images), batch_size):
        last, *earlier = trunk(images[start:start + batch_size], every=True)
        maxima = np.maximum(maxima, [float(out.max()) for out in (*earlier, last)])
    return Int8Ranges(dict(zip(names, maxima.tolist())), len(images))
