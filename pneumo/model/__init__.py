"""The network: build it (VGG16 + head), run it (TensorFlow or ONNX Runtime), store it (bundles, the Hub)."""
