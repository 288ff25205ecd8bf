"""Grad-CAM sanity on shift_dev: do pneumonia heatmaps sit inside the thorax, or on borders and markers?

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.cam_sanity [--montage docs/gradcam_shift_dev.png]

For every PNEUMONIA image of shift_dev that the model calls PNEUMONIA, the heatmap is resized to the
image and split into: the central region (x in 15-85%, y in 10-90%: the thorax on these films), the
outer 10% border, and the four 15% corners (where the "R" markers and text sit). Random heatmaps would put
56% of their mass in the central region over the whole image. Since preprocessing v2 the model does not see the outer ~10%
(pneumo.config.CROP_MARGIN), so the border share is ~0 by construction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHIFT = ROOT.parent / "shared" / "data" / "shift_dev"


def region_masses(heat: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    from pneumo.infer.gradcam import heat_in_image_frame

    h, w = shape
    full = heat_in_image_frame(heat, h, w)  # the model's view sits inside the cropped margin
    total = full.sum() + 1e-7
    yy, xx = np.mgrid[:h, :w]
    fx, fy = xx / w, yy / h
    central = (fx > 0.15) & (fx < 0.85) & (fy > 0.10) & (fy < 0.90)
    border = (fx < 0.1) | (fx > 0.9) | (fy < 0.1) | (fy > 0.9)
    corners = ((fx < 0.15) | (fx > 0.85)) & ((fy < 0.15) | (fy > 0.85))
    return {name: float(full[mask].sum() / total) for name, mask in
            (("central", central), ("border", border), ("corners", corners))}


def main() -> None:
    from pneumo import gradcam
    from pneumo.io.folders import scan_class_folder
    from pneumo.io import read_image
    from pneumo.infer.predictor import Predictor

    parser = argparse.ArgumentParser()
    parser.add_argument("--montage", type=Path, help="save a grid of overlays (PNG)")
    args = parser.parse_args()
    predictor = Predictor.load()
    rows, tiles = [], []
    for sample in scan_class_folder(SHIFT):
        if sample.label != 1:
            continue
        image = read_image(sample.path)
        result = predictor.analyze(image)
        if result.label != "PNEUMONIA":
            continue
        rows.append(region_masses(result.heatmap, image.gray.shape))
        if len(tiles) < 24:
            tiles.append(cv2.resize(gradcam.overlay(image.gray, result.heatmap, 0.6), (160, 160)))
    central = np.array([r["central"] for r in rows])
    uniform = region_masses(np.ones((14, 14), np.float32), (1000, 1000))
    print(f"correctly called pneumonia cases: {len(rows)}; a uniform heatmap over what the model sees would put "
          f"{uniform['central']:.2f} central, {uniform['border']:.2f} border, {uniform['corners']:.2f} corners")
    for name in ("central", "border", "corners"):
        values = np.array([r[name] for r in rows])
        print(f"heatmap mass in {name:<8}: mean {values.mean():.2f}, median {np.median(values):.2f}")
    print(f"cases with >= 50% of the mass in the central region: {(central >= 0.5).mean():.0%}; "
          f">= 80%: {(central >= 0.8).mean():.0%}")
    if args.montage and tiles:
        grid = np.vstack([np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles) - len(tiles) % 8, 8)])
        cv2.imwrite(str(args.montage), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f"montage: {args.montage}")


if __name__ == "__main__":
    main()
