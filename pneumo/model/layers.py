"""The flat model's own Keras layers, registered so the model can be cloned, saved and loaded like any other.

Imported only where a Keras model is built (pneumo.model.build), so serving through ONNX Runtime and the tools
that never build one do not pay for importing Keras here.
"""

from __future__ import annotations

import keras
from keras import ops

from .pooling import MIN_CELLS, ZONES, ZONES_LAYER


@keras.saving.register_keras_serializable(package="pneumo")
class Log1p(keras.layers.Layer):
    """log(1 + x) of the pooled features (ReLU maps, so x >= 0): a few large channels do not decide alone."""

    def call(self, inputs):
        return ops.log1p(inputs)


@keras.saving.register_keras_serializable(package="pneumo")
class LungZonePooling(keras.layers.Layer):
    """[block5_conv3 (n, h, w, c), lung map (n, H, W, 1)] -> (n, ZONES * c): `pneumo.model.pooling.zone_pool` as a
    layer.

    The weights are a constant of the image for the gradient (stop_gradient): the lung map decides where to
    look, the logit's gradient says what the activations there contribute."""

    def __init__(self, name: str = ZONES_LAYER, **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, inputs):
        maps, lungs = inputs
        factor = (lungs.shape[1] // maps.shape[1], lungs.shape[2] // maps.shape[2])
        inside = ops.cast(ops.greater_equal(ops.stop_gradient(lungs), 0.5), maps.dtype)
        weights = ops.average_pool(zone_masks(inside), pool_size=factor, strides=factor, padding="valid")
        total = ops.sum(weights, axis=(1, 2), keepdims=True)  # (n, 1, 1, ZONES)
        weights = ops.where(total < MIN_CELLS, ops.ones_like(weights), weights)
        weights = weights / ops.sum(weights, axis=(1, 2), keepdims=True)
        pooled = ops.einsum("nhwc,nhwz->nzc", maps, weights)
        return ops.reshape(pooled, (-1, ZONES * maps.shape[-1]))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], ZONES * input_shapes[0][-1])


def zone_masks(inside):
    """(n, H, W, 1) lung mask -> (n, H, W, ZONES), as `pneumo.model.pooling.zone_masks` (the same row rule)."""
    width = inside.shape[2]
    left = ops.reshape(ops.cast(ops.arange(width) < width // 2, inside.dtype), (1, 1, width, 1))
    masks = []
    for half in (inside * left, inside * (1 - left)):
        rows = ops.sum(half, axis=2, keepdims=True)  # (n, H, 1, 1)
        lower = ops.cast(ops.cumsum(rows, axis=1) * 2 >= ops.sum(rows, axis=1, keepdims=True), half.dtype)
        masks += [half * (1 - lower), half * lower]
    return ops.concatenate(masks, axis=-1)
