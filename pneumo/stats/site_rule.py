"""Site calibration: the operating threshold set on a site's own labelled films. NumPy only, no I/O.

The validation threshold comes from patients of the training group, whose films are almost separable; new
children's films of both classes score higher, so at that threshold about 3 normal children in 10 are called
PNEUMONIA (docs/decisions.md). A site's own films can place the threshold; they must place it carefully.

The rule (chosen on shift_dev by repeated patient-wise half splits, docs/decisions.md): resample the site's
patients with replacement many times; in each resample take the highest threshold that keeps sensitivity at
the target (the plain rule); use the 5th percentile of those thresholds. Resampling patients, not films, counts
a child with three films once, and the low percentile guards against a plain-rule threshold that happens to sit
high on these films: the plain rule alone gave new patients sensitivity below the target about half the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .metrics import BAND_RESAMPLES, threshold_band

TARGET = 0.95  # the sensitivity the threshold must keep on new patients of the site
CONFIDENCE = 0.95
RESAMPLES = 2000
SPLITS = 500  # repeated patient-wise half splits for the estimate on new patients
SEED = 0  # the same films give the same threshold
SPLIT_BAND = (40, 500)  # (resamples, inner resamples) of the band in each of the split estimate's splits: it is
# the band's accuracy pooled over 500 splits that is measured there, and the full band costs ~10 s per split
MIN_NORMAL = 30  # specificity and the band rest on them: with fewer, its 95% interval is wider than +-0.17
MIN_PATIENTS = 20  # per class: the resampling is over patients
RULE = "patient-bootstrap-p5"
RULE_TEXT = ("the 5th percentile, over {resamples} resamples of the site's patients, of the highest threshold "
             "keeping sensitivity >= {target}")


@dataclass(frozen=True)
class SiteScores:
    """The site's films that count: label (True = pneumonia), pneumonia score and patient id, one entry per film."""
    labels: np.ndarray
    scores: np.ndarray
    patients: np.ndarray

    @classmethod
    def of(cls, labels, scores, patients) -> SiteScores:
        return cls(np.asarray(labels, bool), np.asarray(scores, np.float64), np.asarray(patients, str))

    def subset(self, keep: np.ndarray) -> SiteScores:
        return SiteScores(self.labels[keep], self.scores[keep], self.patients[keep])


def min_pneumonia(target: float = TARGET, confidence: float = CONFIDENCE) -> int:
    """Fewest pneumonia films that can show sensitivity >= target at all: with zero misses in n films, the
    one-sided Clopper-Pearson lower bound is (1 - confidence) ** (1 / n). 59 for 0.95 at 95%."""
    return math.ceil(math.log(1 - confidence) / math.log(target))


def check_enough(labels, patients, target: float = TARGET) -> None:
    """Refuse, in one sentence, films (label True = pneumonia, patient id each) that cannot support a threshold."""
    labels, patients = np.asarray(labels, bool), np.asarray(patients, str)
    counts = {"PNEUMONIA": int(labels.sum()), "NORMAL": int((~labels).sum())}
    needed = {"PNEUMONIA": (min_pneumonia(target), f"to show sensitivity >= {target} even with no misses"),
              "NORMAL": (MIN_NORMAL, "to measure specificity at the new threshold")}
    short = [name for name, (need, _) in needed.items() if counts[name] < need]
    if short:
        wants = " and ".join(f"{needed[name][0]} {name} films ({needed[name][1]})" for name in short)
        has = " and ".join(f"{counts[name]} {name}" for name in short)
        raise ValueError(f"calibration needs at least {wants} that are whole chest X-rays; this folder has {has}.")
    for name, positive in (("PNEUMONIA", True), ("NORMAL", False)):
        found = len(set(patients[labels == positive]))
        if found < MIN_PATIENTS:
            raise ValueError(f"calibration resamples patients and needs films of at least {MIN_PATIENTS} "
                             f"{name} patients; this folder has {found} (patient ids come from file names).")


