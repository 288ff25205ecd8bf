"""Onboarding a hospital the checks have never seen: `pneumo calibrate` on a synthetic other hospital, measured.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.site_report

The site: the bundle's pediatric validation patients (no head and no check was fitted on them), every film given
another hospital's look (`other_hospital`), which the shipped checks call unlike the training children. Half of
its patients (by patient, seeded) are the calibration folder, the other half the site's new patients. Prints a
markdown table (docs/usage.md#calibrate): the site's films assessed before and after calibration, the new patients'
sensitivity and specificity, and what must stay out: adults of adult_dev aged 18+ that no check was fitted on,
its patients under 18, the lung_masks adults, the hands and pelvises of not_chest_dev. About 10 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.io.folders import split_by_patient
from tools.appserver import ROOT
from tools.shared_data import SHARED, training_data

SHIELD = 0.45  # of the film's height, above and below
GAMMA = 0.8
NOISE = 4.0  # grey levels


def other_hospital(gray: np.ndarray) -> np.ndarray:
    """The film as another hospital's detector and processing might give it: a taller field with lead shielding
    above and below the chest (bright bands, SHIELD of the height each), a softer gamma and scanner noise (seeded by
    the film's pixels: the same film always looks the same)."""
    film = (gray.astype(np.float64) / 255.0) ** GAMMA
    band = np.full((round(SHIELD * film.shape[0]), film.shape[1]), 0.85)
    film = np.concatenate([band, film, band]) * 255.0
    film += np.random.default_rng(int(gray.sum()) % 2**32).normal(0.0, NOISE, film.shape)
    return np.clip(np.rint(film), 0, 255).astype(np.uint8)


def write_site(samples: list, folder: Path) -> Path:
    """The samples' films with the other hospital's look, as a class folder (file names, so patient ids, kept)."""
    from pneumo.config import CLASS_NAMES
    from pneumo.io import read_image

    for sample in samples:
        target = folder / CLASS_NAMES[sample.label] / (sample.path.stem + ".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(other_hospital(read_image(sample.path).gray)).save(target)
    return folder


def site_halves(predictor, step: int = 1, seed: int = 0) -> tuple[list, list]:
    """(calibration half, new patients) of the bundle's pediatric validation patients: every NORMAL patient (the
    scarcer class) and every `step`-th PNEUMONIA patient."""
    validation = training_data(predictor.bundle.config.recipe).validation
    patients = sorted({s.patient for s in validation if s.label == 0})
    patients += sorted({s.patient for s in validation if s.label == 1})[::step]
    chosen = [s for s in validation if s.patient in set(patients)]
    return split_by_patient(chosen, 0.5, seed)


def outside_sets(predictor) -> dict[str, list[Path]]:
    """What must stay out after calibration: adults no check was fitted on, other hospitals' minors, other body
    parts."""
    data = training_data(predictor.bundle.config.recipe)
    return {"adult_dev, held-out patients aged 18+": [s.path for s in data.adults[1]],
            "adult_dev, patients under 18": sorted(s.path for s in data.minors),
            "lung_masks images (adults)": sorted((SHARED / "lung_masks" / "images").glob("*.png")),
            "not_chest_dev (hands, pelvises)": [s.path for s in data.not_chest]}


def answers(predictor, paths: list[Path]) -> list:
    from pneumo.infer.predictor import predict_paths

    return [p for _, p, error in predict_paths(predictor, paths, desc="score") if error is None]


def rates(found: list, labels: list[int]) -> str:
    """Sensitivity / specificity over the assessed films."""
    pairs = [(p.side == "PNEUMONIA", y == 1) for p, y in zip(found, labels) if p.assessed]
    sick = [called for called, truth in pairs if truth]
    well = [not called for called, truth in pairs if not truth]
    return f"{np.mean(sick):.3f} / {np.mean(well):.3f} ({len(sick)} / {len(well)} films)"


def report(model: str, step: int = 1, out=print) -> Path:
    """Calibrate `model` on the synthetic site's first half (into a temporary folder) and print the table."""
    from pneumo.infer.predictor import Predictor
    from pneumo.ui.calibrate import check_folder, run_calibrate

    before = Predictor.load(model)
    calibration, new = site_halves(before, step)
    work = Path(tempfile.mkdtemp(prefix="site-report-"))
    folder, held = write_site(calibration, work / "site"), write_site(new, work / "new")
    new_paths = [held / p.parent.name / (p.stem + ".png") for p in (s.path for s in new)]
    run_calibrate(before, folder, check_folder(folder, work / "calibrated"), work / "calibrated", out=out)
    after = Predictor.load(work / "calibrated")
    site_films = sorted(folder.rglob("*.png"))
    outside = outside_sets(before)
    rows = [("site, calibration half: assessed", site_films, lambda p: p.assessed),
            ("site, new patients: assessed", new_paths, lambda p: p.assessed),
            *((f"{name}: not assessed", paths, lambda p: not p.assessed) for name, paths in outside.items()),
            ("not_chest_dev: called not a chest X-ray", outside["not_chest_dev (hands, pelvises)"],
             lambda p: not p.looks_like_chest_xray)]
    out("\n| films | before calibration | after |\n|---|---|---|")
    for name, paths, counts in rows:
        found = [answers(predictor, paths) for predictor in (before, after)]
        out(f"| {name} | {sum(map(counts, found[0]))} of {len(found[0])} | {sum(map(counts, found[1]))} of "
            f"{len(found[1])} |")
    labels = [s.label for s in new]
    out(f"| site, new patients: sensitivity / specificity | {rates(answers(before, new_paths), labels)} at "
        f"{before.threshold:.4f} | {rates(answers(after, new_paths), labels)} at {after.threshold:.4f} |")
    return work


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "weights"), help="the bundle to calibrate (default: weights/)")
    parser.add_argument("--step", type=int, default=1, help="every step-th PNEUMONIA validation patient (default: all)")
    args = parser.parse_args(argv)
    print(f"kept in {report(args.model, args.step)}")


if __name__ == "__main__":
    main()
