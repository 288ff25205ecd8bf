"""VGG16's convolutional trunk as an ONNX graph, run with ONNX Runtime.

VGG16 is 13 3x3 convolutions with ReLU and 4 max-pools up to `block5_conv3`,
so the graph is written directly from the Keras layers' weights (no converter
package). On this 2-core CPU ONNX Runtime runs the trunk faster than
TensorFlow (`python -m pneumo bench` measures both); outputs agree to ~1e-5.
"""

from __future__ import annotations

import numpy as np

from .constants import CAM_LAYER


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
    """Callable: (n, size, size, 3) float32 -> (n, h, w, 512) activations."""

    def __init__(self, model_bytes: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["activations"], {"image": np.ascontiguousarray(images, np.float32)})[0]
