"""Bundles side by side on the films a decision reads: one markdown row each, by the same code.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 \
        python -m tools.compare_bundles weights /path/to/other_bundle [...]

Per bundle (each served as it ships: ONNX Runtime, its own precision):
- shift_dev (other patients): ROC AUC; accuracy / sensitivity / specificity at the validation threshold (the one
  train.py chose) and at the bundle's own threshold (after `pneumo calibrate`, if it was calibrated);
- heat: the mean share of Grad-CAM heat inside the lung fields, on shift_dev pneumonia films called PNEUMONIA;
- the checks: films flagged as not a chest X-ray / outside the population among the val/ originals, shift_dev and
  the held-out adult_dev patients (as train.py's --adult-holdout split them), and the non-chest images of
  tools.ood_report caught;
- lung Dice: the lung head on the lung_masks films train.py held out of it (every 10th), in the model's view.
Then, against the first bundle: the largest probability change and the verdicts that flip on shift_dev, and the
Dice between the two bundles' lung fields there. About 4 minutes per bundle on 2 cores.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from pneumo.io.folders import scan_class_folder
from pneumo.train.data import ADULT_FOLDERS
from tools.shared_data import SHARED, training_data


def films(bundle_config) -> dict[str, list]:
    data = training_data(bundle_config.recipe)
    return {"shift_dev": scan_class_folder(SHARED / "shift_dev"), "val": data.measured["kaggle_val"],
            "adults": data.outside[ADULT_FOLDERS][1]}


def measure(source: str) -> dict:
    from pneumo.infer.predictor import Predictor, predict_paths
    from pneumo.stats import metrics

    predictor = Predictor.load(source, backend="onnx")
    config = predictor.bundle.config
    out = {"bundle": source, "precision": predictor.bundle.precision}
    found = {}
    for name, samples in films(config).items():
        results = list(predict_paths(predictor, [s.path for s in samples], name, with_cam=name == "shift_dev"))
        found[name] = (np.array([s.label for s in samples]), [p for _, p, _ in results])
    labels, shift = found["shift_dev"]
    probs = np.array([p.probability for p in shift])
    validation = config.metrics["validation"]["threshold"]
    out.update(probs=probs, lungs=[p.lung_fields for p in shift], auc=metrics.roc_auc(labels, probs),
               at_validation=metrics.binary_metrics(labels, probs, validation),
               at_bundle=metrics.binary_metrics(labels, probs, predictor.threshold),
               threshold=(validation, predictor.threshold))
    out["heat"] = float(np.mean([p.heat_in_lungs for y, p in zip(labels, shift) if y == 1 and p.side == "PNEUMONIA"]))
    for name, (_, predictions) in found.items():
        out[f"{name}_chest"] = (sum(not p.looks_like_chest_xray for p in predictions), len(predictions))
        out[f"{name}_population"] = (sum(not p.in_population for p in predictions), len(predictions))
    out["others_caught"] = non_chest_caught(predictor)
    out["dice"] = heldout_dice(predictor)
    return out


def non_chest_caught(predictor) -> tuple[int, int]:
    from pneumo.io import read_image
    from tools.ood_report import other_images

    caught = [not predictor.analyze(read_image(data, name), with_cam=False).looks_like_chest_xray
              for name, data in other_images().items()]
    return sum(caught), len(caught)


def heldout_dice(predictor) -> float:
    from pneumo.io import read_image
    from pneumo.train.fit_lungs import HOLDOUT_EVERY, dice, load_pairs, model_view_pair

    held = load_pairs(SHARED / "lung_masks")[::HOLDOUT_EVERY]
    size, scores = predictor.input_size, []
    for name, gray, mask in held:
        lungs = predictor.analyze(read_image(SHARED / "lung_masks" / "images" / name), with_cam=False).lungs
        lungs = cv2.resize(lungs, (size, size), interpolation=cv2.INTER_LINEAR)  # as train.py measures it
        scores.append(dice(lungs >= 0.5, model_view_pair(gray, mask, None, size=size)[1]))
    return float(np.mean(scores))


def share(pair: tuple[int, int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def row(m: dict) -> str:
    v, b = m["at_validation"], m["at_bundle"]
    return (f"| {m['bundle']} | {m['precision']} | {m['auc']:.4f} | {v['accuracy']:.3f} / {v['sensitivity']:.3f} / "
            f"{v['specificity']:.3f} ({m['threshold'][0]:.3f}) | {b['sensitivity']:.3f} / {b['specificity']:.3f} "
            f"({m['threshold'][1]:.3f}) | {m['heat']:.1%} | {share(m['val_chest'])}, {share(m['shift_dev_chest'])}, "
            f"{share(m['adults_chest'])}; others {share(m['others_caught'])} | {share(m['val_population'])}, "
            f"{share(m['shift_dev_population'])}, {share(m['adults_population'])} | {m['dice']:.3f} |")


def against(first: dict, other: dict) -> str:
    from pneumo.train.fit_lungs import dice

    flips = int(np.sum((first["probs"] >= first["threshold"][1]) != (other["probs"] >= other["threshold"][1])))
    agreement = [dice(a, b) for a, b in zip(first["lungs"], other["lungs"])]
    return (f"{other['bundle']} against {first['bundle']} on shift_dev: max |dp| "
            f"{np.abs(other['probs'] - first['probs']).max():.3f}, verdicts flipped {flips} of {len(first['probs'])} "
            f"(each at its own threshold), lung fields Dice median {np.median(agreement):.3f}, min "
            f"{np.min(agreement):.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="bundle folders or hf://USER/REPO")
    args = parser.parse_args(argv)
    found = [measure(source) for source in args.bundles]
    print("| bundle | precision | shift_dev AUC | acc / sens / spec at validation threshold | sens / spec at "
          "bundle threshold | heat in lung fields | not a chest X-ray: val/, shift_dev, adults | outside the "
          "population: val/, shift_dev, adults | lung Dice (held out) |")
    print("|---" * 9 + "|")
    for m in found:
        print(row(m))
    for other in found[1:]:
        print(against(found[0], other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
