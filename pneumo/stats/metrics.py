"""Metrics and the threshold rule. NumPy only: no scikit-learn needed for six numbers."""

from __future__ import annotations

import numpy as np

THRESHOLD_RULES = ("youden", "balanced", "sensitivity95")


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half)."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    y, s = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    tpr = np.array([(s[y] >= t).mean() if y.any() else np.nan for t in thresholds])
    fpr = np.array([(s[~y] >= t).mean() if (~y).any() else np.nan for t in thresholds])
    return fpr, tpr, thresholds


def binary_metrics(y_true, probs, threshold: float) -> dict:
    """Accuracy, sensitivity, specificity, precision, F1, AUC and the confusion matrix."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    pred = p >= threshold
    tp, tn = int((pred & y).sum()), int((~pred & ~y).sum())
    fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    prec = _ratio(tp, tp + fp)
    f1 = float("nan") if np.isnan(prec) or np.isnan(sens) else _ratio(2 * prec * sens, prec + sens)
    return {
        "n": len(y),
        "accuracy": _ratio(tp + tn, len(y)),
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "f1": f1,
        "auc": roc_auc(y, p),
        "threshold": float(threshold),
        # rows: true NORMAL, true PNEUMONIA; columns: predicted NORMAL, predicted PNEUMONIA
        "confusion": [[tn, fp], [fn, tp]],
    }


def choose_threshold(y_true, probs, rule: str = "youden") -> float:
    """Decision threshold from validation predictions.

    youden: maximise sensitivity + specificity - 1 (Youden's J), i.e. balanced accuracy.
    balanced: the point where sensitivity and specificity are closest.
    sensitivity95: the highest threshold that keeps sensitivity >= 0.95.
    Candidate thresholds are midpoints between neighbouring validation scores,
    so the rule does not sit exactly on one training-like example.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}; got '{rule}'.")
    y, p = np.asarray(y_true).astype(bool), np.asarray(probs, dtype=np.float64)
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs validation images of both classes.")
    values = np.unique(p)
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [(values[-1] + 1) / 2]])
    sens = np.array([(p[y] >= t).mean() for t in candidates])
    spec = np.array([(p[~y] < t).mean() for t in candidates])
    if rule == "youden":
        best = np.flatnonzero(np.isclose(sens + spec, (sens + spec).max()))
        return float(candidates[best[len(best) // 2]])  # middle of tied optima: away from both edges
    if rule == "balanced":
        return float(candidates[np.argmin(np.abs(sens - spec))])
    return float(candidates[sens >= 0.95].max())


def ranking_bound(y_true, probs) -> dict | None:
    """The best this folder's ranking allows at the clinical target: a bound, not a result.

    The threshold is fitted on these very labels (the sensitivity95 rule: the highest threshold that keeps
    sensitivity >= 0.95, so the highest specificity that any threshold reaches there). It says whether a
    better threshold rule could ever reach a specificity target on this data, or only a better ranking can.
    None when the folder lacks either class.
    """
    y = np.asarray(y_true).astype(bool)
    if y.all() or not y.any():
        return None
    threshold = choose_threshold(y, probs, "sensitivity95")
    found = binary_metrics(y, probs, threshold)
    return {key: found[key] for key in ("threshold", "sensitivity", "specificity", "accuracy")}


BAND_QUANTILES = (0.05, 0.95)  # of the resampled thresholds (docs/decisions.md, "A band on both sides")
BAND_RESAMPLES = 200


def threshold_band(y_true, probs, patients, rule, threshold: float, resamples: int = BAND_RESAMPLES,
                   seed: int = 0) -> tuple[float, float]:
    """Scores a threshold set the same way on another sample of these patients could put on the other side.

    The patients of each class are drawn with replacement `resamples` times (a patient drawn twice counts as two),
    `rule(labels, scores, patients) -> threshold` is applied to each draw, and the band runs from the 5th to the
    95th percentile of those thresholds; it always holds `threshold`. It is two-sided by construction: a NORMAL call
    just under the threshold is as unsure as a PNEUMONIA call just above it."""
    y, p, who = np.asarray(y_true).astype(bool), np.asarray(probs, np.float64), np.asarray(patients, str)
    if y.all() or not y.any():
        raise ValueError("the borderline band needs films of both classes.")
    rng = np.random.default_rng(seed)
    groups = [[np.flatnonzero(who == name) for name in np.unique(who[y == label])] for label in (True, False)]
    found = []
    for _ in range(resamples):
        rows = [films[k] for films in groups for k in rng.integers(0, len(films), len(films))]
        index = np.concatenate(rows)
        names = np.repeat(np.arange(len(rows)).astype(str), [len(r) for r in rows])  # each draw its own patient
        found.append(rule(y[index], p[index], names))
    low, high = np.quantile(found, BAND_QUANTILES)
    return min(float(low), threshold), max(float(high), threshold)


def band_stats(y_true, probs, threshold: float, band: tuple[float, float]) -> dict:
    """How many films fall in the borderline band, and how often the decision is right inside and outside it."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(probs, dtype=np.float64)
    inside = (p >= band[0]) & (p <= band[1])
    right = (p >= threshold) == y
    return {"band": [float(band[0]), float(band[1])], "inside": int(inside.sum()), "n": len(y),
            "accuracy_inside": _ratio(right[inside].sum(), inside.sum()),
            "accuracy_outside": _ratio(right[~inside].sum(), (~inside).sum())}


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")
