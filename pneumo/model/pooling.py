"""Lung-zone pooling: the verdict read from the lung fields only, each lung's upper and lower half apart.

Global average pooling lets every position of VGG16's last block vote, so a GAP head can (and does) learn how a
film is framed: shoulders, markers, collimation. Here block5_conv3's 14x14 positions are averaged over four zones
of the lung map the lung-field head finds (pneumo.model.lung_decoder): each lung, above and below the row that
reaches half its area. Each position counts by its own share of the zone, so positions outside the lungs add
nothing to the logit, nor to its gradient (the heatmap shows that: pneumo.infer.gradcam). Pneumonia often sits in
one zone, which one average over both lungs dilutes; a block5_pool cell (7x7) on the lung outline sees four times
as much of what lies beyond it as a block5_conv3 position does (docs/decisions.md).

Written twice, in NumPy here (the ONNX backend, training features) and as a Keras layer (pneumo.model.layers: the
flat model, the TF backend); tests/test_lung_zones.py checks that they agree.
"""

from __future__ import annotations

import numpy as np

LUNG_ZONES, GAP = "lung-zones", "gap"  # --pooling: the shipped recipe, and the design's plain form (the baseline)
POOLINGS = (LUNG_ZONES, GAP)
ZONES = 4  # two lungs x (upper, lower)
ZONES_LAYER = "lung_zones"  # the flat model's pooling layer when it pools over the lung zones (else "gap")
MIN_CELLS = 1.0  # a zone with less lung than one position's worth (no lungs found): every position counts


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


def lung_signature(lungs: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n, H, W) lung probabilities -> (n, h * w): the share of each cell of an h x w grid inside the lungs, no
    fallback for an empty map (what the chest X-ray check compares with where lungs usually lie)."""
    n, height, width = lungs.shape
    fy, fx = height // grid[0], width // grid[1]
    inside = (lungs >= 0.5).astype(np.float32)[:, : grid[0] * fy, : grid[1] * fx]
    return inside.reshape(n, grid[0], fy, grid[1], fx).mean(axis=(2, 4)).reshape(n, grid[0] * grid[1])


def zone_masks(lungs: np.ndarray) -> np.ndarray:
    """(n, H, W) lung probabilities -> (n, ZONES, H, W) masks splitting the lung map (p >= 0.5).

    Each half of the view (one lung each) is cut in two bands of rows by that lung's area: the row whose
    cumulative area (itself included) reaches half starts the lower band. Integer arithmetic, so the Keras
    layer draws the same bands."""
    inside = (lungs >= 0.5).astype(np.float32)
    left = (np.arange(lungs.shape[2]) < lungs.shape[2] // 2).astype(np.float32)
    masks = []
    for half in (inside * left, inside * (1 - left)):
        rows = half.sum(axis=2)  # (n, H)
        lower = (np.cumsum(rows, axis=1) * 2 >= rows.sum(axis=1, keepdims=True))[:, :, None]
        masks += [half * ~lower, half * lower]
    return np.stack(masks, axis=1)


def zone_positions(lungs: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(n, H, W) lung map -> (n, ZONES, h, w): each position's weight in each zone, each zone's summing to 1."""
    masks = zone_masks(lungs)
    positions = np.stack([cell_weights(masks[:, z], grid) for z in range(ZONES)], axis=1)
    return positions / positions.sum(axis=(2, 3), keepdims=True)


def zone_pool(activations: np.ndarray, lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w, c) block5_conv3 and (n, H, W) lung map -> ((n, ZONES * c) head input, `zone_positions`): each
    zone's weighted average, zone after zone."""
    n, h, w, c = activations.shape
    positions = zone_positions(lungs, (h, w))
    return np.einsum("nhwc,nzhw->nzc", activations, positions).reshape(n, ZONES * c), positions
