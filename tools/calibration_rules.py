"""One-off: which threshold rule keeps sensitivity on new patients of a site (the choice in docs/decisions.md).

    python -m tools.calibration_rules ../shared/data/shift_dev

Scores the folder with the shipped bundle, then for each rule: (1) repeated patient-wise half splits, the rule
set on one half and measured on the other; (2) the rule set on patient resamples of the whole folder, measured
on the whole folder (how often its sensitivity stays at the target at full size).
"""

from __future__ import annotations

import argparse
import functools
import math

import numpy as np

from pneumo import import_tensorflow_quietly
from pneumo.train import calibrate as rule
from pneumo.train.metrics import choose_threshold


def plain(site, seed):  # the validation rule on the site's films: the 5% quantile of its pneumonia scores
    return choose_threshold(site.labels, site.scores, "sensitivity95")


@functools.cache
def cp_misses(n: int) -> int:  # most misses among n whose one-sided 95% Clopper-Pearson lower bound reaches 0.95
    return max([m for m in range(n // 10) if rule.clopper_pearson(n - m, n, 0.90)[0] >= rule.TARGET] or [0])


def clopper_pearson(site, seed):  # the highest threshold whose one-sided 95% CP lower bound reaches 0.95
    positives = np.sort(site.scores[site.labels])
    misses = cp_misses(len(positives))
    below = site.scores[site.scores < positives[misses]]
    return (positives[misses] + below.max()) / 2 if below.size else positives[misses] / 2


def bootstrap(site, seed):
    return rule.site_threshold(site, rule.TARGET, rule.RESAMPLES, seed)[0]


RULES = {"plain sensitivity95": plain, "Clopper-Pearson 95%": clopper_pearson, "patient bootstrap p5": bootstrap}


def half_splits(site, splits=500):
    for name, choose in RULES.items():
        found = np.array([(*rule.rates(check, choose(calib, k)), choose(calib, k))
                          for k, (calib, check) in enumerate(rule.half_splits(site, splits, 0))])
        print(f"{name:22s} half splits: check sensitivity median {np.median(found[:, 0]):.3f} mean "
              f"{found[:, 0].mean():.3f}, below 0.95 in {np.mean(found[:, 0] < 0.95):.0%}; specificity median "
              f"{np.median(found[:, 1]):.3f} (5-95% {np.quantile(found[:, 1], 0.05):.3f}-"
              f"{np.quantile(found[:, 1], 0.95):.3f}); threshold median {np.median(found[:, 2]):.3f}")


def full_size(site, resamples=300):
    rng = np.random.default_rng(1)
    patients = np.unique(site.patients)
    rows = {p: np.flatnonzero(site.patients == p) for p in patients}
    picks = [np.concatenate([rows[p] for p in rng.choice(patients, len(patients))]) for _ in range(resamples)]
    for name, choose in RULES.items():
        found = np.array([rule.rates(site, choose(site.subset(pick), k)) for k, pick in enumerate(picks)])
        print(f"{name:22s} full size: sensitivity on the folder >= 0.95 in {np.mean(found[:, 0] >= 0.95):.0%} of "
              f"resamples, mean {found[:, 0].mean():.3f}; specificity mean {found[:, 1].mean():.3f}; on all films: "
              f"threshold {choose(site, 0):.4f}, sensitivity/specificity {rule.rates(site, choose(site, 0))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    args = parser.parse_args()
    import_tensorflow_quietly()
    from pneumo.infer.predictor import Predictor
    from pneumo.io.folders import scan_class_folder
    from pneumo.ui.calibrate import drop_duplicates, score_site

    samples, _ = drop_duplicates(scan_class_folder(args.folder))
    site, _ = score_site(Predictor.load(), samples)
    print(f"{site.labels.sum()} pneumonia, {(~site.labels).sum()} normal assessed films; "
          f"CP zero-miss minimum {rule.min_pneumonia()}, {math.ceil(0.05 * site.labels.sum())} misses = 5%")
    half_splits(site)
    full_size(site)


if __name__ == "__main__":
    main()
