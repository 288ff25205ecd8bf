"""Crop to the lung box before the classifier? Issue 12's options (a) and (c), measured beside (b), the shipped one.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_crop

Preprocessing v3 as a second pass: the shipped lung head's map of the v2 input (the first pass, cached by
tools.lung_pooling) gives the lung fields; their bounding box plus a margin on each side is cut from the
224 px whole-image resize (the same one v2 cuts its fixed 10% border from) and resized to 224 bicubically.
The crops go through the trunk and the lung head once more (cached in ~/.cache/pneumo/experiments: 19 min 12 s
on a 2-core AVX2 machine with the first pass cached, then ~2 minutes per seed). Heads: BN -> Dense(1), L2 0.01,
on log1p of
- (a) the global average of the crop's block5_pool;
- (c) its average over the crop's own lung fields, as `--pooling lungs` computes it;
fitted on train.py's patient-wise fit split, thresholds at sensitivity95 on its validation patients; shift_dev
is only scored. Heat in lungs, on shift_dev pneumonia films called PNEUMONIA: the crop's heatmap put back where
the crop came from, against the first pass's lung fields (the fields the other rows use; heat falling outside the
v2 view counts as outside), and against the crop's own lung fields.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np

from pneumo.preprocess import crop_box
from tools.lung_pooling import _row, cached_maps, film_heats, fit, pooled, pooling_positions, setup, tool_parser


def lung_box(lungs: np.ndarray, margin: float) -> tuple[float, float, float, float] | None:
    """(top, bottom, left, right) of the lung fields in [0, 1] v2-view coordinates, widened by `margin` of the
    box's own size on each side; None when no lung fields are found (the film is then not cropped)."""
    from pneumo.infer.lungs import lung_fields

    rows, cols = np.nonzero(lung_fields(lungs))
    if rows.size == 0:
        return None
    h, w = lungs.shape
    top, bottom, left, right = rows.min() / h, (rows.max() + 1) / h, cols.min() / w, (cols.max() + 1) / w
    dy, dx = margin * (bottom - top), margin * (right - left)
    return top - dy, bottom + dy, left - dx, right + dx


def whole_pixels(box, size: int) -> tuple[int, int, int, int]:
    """A v2-view box -> pixel bounds in the whole-image resize (the v2 view is its centre after the border cut)."""
    low, high = crop_box(size)
    to_whole = lambda u: int(np.clip(round(low + u * (high - low)), 0, size))  # noqa: E731
    top, bottom, left, right = (to_whole(u) for u in box)
    return top, max(bottom, top + 8), left, max(right, left + 8)


def cropped_input(path, box, size: int = 224) -> np.ndarray:
    """The model input of the lung box: whole-image bicubic resize (the contract's first step), box, resize."""
    from pneumo.io import read_image
    from pneumo.preprocess import _bicubic, normalize, to_model_input

    image = read_image(path)
    if box is None:
        return to_model_input(image, size)
    gray = image.gray if image.gray.shape == (size, size) else _bicubic(image.gray, size)
    top, bottom, left, right = whole_pixels(box, size)
    return normalize(_bicubic(np.ascontiguousarray(gray[top:bottom, left:right]), size))


def crop_heat_in_lungs(heat: np.ndarray, box, first_lungs: np.ndarray, size: int = 224) -> float:
    """Share of a crop's heatmap inside the first pass's lung fields, both placed in the whole-image frame."""
    from pneumo.infer.lungs import lung_fields

    low, high = crop_box(size)
    fields = np.zeros((size, size), np.float32)
    fields[low:high, low:high] = cv2.resize(lung_fields(first_lungs).astype(np.float32), (high - low, high - low),
                                            interpolation=cv2.INTER_NEAREST)
    placed = np.zeros((size, size), np.float32)
    if box is None:
        top, bottom, left, right = low, high, low, high
    else:
        top, bottom, left, right = whole_pixels(box, size)
    placed[top:bottom, left:right] = cv2.resize(heat.astype(np.float32), (right - left, bottom - top),
                                                interpolation=cv2.INTER_CUBIC).clip(0, None)
    return float(placed[fields == 1].sum() / (placed.sum() + 1e-7))


