"""Lung-masked average pooling: the verdict read from the lung fields only, not from the whole view.

Global average pooling lets every position of VGG16's last block vote, so a GAP head can (and does) learn
how a film is framed: shoulders, markers, collimation. Here the block's positions are averaged with weights
from the lung-field head (pneumo.model.lungs): each cell counts by the share of it that lies inside the lungs,
so positions outside the lungs add nothing to the logit, and nothing to its gradient either (the heatmap
shows that; pneumo.infer.gradcam).

Written twice, in NumPy (the ONNX backend, training features) and as a Keras layer (the flat model, the TF
backend); tests/test_lung_pooling.py checks that they agree.
"""

from __future__ import annotations

import numpy as np

LUNG_POOLED = "lung_pool"  # the flat model's pooling layer when it pools over the lungs (else "gap")
MIN_CELLS = 1.0  # less lung than one cell's worth (no lungs found): every cell counts, as for GAP


def cell_weights(lungs: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n, H, W) lung probabilities -> (n, h, w) share of each cell of an h x w grid inside the lungs (p >= 0.5).

    H and W are multiples of h and w (both come from the same input: the lung map has block3's resolution)."""
    n, height, width = lungs.shape
    fy, fx = height // grid[0], width // grid[1]
    inside = (lungs >= 0.5).astype(np.float32)[:, : grid[0] * fy, : grid[1] * fx]
    weights = inside.reshape(n, grid[0], fy, grid[1], fx).mean(axis=(2, 4))
    empty = weights.sum(axis=(1, 2)) < MIN_CELLS
    weights[empty] = 1.0
    return weights


def lung_pool(maps: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """(n, h, w, c) maps and (n, H, W) lung probabilities -> (n, c) averages weighted by `cell_weights`."""
    weights = cell_weights(lungs, maps.shape[1:3])[..., None]
    return (maps * weights).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))


def lung_pooling_layer(name: str = LUNG_POOLED):
    """The Keras layer: [maps (n, h, w, c), lungs (n, H, W, 1)] -> (n, c), as `lung_pool`.

    The weights are a constant of the image for the gradient (stop_gradient): the lung map decides where to
    look, the logit's gradient says what the maps there contribute."""
    import keras
    from keras import ops

    class LungPooling(keras.layers.Layer):
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

    return LungPooling(name=name)
