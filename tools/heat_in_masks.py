"""Where the heat falls, measured the way a user with lung masks of their own would: run the CLI
(`python -m pneumo predict --heatmaps DIR`, the 16-bit PNG heatmaps at each file's own size), then, on the
films called PNEUMONIA (or all of them, or by their folder label), the share of each heatmap inside the drawn
lung mask, and inside one convex hull around both lungs, against the share of the film they cover (what a
uniform heatmap would score).

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.heat_in_masks \
        [../shared/data/lung_masks] [--model weights] [--all]

The folder holds images/ and masks/ with the same file names (masks: lung > 127), as ../shared/data/lung_masks.
The model runs only in the CLI: the numbers come from the files it writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from tools.appserver import ROOT
from tools.lung_report import hull_of_both
from tools.shared_data import SHARED


def shares(heat: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float]:
    """(heat inside the mask, its area, heat inside the hull of the mask, the hull's area), as fractions."""
    hull, total = hull_of_both(mask).astype(bool), heat.sum() + 1e-7
    return heat[mask].sum() / total, mask.mean(), heat[hull].sum() / total, hull.mean()


def run_cli(images: list[Path], heatmaps: Path, model: str | None, age: float | None = None) -> list[dict]:
    command = [sys.executable, "-m", "pneumo", "predict", "--heatmaps", str(heatmaps), *map(str, images)]
    if model:
        command[4:4] = ["--model", model]
    if age is not None:
        command[4:4] = ["--age", str(age)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=SHARED / "lung_masks")
    parser.add_argument("--model", default=None, help="bundle folder (default: the CLI's, weights/)")
    parser.add_argument("--all", action="store_true", help="every assessed film, not only those called PNEUMONIA")
    parser.add_argument("--age", type=float, default=None, help="declare this age for every film (the CLI's --age): "
                        "a film not assessed has no heatmap, and lung_masks' adults are not assessed without one")
    args = parser.parse_args(argv)
    images = sorted(p for p in (args.folder / "images").iterdir() if (args.folder / "masks" / p.name).is_file())
    if not images:
        raise SystemExit(f"'{args.folder}' has no images/ with masks/ of the same name.")
    with tempfile.TemporaryDirectory() as tmp:
        results = {Path(r["file"]).name: r for r in run_cli(images, Path(tmp), args.model, args.age)}
        unread = [image.name for image in images if "label" not in results.get(image.name, {})]
        if unread:
            raise ValueError(f"the CLI gave no verdict for {len(unread)} file(s): {', '.join(unread[:5])}")
        found, not_assessed = [], sum(1 for r in results.values() if not r["assessed"])
        for image in images:
            if not results[image.name]["assessed"] or (not args.all and results[image.name]["label"] != "PNEUMONIA"):
                continue
            heat = cv2.imread(str(Path(tmp) / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
            mask = cv2.imread(str(args.folder / "masks" / image.name), cv2.IMREAD_GRAYSCALE) > 127
            if heat.shape != mask.shape:
                raise ValueError(f"{image.name}: heatmap {heat.shape} and mask {mask.shape} differ in size.")
            found.append(shares(heat, mask))
    if not found:
        raise SystemExit(f"no film to measure ({not_assessed} of {len(images)} not assessed; none called PNEUMONIA: "
                         "try --all, or --age for adults' films).")
    inside, area, hull, hull_area = np.mean(found, axis=0)
    which = "assessed films" if args.all else "films called PNEUMONIA"
    print(f"{args.folder}: {len(found)} of {len(images)} {which} ({not_assessed} not assessed"
          f"{'' if args.age is None else f', age {args.age:g} declared'}), heatmaps from `pneumo predict --heatmaps`")
    print(f"  heat inside the drawn lung masks: {inside:.1%} (median {np.median([f[0] for f in found]):.1%}); "
          f"their area (a uniform map's share): {area:.1%}")
    print(f"  heat inside one convex hull of both masks: {hull:.1%}; its area: {hull_area:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
