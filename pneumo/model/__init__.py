"""The network: build it (VGG16 + pooling + head), run it (TensorFlow or ONNX Runtime), store it (bundles)."""
