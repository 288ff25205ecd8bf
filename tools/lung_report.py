"""The lung-field head, measured: Dice by cross-validation on lung_masks (decoders trained like train.py's),
then, with the bundle's own lung head, a montage of its masks on shift_dev films and where the bundle's
Grad-CAM heat falls relative to those lungs; and, on the lung_masks films themselves (adults), the heat inside
their drawn masks beside the heat inside the head's lung fields, to see how far the fields flatter the figure.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_report \
        [--folds 5] [--views 8] [--epochs 25] [--montage docs/lung_masks_shift_dev.jpg]

About 40 minutes here (5 decoder fits); --folds 0 skips the cross-validation (2 minutes).

Folds are by image (lung_masks has no patient ids). Dice is on the plain (unaugmented) view of each held-out
film, in the model's view (224 px, outer 10% cut), mask thresholded at 0.5.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from tools.shared_data import SHARED


def cross_validate(pairs, feats, targets, args) -> list[float]:
    from pneumo.model.lung_decoder import build_decoder
    from pneumo.train.fit_lungs import dice, fit_decoder, model_view_pair, predict_masks

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
    parser.add_argument("--folds", type=int, default=5, help="0: skip the cross-validation")
    parser.add_argument("--views", type=int, default=8, help="augmented views per training film")
    parser.add_argument("--epochs", type=int, default=25, help="as train.py --lung-epochs")
    parser.add_argument("--montage", default=None, help="write masks on shift_dev films to this JPEG")
    parser.add_argument("--model", default=None, help="bundle whose lung head draws the montage and measures the "
                        "heat (default: weights/)")
    args = parser.parse_args(argv)
    from pneumo import import_tensorflow_quietly

    import_tensorflow_quietly()
    from pneumo.infer.predictor import Predictor
    from pneumo.model.lung_decoder import feature_function
    from pneumo.train.fit_lungs import load_pairs, views

    predictor = Predictor.load(args.model)
    if predictor.decoder is None:
        raise ValueError("the bundle has no lung head: train it with `python train.py ... --lung-masks DIR`.")
    features = feature_function(predictor.model)
    if args.folds:
        pairs = load_pairs(SHARED / "lung_masks")
        feats, targets = views(pairs, features, args.views, seed=0)  # once: every fold reads them
        scores = cross_validate(pairs, feats, targets, args)
        print(f"Dice, {args.folds}-fold CV over {len(pairs)} films: mean {np.mean(scores):.3f}, median "
              f"{np.median(scores):.3f}, 10th percentile {np.percentile(scores, 10):.3f}, min {np.min(scores):.3f}",
              flush=True)
        del feats
    heat_in_lungs(predictor, args)
    heat_in_drawn_masks(predictor)
    return 0


def heat_in_lungs(predictor, args) -> None:
    """With the bundle's own lung head: on shift_dev, the share of Grad-CAM heat inside the lungs vs their area."""
    from pneumo.infer import lung_fields
    from pneumo.infer.predictor import predict_paths
    from pneumo.io import read_image
    from pneumo.io.folders import scan_class_folder
    from pneumo.preprocess import model_view

    samples = scan_class_folder(SHARED / "shift_dev")
    shares, areas, edges, tiles, hulls, raw, flagged = [], [], [], [], [], [], 0
    for sample, (_, prediction, _) in zip(samples, predict_paths(predictor, [s.path for s in samples], "shift_dev",
                                                                  with_cam=True)):
        flagged += "no plausible pair" in " ".join(prediction.chest_reasons)
        if sample.label == 1 and prediction.side == "PNEUMONIA":
            shares.append(prediction.heat_in_lungs)
            areas.append(float(prediction.lung_fields.mean()))
            hull = hull_of_both(prediction.lung_fields)
            hulls.append((lung_fields.heat_in_lungs(prediction.heatmap, hull), float(hull.mean())))
            aerated = (prediction.lungs >= 0.5).astype(np.uint8)
            raw.append((lung_fields.heat_in_lungs(prediction.heatmap, aerated), float(aerated.mean())))
            if prediction.reads_lungs_only:
                edges.append(edge_positions(prediction))
        if sum(label == sample.label for label, _ in tiles) < 8 and sample.path.name.endswith(("1.jpeg", "7.jpeg")):
            view = model_view(read_image(sample.path).gray)
            tiles.append((sample.label, _outlined(view, prediction.lung_fields)))
    print(f"shift_dev, {len(shares)} pneumonia films called PNEUMONIA: heat inside the predicted lungs "
          f"{np.mean(shares):.1%} (median {np.median(shares):.1%}); lung area (a uniform map's share) "
          f"{np.mean(areas):.1%}")
    heat, area = np.mean(raw, axis=0)
    print(f"  inside the head's raw lung map (>= 0.5: aerated lung, tighter than the fields): {heat:.1%}; its area "
          f"{area:.1%}")
    heat, area = np.mean(hulls, axis=0)
    print(f"  inside one convex hull of both lungs (the measure of shared/notes/measured-levers.md, there with an "
          f"independent lung model): {heat:.1%}; its area {area:.1%}")
    if edges:
        heat, weight = np.mean(edges, axis=0)
        print(f"  the block5_conv3 positions only partly inside the lung map hold {heat:.1%} of that heat and "
              f"{weight:.1%} of the pooling weight")
    print(f"shift_dev films with no plausible pair of lungs found: {flagged} of {len(samples)}")
    if args.montage and tiles:  # top row normal children, bottom row pneumonia
        tiles = [tile for _, tile in sorted(tiles, key=lambda t: t[0])]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)  # whole rows of 8
        rows = [np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)]
        cv2.imwrite(args.montage, np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"montage: {args.montage}")


