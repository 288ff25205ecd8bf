"""`pneumo predict|evaluate|calibrate|deploy-space` (also `python -m pneumo ...`).

predict and evaluate: JSON on stdout; calibrate: a summary on stdout; progress and errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from .. import import_tensorflow_quietly
from ..hub import run_deploy
from ..infer.age import parse_age
from ..infer.gradcam import heat_in_image_frame
from ..infer.predictor import Predictor, predict_paths
from ..io.folders import resolve_eval_folder, scan_class_folder, scan_images
from ..stats.metrics import band_stats, binary_metrics, ranking_bound
from .calibrate import check_folder, run_calibrate

PREDICT_FIELDS = """output fields (one JSON object per line):
  file              the path as given
  label             NORMAL or PNEUMONIA; null when the film is not assessed (read warnings, not the score)
  probability       the pneumonia score, 0-1; null when not assessed
  threshold         the operating threshold: at or above it the model says PNEUMONIA
  threshold_source  "validation" or "calibrated: FOLDER, N films" (pneumo calibrate)
  borderline        true when the score lies in the band around the threshold where a threshold set on other
                    patients could call it the other way (both sides); null if not assessed
  assessed          true only when the film looks like a frontal chest X-ray of a child (both checks below)
  looks_like_chest_xray, in_population   the two checks (the second by the age where known, else the pixels;
                    null for an image that is not a chest X-ray)
  warnings          plain sentences: why the film is not assessed, or the caution an assessed film comes with
  heat_in_lungs     share of the Grad-CAM heat inside the lung fields (null without a lung head, or not assessed)
  age, age_source   the age used (years) and where from: "declared" (--age), "dicom" (the header) or null
  heatmap           with --heatmaps: the written PNG (null when not assessed: nothing is written)
  error             instead of all the above, for a file that cannot be read (exit code 1)"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pneumo", description="Pneumonia chest X-ray model.")
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="one JSON line per file", epilog=PREDICT_FIELDS,
                             formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="Scores chest X-rays (JPEG, PNG, BMP, TIFF, WebP, or DICOM with or without "
                                         ".dcm) and prints one JSON object per file, in input order.")
    predict.add_argument("files", nargs="+", type=Path, metavar="FILE_OR_FOLDER",
                         help="images, or folders: every image below a folder, in sorted order")
    predict.add_argument("--heatmaps", type=Path, default=None, metavar="DIR",
                         help="also write each file's Grad-CAM heatmap (the one the app's overlay shows) to DIR as a "
                              "16-bit grayscale PNG at the file's own size, named after it (scan.dcm -> scan.png)")
    evaluate = sub.add_parser("evaluate", help="metrics on a labelled folder, one JSON object")
    evaluate.add_argument("folder", type=Path, help="folder with NORMAL/ and PNEUMONIA/, or a Kaggle root (uses test/)")
    for command in (predict, evaluate):
        command.add_argument("--age", type=float, default=None, metavar="YEARS",
                             help="the patients' age in years, for every file (1-5 is the intended use): it decides "
                                  "whether a film is assessed where the pixels cannot (a DICOM header that gives "
                                  "another age makes the film not assessed)")
    calibrate = sub.add_parser(
        "calibrate", help="a copy of the bundle with its threshold set on your site's own labelled films",
        description="Scores FOLDER's films, sets the threshold so that sensitivity stays at the target on new "
                    "patients of the site (docs/usage.md), prints what to expect, and writes a copy of the bundle "
                    "with that threshold to --output. The source bundle is never changed.")
    calibrate.add_argument("folder", type=Path, help="folder with NORMAL/ and PNEUMONIA/ (any formats predict reads): "
                           "at least 59 PNEUMONIA (for the 0.95 target) and 30 NORMAL films the model assesses, of 20+ "
                           "patients each")
    calibrate.add_argument("--output", type=Path, required=True, help="new folder for the calibrated bundle")
    calibrate.add_argument("--sensitivity", type=float, default=0.95, help="target sensitivity (default 0.95)")
    for command in (predict, evaluate, calibrate):
        command.add_argument("--model", default=None, help="bundle folder or hf://USER/REPO "
                             "(default: env PNEUMO_MODEL, else weights/)")
        command.add_argument("--backbone-weights", default=None,
                             help="default: env PNEUMO_BACKBONE_WEIGHTS, else imagenet")
    space = sub.add_parser("deploy-space", help="upload the app and a bundle to a Hugging Face Space over HTTP")
    space.add_argument("repo_id",
                       help="the Space as USER/NAME (created if needed; token from HF_TOKEN or hf auth login)")
    space.add_argument("--private", action="store_true", help="create the Space private")
    space.add_argument("--model", default=None, help="local bundle folder shipped as weights/ (default: weights/)")
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy-space":
            return run_deploy(args)
        samples = None
        # A bad age is refused before the model loads.
        declared = parse_age(args.age) if args.command in ("predict", "evaluate") else None
        if args.command == "predict":  # a folder without images too
            args.files = with_folders_expanded(args.files)
        if args.command == "calibrate":  # a folder that can never do is refused before the model loads
            samples = check_folder(args.folder, args.output, args.sensitivity)
        import_tensorflow_quietly()
        predictor = Predictor.load(args.model, args.backbone_weights)
        if args.command == "predict":
            return run_predict(predictor, args.files, args.heatmaps, declared)
        if args.command == "calibrate":
            return run_calibrate(predictor, args.folder, samples, args.output, args.sensitivity)
        return run_evaluate(predictor, args.folder, declared)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_predict(predictor, files: list[Path], heatmaps: Path | None = None, declared_age: float | None = None) -> int:
    files = with_folders_expanded(files)
    targets = heatmap_paths(files, heatmaps) if heatmaps else {}
    failures = 0
    # Grad-CAM comes from the same pass (no extra backbone work): needed for heatmaps and for heat_in_lungs.
    with_cam = heatmaps is not None or predictor.decoder is not None
    for path, prediction, error in predict_paths(predictor, files, with_cam=with_cam, declared_age=declared_age):
        failures += error is not None
        record = {"file": str(path), "error": error} if error else {"file": str(path), **prediction.to_json()}
        if heatmaps and not error:  # none for a film the model's answer does not apply to
            record["heatmap"] = str(write_heatmap(targets[path], prediction.heatmap, prediction.image_size)) \
                if prediction.assessed else None
        print(json.dumps(record), flush=True)
    return 1 if failures else 0


