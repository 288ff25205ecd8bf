"""One-off: which borderline band separates right from wrong calls on new patients (docs/decisions.md).

    python -m tools.band_levels ../shared/data/shift_dev

Scores the folder with the shipped bundle; for each level, the band (scores between the level's tails of the two
classes, around the calibrated threshold) is set with the threshold on half of the patients and judged on the
other half, 500 splits, exactly as `pneumo calibrate` reports the shipped level.
"""

from __future__ import annotations

import argparse

from pneumo import import_tensorflow_quietly
from pneumo.train import calibrate as rule
from pneumo.train import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    args = parser.parse_args()
    import_tensorflow_quietly()
    from pneumo.infer.predictor import Predictor
    from pneumo.io.folders import scan_class_folder
    from pneumo.ui.calibrate import drop_duplicates, score_site

    site, _ = score_site(Predictor.load(), drop_duplicates(scan_class_folder(args.folder))[0])
    threshold = rule.site_threshold(site)[0]
    for level in (0.9, 0.95, 0.97, 0.99):
        rule.borderline_band = lambda y, p, t, level=level: metrics.borderline_band(y, p, t, level)
        split = rule.split_estimate(site)["borderline"]
        low, high = metrics.borderline_band(site.labels, site.scores, threshold, level)
        wrong_inside = split["inside_share"] * (1 - split["accuracy_inside"])
        wrong = wrong_inside + (1 - split["inside_share"]) * (1 - split["accuracy_outside"])
        print(f"level {level}: band on all films {low:.3f}-{high:.3f}; check halves: {split['inside_share']:.0%} "
              f"inside, right {split['accuracy_inside']:.1%} inside / {split['accuracy_outside']:.1%} outside, "
              f"{wrong_inside / wrong:.0%} of wrong calls inside")


if __name__ == "__main__":
    main()