def main(argv=None) -> int:
    parser = tool_parser(__doc__, seeds=1)
    parser.add_argument("--margin", type=float, default=0.08, help="of the box's size, each side (default 0.08)")
    parser.add_argument("--whole", action="store_true", help="no lung box: the whole-image resize, nothing cut "
                        "(one pass would do in a product: the lung map comes from the same pass)")
    args = parser.parse_args(argv)
    if not 0 <= args.margin <= 0.5:
        parser.error(f"--margin must be between 0 and 0.5, got {args.margin}")
    found = setup(args.model)
    if args.whole:  # the box of the whole-image resize, in v2-view coordinates: nothing cut
        low, high = crop_box(224)
        whole = (-low / (high - low), (224 - low) / (high - low)) * 2
        boxes = {name: [whole] * len(found.maps[name]["lungs"]) for name in ("train", "shift")}
    else:
        boxes = {name: [lung_box(m / 255.0, args.margin) for m in found.maps[name]["lungs"]]
                 for name in ("train", "shift")}
    tag = "whole" if args.whole else f"crop{round(args.margin * 100):02d}"
    crops = {}
    for name, cache_name, samples, keep in (("train", "train", found.train, False),
                                            ("shift", "shift_dev", found.shift, True)):
        box_of = dict(zip([s.path for s in samples], boxes[name]))
        crops[name] = cached_maps(f"{cache_name}-{tag}", list(box_of), found.trunk, keep, found.key,
                                  make_input=lambda path, box_of=box_of: cropped_input(path, box_of[path]))
    _report(found, crops, boxes, args.margin, args.seeds, args.whole)
    return 0


def _report(found, crops, boxes, margin: float, seeds: int, whole: bool) -> None:
    from pneumo.infer.lungs import lung_fields
    from pneumo.train import metrics

    y, rows_of = found.y, found.rows
    uncropped = {name: sum(b is None for b in boxes[name]) for name in boxes}
    own_area = np.mean([lung_fields(m / 255.0).mean() for m in crops["shift"]["lungs"]])
    name = "whole image, no cut" if whole else f"lung box + {margin:.0%} (v3)"
    print(f"{name}; films with no lung fields (left uncropped): "
          f"train/ {uncropped['train']}, shift_dev {uncropped['shift']}; the crops' own lung fields cover "
          f"{own_area:.1%} of them (what a uniform heatmap scores in the crop)")
    print("| input | pooling | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "heat in lungs, back in the v2 frame / in the crop |\n|---|---|---|---|---|---|")
    for masked in (False, True):
        features = {name: pooled(crops[name], masked) for name in ("train", "shift")}
        fx, vx = (np.log1p(features["train"][rows_of[s]]) for s in ("fit", "val"))
        for seed in range(seeds):
            head = fit("linear", fx, y["fit"], vx, y["val"], seed)
            val_p = head.predict(vx, verbose=0)[:, 0]
            shift_p = head.predict(np.log1p(features["shift"]), verbose=0)[:, 0]
            threshold = metrics.choose_threshold(y["val"], val_p, "sensitivity95")
            mapped, own = _heat(head, features["shift"], crops["shift"], found.maps["shift"]["lungs"],
                                boxes["shift"], y["shift"], shift_p, threshold, masked)
            _row(name, f"{'lung-masked average' if masked else 'GAP'} | {seed}",
                 threshold, y, val_p, shift_p, mapped, f" / {own:.1%}")


def _heat(head, features, maps, first_lungs, boxes, labels, probs, threshold: float, masked: bool):
    """Mean share of heat inside the lungs over shift_dev pneumonia films called PNEUMONIA (the lung_pooling way):
    (against the first pass's lung fields, the crop's heat put back where it came from; against the crop's own)."""
    from pneumo.infer.lungs import heat_in_lungs, lung_fields

    chosen = np.flatnonzero((labels == 1) & (probs >= threshold))
    heats = film_heats(head, features, maps["activations"], chosen, pooling_positions(maps) if masked else None)
    mapped = [crop_heat_in_lungs(h, boxes[k], first_lungs[k] / 255.0) for h, k in zip(heats, chosen)]
    own = [heat_in_lungs(h, lung_fields(maps["lungs"][k] / 255.0)) for h, k in zip(heats, chosen)]
    return float(np.mean(mapped)), float(np.mean(own))


if __name__ == "__main__":
    sys.exit(main())
