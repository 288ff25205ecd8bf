"""The lung-field head: a small U-Net-style decoder on the frozen VGG16's block3-block5 activations.

It reads the same backbone pass the classifier makes (block3_conv3 56x56, block4_conv3 28x28, block5_conv3
14x14 at 224 px) and predicts, for each pixel of the model's view at 1/4 resolution, the probability that it
lies inside a lung field (both lungs, including behind the heart). Coarse is enough: it is used to say how much
of the Grad-CAM heat (14x14) falls on the lungs and whether a plausible pair of lungs is there at all.
"""

from __future__ import annotations

import hashlib

import numpy as np

# Keras is imported inside the functions that build or run the decoder (4.5 s: `python -c 'import keras'`), and
# .onnx_graph where the ONNX path is taken.

SKIP_LAYERS = ("block3_conv3", "block4_conv3", "block5_conv3")  # 1/4, 1/8 and 1/16 of the input side


def build_feature_model(full_model):
    """The backbone up to block5_conv3 with the three skip activations as outputs (shared, frozen weights)."""
    import keras

    return keras.Model(full_model.input, [full_model.get_layer(name).output for name in SKIP_LAYERS],
                       name="lung_features")


def feature_function(full_model, int8=None):
    """A callable: preprocessed images -> [block3, block4, block5] activations, by ONNX Runtime when installed
    (about twice as fast as Keras on CPU), else by Keras. `int8` (Int8Ranges): the int8 trunk's, dequantized."""
    try:
        from .onnx_graph import OnnxTrunk, trunk_to_onnx

        trunk = OnnxTrunk(trunk_to_onnx(full_model, SKIP_LAYERS[-1], extra=SKIP_LAYERS[:-1], int8=int8))
    except ImportError:
        if int8 is not None:
            raise ValueError("int8 activations need ONNX Runtime (pip install onnxruntime).") from None
        return build_feature_model(full_model).predict_on_batch

    def features(batch):
        block5, *earlier = trunk(batch, every=True)  # the graph's first output is its last layer
        return [*earlier, block5]

    return features


def build_decoder(channels: tuple[int, int, int] = (256, 512, 512), width: int = 32):
    """(block3, block4, block5) activations -> lung probability at block3's resolution."""
    import keras
    from keras import layers

    b3, b4, b5 = (keras.Input((None, None, c), name=f"{name}_in") for c, name in zip(channels, SKIP_LAYERS))
    x = layers.Conv2D(2 * width, 1, activation="relu", name="lung_b5")(b5)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="lung_up4")(x)
    x = layers.Concatenate(name="lung_cat4")([x, layers.Conv2D(2 * width, 1, activation="relu", name="lung_b4")(b4)])
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="lung_conv4")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="lung_up3")(x)
    x = layers.Concatenate(name="lung_cat3")([x, layers.Conv2D(width, 1, activation="relu", name="lung_b3")(b3)])
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="lung_conv3")(x)
    x = layers.Conv2D(1, 1, activation="sigmoid", name="lung_mask")(x)
    return keras.Model([b3, b4, b5], x, name="lung_decoder")


LUNGS_FILE = "lungs.npz"
LUNGS_VERSION = 1  # bump when the decoder's layers or its input view change: older files are then refused


def save_decoder(decoder, path) -> None:
    """The decoder's weights in float16 (~0.4 MB; the masks it gives change by < 1e-3)."""
    arrays = {f"{layer.name}/{i}": w.astype(np.float16)
              for layer in decoder.layers for i, w in enumerate(layer.get_weights())}
    np.savez(path, version=LUNGS_VERSION, **arrays)


def decoder_fingerprint(decoder) -> str:
    """Identifies a decoder by its stored (float16) weights: features pooled over its lung maps are cached
    under it, so another lung head never reuses them."""
    digest = hashlib.sha256()
    for layer in decoder.layers:
        for weights in layer.get_weights():
            digest.update(weights.astype(np.float16).tobytes())
    return digest.hexdigest()[:12]


def load_decoder(path):
    """A decoder built as `build_decoder()` with the weights saved by `save_decoder`."""
    decoder = build_decoder()
    with np.load(path) as arrays:
        version = int(arrays["version"]) if "version" in arrays else None
        if version != LUNGS_VERSION:
            raise ValueError(f"'{path}' holds a lung decoder of version {version}; this package reads version "
                             f"{LUNGS_VERSION}. Retrain it with `python train.py --lung-masks DIR`.")
        for layer in decoder.layers:
            if layer.get_weights():
                layer.set_weights([arrays[f"{layer.name}/{i}"].astype(np.float32)
                                   for i in range(len(layer.get_weights()))])
    return decoder