def bootstrap_cuts(site: SiteScores, target: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The plain rule's threshold (the highest keeping sensitivity >= target) in each patient resample."""
    positive = np.flatnonzero(site.labels)
    order = positive[np.argsort(site.scores[positive], kind="stable")]
    scores = site.scores[order]
    names, film_patient = np.unique(site.patients[order], return_inverse=True)
    draws = rng.integers(0, len(names), size=(resamples, len(names)))
    counts = np.zeros((resamples, len(names)), np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    cumulative = np.cumsum(counts[:, film_patient], axis=1)  # films at or below each score, per resample
    allowed = np.floor((1 - target) * cumulative[:, -1] + 1e-9)  # misses the target allows in that resample
    return scores[np.argmax(cumulative > allowed[:, None], axis=1)]


def site_threshold(site: SiteScores, target: float = TARGET, resamples: int = RESAMPLES,
                   seed: int = SEED) -> tuple[float, np.ndarray]:
    """(threshold, the resampled plain-rule thresholds) by the rule in the module docstring.

    The threshold is put halfway between the chosen film's score and the next lower score of the site's films,
    so it does not sit exactly on one film (as the validation rule does)."""
    cuts = bootstrap_cuts(site, target, resamples, np.random.default_rng(seed))
    chosen = float(np.quantile(cuts, 1 - CONFIDENCE, method="lower"))
    below = site.scores[site.scores < chosen]
    return (chosen + below.max()) / 2 if below.size else chosen / 2, cuts


def site_band(site: SiteScores, threshold: float, target: float = TARGET, resamples: int = BAND_RESAMPLES,
              inner: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """The borderline band of the site rule (pneumo.stats.metrics.threshold_band): the scores a threshold set by
    this rule on another sample of the site's patients could put on the other side."""
    def rule(labels, scores, patients):
        return site_threshold(SiteScores.of(labels, scores, patients), target, inner, seed)[0]

    return threshold_band(site.labels, site.scores, site.patients, rule, threshold, resamples, seed)


def rates(site: SiteScores, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of `threshold` on these films."""
    called = site.scores >= threshold
    return float(called[site.labels].mean()), float((~called[~site.labels]).mean())


def half_splits(site: SiteScores, splits: int, seed: int):
    """Yield (calibration half, check half): patients split at random within each class, never across halves."""
    rng = np.random.default_rng(seed)
    by_class = [np.unique(site.patients[site.labels == positive]) for positive in (True, False)]
    for _ in range(splits):
        first = set()
        for patients in by_class:
            first.update(rng.permutation(patients)[: len(patients) // 2])
        keep = np.isin(site.patients, list(first))
        yield site.subset(keep), site.subset(~keep)


def split_estimate(site: SiteScores, target: float = TARGET, splits: int = SPLITS, resamples: int = RESAMPLES,
                   seed: int = SEED) -> dict:
    """What the rule gives new patients of the site: set on one half of the patients, measured on the other.

    A threshold set on half the films is a little more cautious than one set on all of them, so the estimate
    leans towards sensitivity. Median and 5-95% range over the splits."""
    found, band = [], np.zeros(4)  # band: films inside, right inside, films outside, right outside
    for k, (calibration, check) in enumerate(half_splits(site, splits, seed)):
        threshold, _ = site_threshold(calibration, target, resamples, seed + 1 + k)
        found.append((*rates(check, threshold), threshold))
        band += _band_counts(calibration, check, threshold, target, seed + 1 + k)
    found = np.array(found)
    summary = {name: {"median": float(np.median(column)), "p5": float(np.quantile(column, 0.05)),
                      "p95": float(np.quantile(column, 0.95))}
               for name, column in zip(("sensitivity", "specificity", "threshold"), found.T)}
    summary["below_target"] = float((found[:, 0] < target).mean())
    # The borderline band set on the calibration half, judged on the check half (pooled over the splits).
    summary["borderline"] = {"inside_share": band[0] / (band[0] + band[2]),
                             "accuracy_inside": band[1] / max(band[0], 1), "accuracy_outside": band[3] / band[2]}
    return {"splits": splits, **summary}


def _band_counts(calibration: SiteScores, check: SiteScores, threshold: float, target: float,
                 seed: int) -> np.ndarray:
    low, high = site_band(calibration, threshold, target, *SPLIT_BAND, seed)
    inside = (check.scores >= low) & (check.scores <= high)
    right = (check.scores >= threshold) == check.labels
    return np.array([inside.sum(), right[inside].sum(), (~inside).sum(), right[~inside].sum()], np.float64)


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial interval for k successes in n (films counted as independent)."""
    alpha = (1 - confidence) / 2
    low = 0.0 if k == 0 else _solve(lambda p: _tail_at_least(k, n, p) - alpha)
    high = 1.0 if k == n else _solve(lambda p: _tail_at_least(k + 1, n, p) - (1 - alpha))
    return low, high


def _tail_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact enough for any site's n)."""
    j = np.arange(k, n + 1)
    logs = (math.lgamma(n + 1) - np.array([math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in j])
            + j * math.log(p) + (n - j) * math.log1p(-p))
    return float(np.exp(logs).sum())


def _solve(increasing, low: float = 1e-12, high: float = 1 - 1e-12) -> float:
    """The root of an increasing function on (0, 1), by bisection."""
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if increasing(middle) < 0 else (low, middle)
    return (low + high) / 2
