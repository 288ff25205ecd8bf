"""The flat model's own Keras layers, registered so the model can be cloned, saved and loaded like any other.

Imported only where a Keras model is built (pneumo.model.build), so serving through ONNX Runtime and the tools
that never build one do not pay for importing Keras here.
"""

from __future__ import annotations

import keras
from keras import ops

from .pooling import LUNG_POOLED, MIN_CELLS


@keras.saving.register_keras_serializable(package="pneumo")
class Log1p(keras.layers.Layer):
    """log(1 + x) of the pooled features (ReLU maps, so x >= 0): a few large channels do not decide alone."""

    def call(self, inputs):
        return ops.log1p(inputs)


@keras.saving.register_keras_serializable(package="pneumo")
class LungPooling(keras.layers.Layer):
    """[maps (n, h, w, c), lungs (n, H, W, 1)] -> (n, zones * c): `pneumo.model.pooling.lung_pool` (one zone) or
    `zone_pool` (each lung's bands apart) as a layer.

    The weights are a constant of the image for the gradient (stop_gradient): the lung map decides where to
    look, the logit's gradient says what the maps there contribute."""

    def __init__(self, name: str = LUNG_POOLED, zones: int = 1, **kwargs):
        super().__init__(name=name, **kwargs)
        self.zones = int(zones)

    def get_config(self):
        return {**super().get_config(), "zones": self.zones}

    def call(self, inputs):
        maps, lungs = inputs
        factor = (lungs.shape[1] // maps.shape[1], lungs.shape[2] // maps.shape[2])
        inside = ops.cast(ops.greater_equal(ops.stop_gradient(lungs), 0.5), maps.dtype)
        masks = inside if self.zones == 1 else self._zone_masks(inside)
        weights = ops.average_pool(masks, pool_size=factor, strides=factor, padding="valid")  # (n, h, w, zones)
        total = ops.sum(weights, axis=(1, 2), keepdims=True)
        weights = ops.where(total < MIN_CELLS, ops.ones_like(weights), weights)
        if self.zones == 1:
            return ops.sum(maps * weights, axis=(1, 2)) / ops.sum(weights, axis=(1, 2))
        weights = weights / ops.sum(weights, axis=(1, 2), keepdims=True)
        pooled = ops.einsum("nhwc,nhwz->nzc", maps, weights)
        return ops.reshape(pooled, (-1, self.zones * maps.shape[-1]))

    def _zone_masks(self, inside):
        """(n, H, W, 1) -> (n, H, W, zones), as `pneumo.model.pooling.zone_masks` (same integer band rule)."""
        bands, width = self.zones // 2, inside.shape[2]
        left = ops.reshape(ops.cast(ops.arange(width) < width // 2, inside.dtype), (1, 1, width, 1))
        masks = []
        for half in (inside * left, inside * (1 - left)):
            rows = ops.sum(half, axis=2, keepdims=True)  # (n, H, 1, 1)
            reached, total = ops.cumsum(rows, axis=1) * bands, ops.sum(rows, axis=1, keepdims=True)
            band = ops.zeros_like(rows, "int32")
            for b in range(1, bands):
                band = band + ops.cast(reached >= b * total, "int32")
            masks += [half * ops.cast(band == b, half.dtype) for b in range(bands)]
        return ops.concatenate(masks, axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], self.zones * input_shapes[0][-1])