def heat_in_drawn_masks(predictor) -> None:
    """On the lung_masks films called PNEUMONIA: the heat inside the drawn masks against inside the head's fields
    and raw map. Adults, and the shipped head saw 74 of the 83 films, so the fields fit them better than a
    child's: the gap is a lower bound on how much the fields flatter the shift_dev figure."""
    from pneumo.infer.lung_fields import heat_in_lungs as share
    from pneumo.io import DecodedImage
    from pneumo.train.fit_lungs import load_pairs, model_view_pair

    found = []
    for _, gray, mask in load_pairs(SHARED / "lung_masks"):
        prediction = predictor.analyze(DecodedImage(gray, "PNG"), with_cam=True)
        if prediction.side != "PNEUMONIA":
            continue
        drawn = cv2.resize(model_view_pair(gray, mask, None)[1].astype(np.float32), prediction.lungs.shape[::-1],
                           interpolation=cv2.INTER_AREA) >= 0.5
        regions = (drawn, prediction.lung_fields, prediction.lungs >= 0.5, hull_of_both(drawn),
                   hull_of_both(prediction.lung_fields))
        found.append([share(prediction.heatmap, m.astype(np.uint8)) for m in regions]
                     + [float(m.mean()) for m in regions])
    heat = np.mean(found, axis=0)
    print(f"lung_masks (adults), {len(found)} films called PNEUMONIA: heat inside the drawn masks {heat[0]:.1%} "
          f"(area {heat[5]:.1%}); inside the head's lung fields {heat[1]:.1%} (area {heat[6]:.1%}); inside its raw "
          f"lung map {heat[2]:.1%} (area {heat[7]:.1%})")
    print(f"  inside one convex hull of both drawn masks {heat[3]:.1%} (area {heat[8]:.1%}); of both lung fields "
          f"{heat[4]:.1%} (area {heat[9]:.1%})")

def edge_positions(prediction) -> tuple[float, float]:
    """(share of the heat, share of the pooling weight) in the block5_conv3 positions that straddle the lung map's
    edge (the positions the lung-zone pooling weighs by their share inside the lungs)."""
    from pneumo.model.pooling import cell_weights

    heat = prediction.heatmap
    weight = cell_weights(prediction.lungs[None], heat.shape)[0]
    edge = (weight > 0) & (weight < 1)
    return float(heat[edge].sum() / heat.sum()), float(weight[edge].sum() / weight.sum())


def hull_of_both(fields: np.ndarray) -> np.ndarray:
    """One convex hull around both lung fields (it takes in the mediastinum between them)."""
    hull = np.zeros(fields.shape, np.uint8)
    points = cv2.findNonZero(fields.astype(np.uint8))
    if points is not None:
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull


def _outlined(view: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.resize(view, (160, 160)), cv2.COLOR_GRAY2BGR)
    small = cv2.resize(lungs.astype(np.uint8), (160, 160), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return cv2.drawContours(rgb, contours, -1, (0, 220, 255), 1)


if __name__ == "__main__":
    sys.exit(main())
