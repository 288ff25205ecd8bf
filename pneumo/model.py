"""The network: frozen ImageNet VGG16 + GAP/BN/Dense head, as one flat functional model.

The head is trained alone on cached pooled features (seconds), then its layers
are reused on `base.output` to form one flat image model whose `block5_conv3`
stays reachable for Grad-CAM. Only the head's weights are stored in a bundle.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .constants import BACKBONE_ENV, IMG_SIZE


@dataclass(frozen=True)
class HeadConfig:
    units: int = 256
    dropout: float = 0.5
    weight_decay: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


RANDOM = "random"  # seeded random init: only for fast offline tests, never for a real model


def backbone_weights_setting(explicit: str | None = None) -> str:
    """`explicit`, else env PNEUMO_BACKBONE_WEIGHTS, else Keras' 'imagenet' download."""
    value = explicit or os.environ.get(BACKBONE_ENV) or "imagenet"
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
    except Exception as err:  # Keras raises a bare Exception when the download fails
        if weights != "imagenet":
            raise
        raise ValueError(f"could not download Keras' ImageNet VGG16 weights ({type(err).__name__}; no network?); "
                         f"set {BACKBONE_ENV} to a local copy of the VGG16 no-top .weights.h5 file.") from None
    base.trainable = False
    return base


def build_head_model(config: HeadConfig = HeadConfig(), feature_dim: int = 512):
    """Pooled features -> BN -> Dense -> Dropout -> BN -> Dense(1) logit -> sigmoid."""
    import keras
    from keras import layers

    reg = keras.regularizers.l2(config.weight_decay) if config.weight_decay else None
    x = inputs = keras.Input((feature_dim,), name="pooled_features")
    x = layers.BatchNormalization(name="head_bn1")(x)
    x = layers.Dense(config.units, activation="relu", kernel_regularizer=reg, name="head_dense")(x)
    x = layers.Dropout(config.dropout, name="head_dropout")(x)
    x = layers.BatchNormalization(name="head_bn2")(x)
    # The logit is its own layer so Grad-CAM differentiates it, not the saturating sigmoid.
    x = layers.Dense(1, kernel_regularizer=reg, name="logit")(x)
    return keras.Model(inputs, layers.Activation("sigmoid", name="probability")(x), name="pneumo_head")


def build_full_model(backbone_weights: str, head, input_size: int = IMG_SIZE):
    """One flat functional model: VGG16 -> GAP on base.output -> the head's own layers (shared weights)."""
    import keras
    from keras import layers

    base = build_backbone(backbone_weights, input_size)
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    for layer in head.layers[1:]:  # skip the head's Input: reuse its layers, not a nested model
        x = layer(x)
    return keras.Model(base.input, x, name="pneumo_vgg16")


def build_feature_extractor(backbone_weights: str, input_size: int = IMG_SIZE):
    """Backbone + GAP: the pooled features the head trains on (what the cache stores)."""
    import keras
    from keras import layers

    base = build_backbone(backbone_weights, input_size)
    return keras.Model(base.input, layers.GlobalAveragePooling2D(name="gap")(base.output))