def with_folders_expanded(paths: list[Path]) -> list[Path]:
    """The files as given, each folder replaced by every image below it, sorted (as `evaluate` reads folders); a
    folder without images is refused before any work."""
    out = []
    for path in paths:
        out += [s.path for s in scan_images(path)] if Path(path).is_dir() else [Path(path)]
    return out


def heatmap_paths(files: list[Path], folder: Path) -> dict[Path, Path]:
    """DIR/<file stem>.png per input; refused up front if two inputs would write the same file."""
    targets = {path: Path(folder) / f"{Path(path).stem}.png" for path in files}
    clashes = sorted(str(t) for t, n in Counter(targets.values()).items() if n > 1)
    if clashes:
        raise ValueError(f"--heatmaps would write {', '.join(clashes)} for more than one input file (same name in "
                         "different folders or with different extensions); predict them in separate runs.")
    Path(folder).mkdir(parents=True, exist_ok=True)
    return targets


def write_heatmap(target: Path, heat, size: tuple[int, int]) -> Path:
    """The heatmap at the image's (width, height), 0..1 scaled to 0..65535, as a 16-bit grayscale PNG."""
    full = heat_in_image_frame(heat, size[1], size[0])
    if not cv2.imwrite(str(target), np.round(full * 65535).astype(np.uint16)):
        raise ValueError(f"could not write the heatmap '{target}'.")
    return target


def run_evaluate(predictor, folder: Path, declared_age: float | None = None) -> int:
    samples = scan_class_folder(resolve_eval_folder(folder))
    label_of = {s.path: s.label for s in samples}
    labels, probs, skipped, checks, shares = [], [], [], [], []
    for path, prediction, error in predict_paths(predictor, [s.path for s in samples], desc="evaluate",
                                                 with_cam=predictor.decoder is not None, declared_age=declared_age):
        if error is not None:
            skipped.append({"file": str(path), "error": error})
            print(f"skipped {path}: {error}", file=sys.stderr)
        else:
            labels.append(label_of[path])
            probs.append(prediction.probability)
            checks.append((prediction.looks_like_chest_xray, prediction.looks_cropped, prediction.in_population,
                           prediction.assessed))
            if label_of[path] == 1 and prediction.side == "PNEUMONIA" and prediction.heat_in_lungs is not None:
                shares.append(prediction.heat_in_lungs)
    if not labels:
        raise ValueError(f"no readable images in '{folder}'.")
    # Metrics over every readable film; the counts say how many the model should not have answered.
    metrics = binary_metrics(labels, probs, predictor.threshold)
    metrics["borderline"] = band_stats(labels, probs, predictor.threshold, predictor.band)
    # Fitted on this folder's labels, so never a result: how far a threshold rule alone could go here.
    metrics["bound_at_sensitivity95"] = ranking_bound(labels, probs)
    counts = {"outside_population": sum(not inside for *_, inside, _ in checks),
              "not_chest_xray": sum(not chest for chest, *_ in checks),
              "looks_cropped": sum(cropped for _, cropped, *_ in checks),
              "not_assessed": sum(not assessed for *_, assessed in checks),
              # where the heat of correctly called pneumonia falls (with a lung head): mean share inside the lungs
              "heat_in_lungs_true_pneumonia": round(float(np.mean(shares)), 4) if shares else None}
    source = predictor.bundle.threshold_source
    block = predictor.bundle.config.calibration
    if block:  # what the training's own threshold gives here too: for a calibration folder, the honest figures
        metrics["at_validation_threshold"] = binary_metrics(labels, probs, block.factory_threshold)
    if block and block.folder == Path(folder).resolve().name:
        print(f"note: the threshold was set on a folder of this name ({source}): figures at it are in-sample, "
              "not a measurement; the AUC is not affected.", file=sys.stderr)
    print(json.dumps({"folder": str(folder), **metrics, "threshold_source": source,
                      "trunk_dtype": predictor.bundle.precision, **counts, "skipped": skipped}))
    return 0
