"""The network: frozen ImageNet VGG16 + pooling + log1p/BN/Dense head, as one flat functional model.

The head is trained alone on cached pooled features (seconds), then its layers are reused on the backbone's
own layers to form one flat image model whose `block5_conv3` stays reachable for Grad-CAM. Pooling is over the
lung zones (`block5_conv3`, the shipped recipe) or global average (`block5_pool`, the design's plain form).
Only the head's weights are stored in a bundle. `split_after` cuts the flat model after a layer (Grad-CAM's tail).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from ..config import BACKBONE_ENV, CAM_LAYER, FEATURE_DIM, IMG_SIZE, backbone_weights_env
from .lung_decoder import SKIP_LAYERS
from .pooling import GAP, LUNG_ZONES, POOLINGS, ZONES

# Keras is imported inside the functions that build models (4.5 s: `python -c 'import keras'`; .layers imports it
# too): reading a bundle's settings and fingerprints needs none of it.


@dataclass(frozen=True)
class HeadConfig:
    """The head on VGG16's pooled block5: log1p -> BatchNorm -> Dense(1) with L2 `weight_decay`, reading
    `pooling` ("lung-zones": 4 x 512 features, "gap": 512)."""
    pooling: str = LUNG_ZONES
    weight_decay: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def features(self) -> int:
        return FEATURE_DIM * (ZONES if self.pooling == LUNG_ZONES else 1)


RANDOM = "random"  # seeded random init: only for fast offline tests, never for a real model


def backbone_weights_setting(explicit: str | None = None) -> str:
    """`explicit`, else env PNEUMO_BACKBONE_WEIGHTS, else Keras' 'imagenet' download."""
    value = explicit or backbone_weights_env() or "imagenet"
    if value not in ("imagenet", RANDOM) and not Path(value).is_file():
        raise ValueError(f"Backbone weights file '{value}' does not exist; set {BACKBONE_ENV} or "
                         "--backbone-weights to a VGG16 no-top .weights.h5 file, or to 'imagenet'.")
    return value


@lru_cache(maxsize=8)
def backbone_fingerprint(setting: str) -> str:
    """Identifies the backbone weights, so cached features from other weights are never reused."""
    if setting in ("imagenet", RANDOM):
        return f"vgg16-{setting}"
    digest = hashlib.sha256()
    with open(setting, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "vgg16-" + digest.hexdigest()[:16]


def build_backbone(weights: str, input_size: int = IMG_SIZE):
    """VGG16 without top, frozen. `weights`: 'imagenet', a .weights.h5 path, or 'random' (tests)."""
    import keras

    if weights == RANDOM:
        keras.utils.set_random_seed(1234)  # the same "random" backbone in every process
    try:
        base = keras.applications.VGG16(include_top=False, weights=None if weights == RANDOM else weights,
                                        input_shape=(input_size, input_size, 3))
    except Exception:  # Keras raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise ValueError("could not download Keras' ImageNet VGG16 weights (no network?); "
                         f"set {BACKBONE_ENV} to a local copy of the VGG16 no-top .weights.h5 file.") from None
    base.trainable = False
    return base


def build_head_model(config: HeadConfig = HeadConfig()):
    """Pooled features -> log1p -> BatchNorm -> Dense(1) logit -> sigmoid."""
    import keras
    from keras import layers

    from .layers import Log1p

    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got '{config.pooling}'.")
    reg = keras.regularizers.l2(config.weight_decay) if config.weight_decay else None
    inputs = keras.Input((config.features,), name="pooled_features")
    x = layers.BatchNormalization(name="head_bn1")(Log1p(name="head_log1p")(inputs))
    # The logit is its own layer so Grad-CAM differentiates it, not the saturating sigmoid.
    x = layers.Dense(1, kernel_regularizer=reg, name="logit")(x)
    return keras.Model(inputs, layers.Activation("sigmoid", name="probability")(x), name="pneumo_head")


def build_full_model(backbone_weights: str, head, input_size: int = IMG_SIZE, decoder=None):
    """One flat functional model: VGG16 -> pooling -> the head's own layers (shared weights).

    With the lung-field `decoder` (reading the same pass's block3/4/5_conv3) the head's input is the lung zones of
    block5_conv3 (pneumo.model.pooling), so block5_pool is not used; without, the global average of block5_pool.
    The head's input width must match."""
    import keras
    from keras import layers

    base = build_backbone(backbone_weights, input_size)
    if decoder is None:
        x = layers.GlobalAveragePooling2D(name=GAP)(base.output)
    else:
        from .layers import LungZonePooling

        lung_map = decoder([base.get_layer(name).output for name in SKIP_LAYERS])
        x = LungZonePooling()([base.get_layer(CAM_LAYER).output, lung_map])
    if int(x.shape[-1]) != int(head.input_shape[-1]):
        raise ValueError(f"the head reads {head.input_shape[-1]} features but this pooling gives {x.shape[-1]}; "
                         "a lung-zone head needs its lung decoder, a gap head none.")
    for layer in head.layers[1:]:  # skip the head's Input: reuse its layers, not a nested model
        x = layer(x)
    return keras.Model(base.input, x, name="pneumo_vgg16")


def split_after(full_model, layer_name: str, outputs: tuple[str, ...] = ()):
    """(trunk: image -> `layer_name`'s output, tail: that output -> the outputs of the layers named in
    `outputs`, default the model's own output). Both reuse the full model's layers (shared weights);
    the model is a chain, so the tail is the layers after `layer_name` applied in order."""
    import keras

    names = [layer.name for layer in full_model.layers]
    if layer_name not in names:
        raise ValueError(f"the model has no layer '{layer_name}'.")
    trunk = keras.Model(full_model.input, full_model.get_layer(layer_name).output, name=f"upto_{layer_name}")
    x = inputs = keras.Input(full_model.get_layer(layer_name).output.shape[1:], name=f"{layer_name}_out")
    found = {}
    for layer in full_model.layers[names.index(layer_name) + 1:]:
        x = found[layer.name] = layer(x)
    missing = [name for name in outputs if name not in found]
    if missing:
        raise ValueError(f"the model has no layer(s) {missing} after '{layer_name}'.")
    tail_outputs = x if not outputs else found[outputs[0]] if len(outputs) == 1 else [found[n] for n in outputs]
    return trunk, keras.Model(inputs, tail_outputs, name=f"after_{layer_name}")
