"""Grad-CAM (Selvaraju et al. 2017) for the sigmoid head, as small pure functions with no I/O.

The activations of `block5_conv3` and the gradient-derived channel weights come from the backend
(pneumo.model.backends) in the same forward pass as the prediction; here they become a heatmap,
and the heatmap an overlay on the X-ray.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import IMG_SIZE
from ..preprocess import crop_box

EPS = 1e-7


def heatmap(activations: np.ndarray, gradients: np.ndarray, positive: bool = True) -> np.ndarray:
    """Grad-CAM map in [0, 1] for one image, (h, w) at the activation's resolution.

    `gradients` are d logit / d activations. For the positive class (pneumonia)
    the evidence is the logit; for the negative class (normal) it is -logit.
    """
    return heatmap_from_weights(activations, gradients.mean(axis=(0, 1)), positive)


def heatmap_from_weights(activations: np.ndarray, weights: np.ndarray, positive: bool = True,
                         positions: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM map from per-channel weights (the mean gradients): ReLU(sum_c w_c A_c), scaled to [0, 1].

    `positions` (zones, h, w) with `weights` (zones, c): a model that pools block5_conv3 over the lung zones,
    each position weighted by its share of each zone. Then the map is each position's own contribution to the
    logit, gradient x activation (HiResCAM, Draelos and Carin 2020), the sum of its zones' shares: positions
    outside the lungs do not enter the logit, so they get no heat. The map shows what the verdict read, not the
    channel-mean gradient spread over places it never read."""
    sign = 1.0 if positive else -1.0
    if positions is None:
        cam = np.maximum(activations @ (sign * weights).astype(activations.dtype), 0.0)
    else:
        per_zone = activations @ (sign * weights).astype(activations.dtype).T  # (h, w, zones)
        cam = np.maximum((per_zone * np.moveaxis(positions, 0, -1)).sum(axis=-1), 0.0)
    return (cam / (cam.max() + EPS)).astype(np.float32)


MARGIN = crop_box(IMG_SIZE)[0] / IMG_SIZE  # the fraction of each side the model does not see


def heat_in_image_frame(heat: np.ndarray, height: int, width: int, margin: float = MARGIN) -> np.ndarray:
    """The heatmap (of the model's view: the image minus `margin` on every side) at the image's size."""
    full = np.zeros((height, width), np.float32)
    top, left = int(round(height * margin)), int(round(width * margin))
    inner = (max(1, width - 2 * left), max(1, height - 2 * top))
    full[top:top + inner[1], left:left + inner[0]] = cv2.resize(heat.astype(np.float32), inner,
                                                                interpolation=cv2.INTER_CUBIC)
    return np.clip(full, 0.0, 1.0)


def overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.5, margin: float = MARGIN) -> np.ndarray:
    """RGB uint8 at the image's own size and aspect: the heatmap blended over the X-ray.

    Blending is weighted by the heat itself, so cold regions (and the margin the
    model never sees) show the X-ray unchanged; only what drove the score is coloured.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    height, width = gray.shape[:2]
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if gray.ndim == 2 else gray
    heat_full = heat_in_image_frame(heat, height, width, margin)
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(heat_full * 255), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    alpha = heat_full * np.float32(opacity)
    # One OpenCV pass with per-pixel weights, not NumPy float arrays: full-size films are large
    # (tools/bench.py times this against keras-io's float overlay).
    return cv2.blendLinear(base, colours, 1.0 - alpha, alpha)
