"""What the lung-field map says about one film, as small pure functions: the lung fields, the share of the
Grad-CAM heat that falls inside them, whether a plausible pair of lungs is there at all, and their outline.

The lung map (pneumo.model.lung_decoder) and the heatmap both cover the model's view: the film resized to the
input size with the outer margin cut. Both are upsampled to a common grid before they are compared.
"""

from __future__ import annotations

import cv2
import numpy as np

from .gradcam import EPS, MARGIN, heat_in_image_frame

MIN_SIDE_AREA = 0.03  # each lung: at least this share of the model's view (children's lungs fill ~15-25% each)
NO_LUNGS = "no plausible pair of lung fields was found"
# The head is sure of chest films: more than 30% of the view between 0.1 and 0.9 in 1 of the 5,216 training children
# (at most 17% in the adult films); it hesitates so on crops of a retina photo (docs/safety.md).
MAX_UNSURE = 0.30
MEDIASTINUM_ROWS = 0.15  # a column in the middle third with lung in fewer rows than this is mediastinum


def lung_fields(lungs: np.ndarray) -> np.ndarray:
    """The lung fields as a 0/1 mask: on each side of the mediastinum, the convex hull of the largest lung region.

    The head finds aerated lung; a consolidated lobe (what pneumonia looks like) is dark in its map, so
    taking the map as it is would put the heat of an infiltrate "outside the lungs". The hull of each lung
    fills those gaps. The two lungs often touch in the map (over the apices or the heart), so the map is
    first opened (specks go), columns of the middle third with little lung are cleared (bridges go) and it
    is cut at the emptiest column; the largest region only, so a speck over the stomach does not stretch a hull."""
    inside = cv2.morphologyEx((lungs >= 0.5).astype(np.uint8), cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    height, width = inside.shape
    middle = inside[:, width // 3: width - width // 3]  # a view: edits reach `inside`
    counts = middle.sum(axis=0)
    middle[:, counts < MEDIASTINUM_ROWS * height] = 0  # a thin bridge between the lungs is not lung
    lowest = np.flatnonzero(counts == counts.min())
    cut = width // 3 + int(lowest[len(lowest) // 2])  # the middle of the emptiest columns
    fields = np.zeros_like(inside)
    for columns in (slice(0, cut), slice(cut + 1, None)):  # the cut column itself is mediastinum
        count, labels, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(inside[:, columns]))
        if count < 2:
            continue
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        hull = np.zeros(labels.shape, np.uint8)  # its own contiguous array: OpenCV draws into a copy of a view
        cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero((labels == largest).astype(np.uint8))), 1)
        fields[:, columns] = hull
    return fields


def heat_in_lungs(heat: np.ndarray, fields: np.ndarray) -> float:
    """Share of the heat (h, w) inside the lung fields (a `lung_fields` mask, at its resolution)."""
    spread = cv2.resize(heat.astype(np.float32), fields.shape[::-1], interpolation=cv2.INTER_CUBIC).clip(0, None)
    return float(spread[fields == 1].sum() / (spread.sum() + EPS))


def lung_reasons(lungs: np.ndarray) -> list[str]:
    """[NO_LUNGS] unless each half of the view (left, right) holds enough lung and the head is sure where it is;
    else [].

    By halves, not by connected components: the two lungs often touch in the map (a thin bridge over the
    mediastinum), and a consolidated lung is still partly found."""
    inside = lungs >= 0.5
    half = inside.shape[1] // 2
    left, right = inside[:, :half].sum() / inside.size, inside[:, half:].sum() / inside.size
    unsure = float(((lungs > 0.1) & (lungs < 0.9)).mean())
    return [] if min(left, right) >= MIN_SIDE_AREA and unsure <= MAX_UNSURE else [NO_LUNGS]


EDGE = 2 / 56  # the outermost columns of the view, as a share of its width: 2 of the lung map's 56
MAX_EDGE_LUNG = 0.5  # lung in more than half of them on both sides: the film is cut through the lungs
CUT = "the lung fields run into both sides of the image, as in a film cut through the chest"


def framing_reasons(lungs: np.ndarray) -> list[str]:
    """[CUT] when the lungs fill the outermost columns of the view on both sides, else [].

    The view already lacks the film's outer 10%, and the training films are framed tightly, so one lung reaching an
    edge is common; both lungs filling both edges is what a crop to the chest does (docs/safety.md#framing)."""
    inside = lungs >= 0.5
    k = max(1, round(inside.shape[1] * EDGE))
    both = min(inside[:, :k].mean(), inside[:, -k:].mean())
    return [CUT] if both > MAX_EDGE_LUNG else []


def outline(rgb: np.ndarray, fields: np.ndarray, margin: float = MARGIN, colour=(0, 220, 255)) -> np.ndarray:
    """`rgb` (the film or its overlay, at the film's size) with the outline of the lung fields (a `lung_fields`
    mask) drawn on a copy."""
    height, width = rgb.shape[:2]
    inside = (heat_in_image_frame(fields.astype(np.float32), height, width, margin) >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(rgb.copy(), contours, -1, colour, max(1, round(max(height, width) / 400)))
