"""Lung-masked average pooling: the verdict read from the lung fields only, not from the whole view.

Global average pooling lets every position of VGG16's last block vote, so a GAP head can (and does) learn
how a film is framed: shoulders, markers, collimation. Here the block's positions are averaged with weights
from the lung-field head (pneumo.model.lungs): each cell counts by the share of it that lies inside the lungs,
so positions outside the lungs add nothing to the logit, and nothing to its gradient either (the heatmap
shows that; pneumo.infer.gradcam).

Written twice, in NumPy here (the ONNX backend, training features) and as a Keras layer (pneumo.model.layers:
the flat model, the TF backend); tests/test_lung_pooling.py checks that they agree.
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


def weighted_average(maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, h, w, c) maps and (n, h, w) cell weights -> (n, c)."""
    return (maps * weights[..., None]).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))[:, None]


def lung_pool(maps: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """(n, h, w, c) maps and (n, H, W) lung probabilities -> (n, c) averages weighted by `cell_weights`."""
    return weighted_average(maps, cell_weights(lungs, maps.shape[1:3]))
