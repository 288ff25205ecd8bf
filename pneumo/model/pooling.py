"""Lung-masked average pooling: the verdict read from the lung fields only, not from the whole view.

Global average pooling lets every position of VGG16's last block vote, so a GAP head can (and does) learn
how a film is framed: shoulders, markers, collimation. Here the block's positions are averaged with weights
from the lung-field head (pneumo.model.lung_decoder): each cell counts by the share of it that lies inside the lungs,
so positions outside the lungs add nothing to the logit, and nothing to its gradient either (the heatmap
shows that; pneumo.infer.gradcam).

`--pooling lung-zones` averages each lung's upper and lower half apart (four zones, 4 x 512 features): pneumonia
often sits in one zone, which one average over both lungs dilutes (docs/experiments.md, "Lung zones").

Written twice, in NumPy here (the ONNX backend, training features) and as a Keras layer (pneumo.model.layers:
the flat model, the TF backend); tests/test_lung_pooling.py checks that they agree.
"""

from __future__ import annotations

import numpy as np

LUNG_POOLED = "lung_pool"  # the flat model's pooling layer when it pools over the lungs (else "gap")
MIN_CELLS = 1.0  # less lung than one cell's worth (no lungs found): every cell counts, as for GAP
ZONES = {"lungs": 1, "lung-zones": 4, "lung-zones-14": 4}  # --pooling -> zones of the lung map pooled apart
# Poolings that read block5_conv3 (14x14) itself, not block5_pool (7x7): a position on the lung outline sees a
# quarter of the area beyond it that a block5_pool cell does, so the verdict, and its heat, stay on the lungs.
FINE = ("lung-zones-14",)


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


def zone_masks(lungs: np.ndarray, zones: int) -> np.ndarray:
    """(n, H, W) lung probabilities -> (n, zones, H, W) masks splitting the lung map (p >= 0.5).

    1 zone: the whole map. More: each half of the view (one lung each), cut into `zones // 2` bands of rows by
    that lung's area: a row's band is how many of the shares 1/b, 2/b ... of the area the rows down to it (itself
    included) reach, so the row that reaches half starts the lower half. Integer arithmetic, so the Keras layer
    draws the same bands."""
    inside = (lungs >= 0.5).astype(np.float32)
    if zones == 1:
        return inside[:, None]
    if zones % 2:
        raise ValueError(f"lung zones come in pairs (one set per lung), got {zones}.")
    bands, width = zones // 2, lungs.shape[2]
    left = (np.arange(width) < width // 2).astype(np.float32)
    masks = []
    for half in (inside * left, inside * (1 - left)):
        rows = half.sum(axis=2)  # (n, H)
        reached, total = np.cumsum(rows, axis=1) * bands, rows.sum(axis=1, keepdims=True)
        band = sum(((reached >= b * total).astype(np.int64) for b in range(1, bands)), np.zeros(rows.shape, np.int64))
        masks += [half * (band == b)[:, :, None] for b in range(bands)]
    return np.stack(masks, axis=1)


def zone_pool(maps: np.ndarray, lungs: np.ndarray, zones: int) -> tuple[np.ndarray, np.ndarray]:
    """((n, zones * c) features, (n, zones, h, w) cell weights, each zone's summing to 1): `lung_pool` per zone,
    zone after zone. A zone with less than one cell of lung counts every cell, as `cell_weights` does."""
    n, h, w, c = maps.shape
    masks = zone_masks(lungs, zones)
    cells = np.stack([cell_weights(masks[:, z], (h, w)) for z in range(zones)], axis=1)
    cells = cells / cells.sum(axis=(2, 3), keepdims=True)
    return np.einsum("nhwc,nzhw->nzc", maps, cells).reshape(n, zones * c), cells
