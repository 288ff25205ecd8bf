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
    """[maps (n, h, w, c), lungs (n, H, W, 1)] -> (n, c): `pneumo.model.pooling.lung_pool` as a layer.

    The weights are a constant of the image for the gradient (stop_gradient): the lung map decides where to
    look, the logit's gradient says what the maps there contribute."""

    def __init__(self, name: str = LUNG_POOLED, **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, inputs):
        maps, lungs = inputs
        factor = (lungs.shape[1] // maps.shape[1], lungs.shape[2] // maps.shape[2])
        inside = ops.cast(ops.greater_equal(ops.stop_gradient(lungs), 0.5), maps.dtype)
        weights = ops.average_pool(inside, pool_size=factor, strides=factor, padding="valid")
        total = ops.sum(weights, axis=(1, 2), keepdims=True)
        weights = ops.where(total < MIN_CELLS, ops.ones_like(weights), weights)
        return ops.sum(maps * weights, axis=(1, 2)) / ops.sum(weights, axis=(1, 2))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], input_shapes[0][-1])
