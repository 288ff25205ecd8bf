""""Is this film from the population the model knows?" — children aged 1-5, frontal views.

Separate from "is this a chest X-ray?" (chest_check.py): an adult chest film is a chest X-ray, yet the model's
answer on adults is no better than a coin (docs/safety.md). Two kinds of evidence:
- the patient's age, where known: declared by the user, or in the DICOM header. It decides: in the intended range
  (1 to under 6 years) the film is assessed, outside it it is not, whatever the pixels say;
- without an age, the pixels: a logistic regression on the pooled VGG16 features the classifier computes anyway
  (log-compressed, standardised), trained on pediatric training films against films of patients aged 18 or more;
  its cut-off is a high percentile of the pediatric *validation* patients' scores, so few children are flagged.
  Every child it saw comes from one hospital and every adult from others, so it tells "unlike the training
  children" (older, or another hospital's) and nothing finer: its answer never says "adult" (docs/safety.md).
  The two groups also differ in *form* (224 px JPEGs against large smooth films), which a classifier would
  happily learn instead of anatomy. So both sides get views of random sharpness and compression
  (preprocess.FormConfig), and the directions in which a film's features move when only its form changes
  (the top FORM_DIMS principal directions of plain-minus-form differences) are projected out first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

POPULATION_FILE = "population.npz"
VERSION = "logreg-log1p-gap-forms-proj20-v1"  # bump when the features or the score change: old files are refused
FORM_DIMS = 20  # enough to stop full-size pediatric originals looking "adult"; docs/safety.md
# A stronger L2 (0.1-1) flags children framed otherwise (a crop, a border) less often, but misses more adults of
# other hospitals as 224 px JPEGs; a refused child is safer than an answered adult, so 0.01 stays
# (docs/decisions.md, "The population check").
L2 = 0.01


def _log_features(features: np.ndarray) -> np.ndarray:
    # Pooled ReLU features are heavy-tailed; log1p makes a linear boundary fit far better.
    return np.log1p(np.maximum(np.atleast_2d(features), 0).astype(np.float64))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 30) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method, classes weighted equally.

    512 standardised features and a few thousand rows: each Newton step is one 512x512 solve,
    and the loss is convex, so 30 steps reach the optimum without a learning rate to tune.
    """
    n, d = x.shape
    counts = np.bincount(y.astype(int), minlength=2)
    sample_weight = np.where(y > 0, n / (2.0 * counts[1]), n / (2.0 * counts[0])) / n
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        gradient = xb.T @ (sample_weight * (p - y)) + penalty * w
        hessian = (xb * (sample_weight * p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def form_directions(pairs: list[tuple[np.ndarray, np.ndarray]], k: int = FORM_DIMS) -> np.ndarray:
    """(k, d) orthonormal directions along which log features move when only the film's form changes."""
    diffs = np.concatenate([_log_features(form) - _log_features(plain) for plain, form in pairs])
    _, _, vt = np.linalg.svd(diffs - diffs.mean(axis=0), full_matrices=False)
    return vt[:k]


@dataclass
class PopulationCheck:
    mean: np.ndarray  # (d,) of the log features
    form: np.ndarray  # (k, d) form directions, projected out
    scale: np.ndarray  # (d,) of the projected features, for standardising
    weights: np.ndarray  # (d,) logistic regression on the standardised log features; > 0 means adult
    bias: float
    cutoff: float  # scores above it are flagged
    percentile: float  # of the pediatric validation scores, where the cut-off was set

    @classmethod
    def fit(cls, children: np.ndarray, adults: np.ndarray, children_val: np.ndarray, form: np.ndarray | None = None,
            percentile: float = 99.5, l2: float = L2) -> PopulationCheck:
        """Fit on pediatric vs adult pooled features; cut-off at `percentile` of `children_val` scores.

        `form`: directions to project out (see `form_directions`); None projects nothing.
        """
        if len(children) == 0 or len(adults) == 0 or len(children_val) == 0:
            raise ValueError(f"the population check needs pediatric, adult and pediatric validation films; "
                             f"got {len(children)}, {len(adults)} and {len(children_val)}.")
        x = _log_features(np.concatenate([children, adults]))
        check = cls(x.mean(axis=0), np.zeros((0, x.shape[1])) if form is None else form, np.ones(x.shape[1]),
                    np.zeros(x.shape[1]), 0.0, float("inf"), percentile)
        projected = check._project(x)
        check.scale = projected.std(axis=0) + 1e-6
        y = np.concatenate([np.zeros(len(children)), np.ones(len(adults))])
        check.weights, check.bias = fit_logistic(projected / check.scale, y, l2)
        check.cutoff = float(np.percentile(check.score(children_val), percentile))
        return check

    def _project(self, logs: np.ndarray) -> np.ndarray:
        centred = logs - self.mean
        return centred - (centred @ self.form.T) @ self.form

    def score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds that each film is an adult's (n,)."""
        return (self._project(_log_features(features)) / self.scale) @ self.weights + self.bias

    def flags(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.cutoff

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, form=self.form, scale=self.scale, weights=self.weights, bias=self.bias,
                 cutoff=self.cutoff, percentile=self.percentile, version=VERSION)

    @classmethod
    def load(cls, path: Path) -> PopulationCheck:
        with np.load(path) as f:
            version = str(f["version"]) if "version" in f else "none"
            if version != VERSION:
                raise ValueError(f"'{path}' holds a population check of version {version!r}; this package reads "
                                 f"{VERSION!r}. Retrain the bundle with train.py --adult-dir.")
            return cls(f["mean"], f["form"], f["scale"], f["weights"], float(f["bias"]), float(f["cutoff"]),
                       float(f["percentile"]))


def fit_with_forms(children: np.ndarray, child_views: list[np.ndarray], adult_views: list[np.ndarray],
                   children_val: np.ndarray, dims: int = FORM_DIMS, l2: float = L2) -> PopulationCheck:
    """The check as `train.py --adult-dir` fits it. `child_views[0]` / `adult_views[0]`: plain features of some
    children / the adults; the rest: FormConfig views of the same films, row for row. The children are `children`
    plus the child form views; what moves between a film and its form views is projected out first."""
    pairs = [(child_views[0], x) for x in child_views[1:]] + [(adult_views[0], x) for x in adult_views[1:]]
    return PopulationCheck.fit(np.concatenate([children, *child_views[1:]]), np.concatenate(adult_views), children_val,
                               form_directions(pairs, dims) if pairs else None, l2=l2)


