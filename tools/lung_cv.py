"""The lung-field head, measured: Dice by cross-validation on lung_masks, a montage of its masks on shift_dev
films, and where the shipped model's Grad-CAM heat falls relative to those lungs.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_cv \
        [--folds 5] [--views 8] [--epochs 30] [--montage docs/lung_masks_shift_dev.jpg]

Folds are by image (lung_masks has no patient ids). Dice is on the plain (unaugmented) view of each held-out
film, in the model's view (224 px, outer 10% cut), mask thresholded at 0.5.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from tools.appserver import ROOT

SHARED = ROOT.parent / "shared" / "data"


def cross_validate(pairs, feats, targets, args) -> list[float]:
    from pneumo.model.lungs import build_decoder
    from pneumo.train.lungs import dice, fit_decoder, model_view_pair, predict_masks

    per_image = args.views + 1
    order = np.random.default_rng(0).permutation(len(pairs))
    scores = [0.0] * len(pairs)
    for fold in range(args.folds):
        test = set(order[fold::args.folds].tolist())
        rows = np.array([i * per_image + v for i in range(len(pairs)) if i not in test for v in range(per_image)])
        decoder = fit_decoder(build_decoder(), [f[rows] for f in feats], targets[rows], epochs=args.epochs, seed=fold)
        plain = np.array([i * per_image for i in sorted(test)])
        predicted = predict_masks(decoder, [f[plain] for f in feats])
        for i, p in zip(sorted(test), predicted):
            truth = model_view_pair(pairs[i][1], pairs[i][2], None)[1]
            scores[i] = dice(p > 0.5, truth)
        print(f"fold {fold + 1}/{args.folds}: Dice mean {np.mean([scores[i] for i in test]):.3f}", flush=True)
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--views", type=int, default=8, help="augmented views per training film")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--montage", default=None, help="write masks on shift_dev films to this JPEG")
    args = parser.parse_args(argv)
    from pneumo import import_tensorflow_quietly

    import_tensorflow_quietly()
    from pneumo.infer.predictor import Predictor
    from pneumo.model.lungs import build_feature_model
    from pneumo.train.lungs import load_pairs, views

    predictor = Predictor.load()
    feature_model = build_feature_model(predictor.model)
    pairs = load_pairs(SHARED / "lung_masks")
    feats, targets = views(pairs, feature_model, args.views, seed=0)  # once: the folds and the final fit share them
    scores = cross_validate(pairs, feats, targets, args)
    print(f"Dice, {args.folds}-fold CV over {len(pairs)} films: mean {np.mean(scores):.3f}, median "
          f"{np.median(scores):.3f}, 10th percentile {np.percentile(scores, 10):.3f}, min {np.min(scores):.3f}")
    heat_in_lungs(predictor, feature_model, feats, targets, args)
    return 0


def heat_in_lungs(predictor, feature_model, feats, targets, args) -> None:
    """Train on all pairs; on shift_dev, the share of Grad-CAM heat inside the predicted lungs vs their area."""
    from pneumo.io import read_image
    from pneumo.io.folders import scan_class_folder
    from pneumo.model.lungs import build_decoder
    from pneumo.preprocess import model_view, normalize
    from pneumo.train.lungs import fit_decoder, predict_masks

    decoder = fit_decoder(build_decoder(), feats, targets, epochs=args.epochs)
    samples = scan_class_folder(SHARED / "shift_dev")
    shares, areas, tiles = [], [], []
    for sample in samples:
        image = read_image(sample.path)
        view = model_view(image.gray)
        lungs = predict_masks(decoder, [np.asarray(a, np.float16) for a in feature_model.predict_on_batch(
            normalize(view)[None])])[0] > 0.5
        prediction = predictor.analyze(image)
        heat = cv2.resize(prediction.heatmap, view.shape[::-1], interpolation=cv2.INTER_CUBIC).clip(0, None)
        if sample.label == 1 and prediction.label == "PNEUMONIA":
            shares.append(float(heat[lungs].sum() / (heat.sum() + 1e-7)))
            areas.append(float(lungs.mean()))
        if len(tiles) < 16 and sample.path.name.endswith(("1.jpeg", "7.jpeg")):
            tiles.append(_outlined(view, lungs))
    print(f"shift_dev, {len(shares)} pneumonia films called PNEUMONIA: heat inside the predicted lungs "
          f"{np.mean(shares):.1%} (median {np.median(shares):.1%}); lung area (a uniform map's share) {np.mean(areas):.1%}")
    if args.montage and tiles:
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)  # whole rows of 8
        rows = [np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)]
        cv2.imwrite(args.montage, np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"montage: {args.montage}")


def _outlined(view: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.resize(view, (160, 160)), cv2.COLOR_GRAY2BGR)
    small = cv2.resize(lungs.astype(np.uint8), (160, 160), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(rgb, contours, -1, (0, 220, 255), 1)


if __name__ == "__main__":
    sys.exit(main())
