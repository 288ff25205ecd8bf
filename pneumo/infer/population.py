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
A calibrated bundle also knows its site (`with_site`): `pneumo calibrate`'s folder says its films are the intended
children, so a second logistic regression, of the site's films against the adults the check was fitted on (kept in
the bundle for this), lets that site's films in: a film is flagged only if both regressions call it unlike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

POPULATION_FILE = "population.npz"
VERSION = "logreg-log1p-gap-forms-proj20-v1"  # bump when the features or the score change: old files are refused
FORM_DIMS = 20  # enough to stop full-size pediatric originals looking "adult"; docs/safety.md
# A stronger L2 (0.1-1) flags children framed otherwise (a crop, a border) less often, but misses more adults of
# other hospitals as 224 px JPEGs; a refused child is safer than an answered adult, so 0.01 stays
# (docs/decisions.md, "The population check").
L2 = 0.01
# The site's regression and cut-off, chosen on shift_dev and a synthetic other hospital (docs/decisions.md, "A
# calibrated bundle knows its site"): a looser one (l2 1-10, the 99.5th-100th percentile) lets in up to 24 of 117
# held-out adults and 34 of 83 lung_masks adults when the site is the training hospital's own children.
SITE_L2 = 0.1
SITE_PERCENTILE = 99.0  # of the site films' out-of-fold scores
SITE_FOLDS = 5  # the site's cut-off is set on scores of patients each fold's fit has not seen
MIN_ADULTS_FLAGGED = 0.9  # a site whose films cannot be told from the held-out adults does not extend the check


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
class SiteModel:
    """What calibration taught the check about one site: site films (0) against the reference adults (1)."""
    weights: np.ndarray  # (d,) on the check's standardised features
    bias: float
    cutoff: float  # site scores above it are adult-like
    films: int  # the site's films it was fitted on

    def score(self, standardised: np.ndarray) -> np.ndarray:
        return standardised @ self.weights + self.bias


@dataclass
class PopulationCheck:
    mean: np.ndarray  # (d,) of the log features
    form: np.ndarray  # (k, d) form directions, projected out
    scale: np.ndarray  # (d,) of the projected features, for standardising
    weights: np.ndarray  # (d,) logistic regression on the standardised log features; > 0 means adult
    bias: float
    cutoff: float  # scores above it are flagged
    percentile: float  # of the pediatric validation scores, where the cut-off was set
    adults: np.ndarray | None = None  # pooled features of the adult films fitted (and their form views)
    adults_held: np.ndarray | None = None  # of the held-out adult films: what a site extension is measured on
    site: SiteModel | None = None  # set by `with_site`

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

    def standardised(self, features: np.ndarray) -> np.ndarray:
        return self._project(_log_features(features)) / self.scale

    def score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds that each film is an adult's (n,)."""
        return self.standardised(features) @ self.weights + self.bias

    def flags(self, features: np.ndarray, site: bool = True) -> np.ndarray:
        """Films unlike the training children and, in a calibrated bundle (`site`), unlike the site's films too."""
        flagged = self.score(features) > self.cutoff
        if site and self.site is not None:
            flagged &= self.site.score(self.standardised(features)) > self.site.cutoff
        return flagged

    def with_site(self, features: np.ndarray, patients: np.ndarray, l2: float = SITE_L2) -> tuple[PopulationCheck,
                                                                                                   dict]:
        """A copy that takes these films (a site's, `patients` their ids) as in the population, and what it measured.

        The site's cut-off is the SITE_PERCENTILE of its films' scores, each from a fit on the other folds' patients
        (as a new patient of the site would score). If the held-out adults are not flagged at least
        MIN_ADULTS_FLAGGED of the time with it, the copy keeps no site (`stats["extended"]` False)."""
        if self.adults is None or self.adults_held is None:
            raise ValueError("this bundle's population check keeps no reference adults, so it cannot learn a site; "
                             "refit its checks with train.py --refit-checks BUNDLE --adult-dir ...")
        site, adults = self.standardised(features), self.standardised(self.adults)
        held_out = self.standardised(self.adults_held)
        oof = _out_of_fold_scores(site, adults, np.asarray(patients, str), l2)
        y = np.concatenate([np.zeros(len(site)), np.ones(len(adults))])
        weights, bias = fit_logistic(np.concatenate([site, adults]), y, l2)
        model = SiteModel(weights, bias, float(np.percentile(oof, SITE_PERCENTILE)), len(site))
        extended = replace(self, site=model)
        stats = {"films": len(site), "l2": l2, "folds": SITE_FOLDS, "percentile": SITE_PERCENTILE,
                 "cutoff": model.cutoff,
                 "flagged_before": self.flags(features, site=False).tolist(),
                 "flagged_after_out_of_fold": (self.flags(features, site=False) & (oof > model.cutoff)).tolist(),
                 "held_out_adults": {"films": len(held_out), "flagged_before": float(self.flags(self.adults_held,
                                                                                                 site=False).mean()),
                                     "flagged_after": float(extended.flags(self.adults_held).mean())}}
        stats["extended"] = stats["held_out_adults"]["flagged_after"] >= MIN_ADULTS_FLAGGED
        return (extended if stats["extended"] else replace(self, site=None)), stats

    def save(self, path: Path) -> None:
        extra = {} if self.adults is None else {"adults": self.adults.astype(np.float16),
                                                "adults_held": self.adults_held.astype(np.float16)}
        if self.site is not None:
            extra.update(site_weights=self.site.weights, site_bias=self.site.bias, site_cutoff=self.site.cutoff,
                         site_films=self.site.films)
        np.savez(path, mean=self.mean, form=self.form, scale=self.scale, weights=self.weights, bias=self.bias,
                 cutoff=self.cutoff, percentile=self.percentile, version=VERSION, **extra)

    @classmethod
    def load(cls, path: Path) -> PopulationCheck:
        with np.load(path) as f:
            version = str(f["version"]) if "version" in f else "none"
            if version != VERSION:
                raise ValueError(f"'{path}' holds a population check of version {version!r}; this package reads "
                                 f"{VERSION!r}. Retrain the bundle with train.py --adult-dir.")
            site = SiteModel(f["site_weights"], float(f["site_bias"]), float(f["site_cutoff"]),
                             int(f["site_films"])) if "site_weights" in f else None
            adults, held = (f[k].astype(np.float64) if k in f else None for k in ("adults", "adults_held"))
            return cls(f["mean"], f["form"], f["scale"], f["weights"], float(f["bias"]), float(f["cutoff"]),
                       float(f["percentile"]), adults, held, site)


def _out_of_fold_scores(site: np.ndarray, adults: np.ndarray, patients: np.ndarray, l2: float) -> np.ndarray:
    """Each site film's score from a fit on the other folds' patients (and all the adults)."""
    names, of_film = np.unique(patients, return_inverse=True)
    fold = np.random.default_rng(0).permutation(len(names))[of_film] % SITE_FOLDS
    scores = np.empty(len(site))
    for k in range(SITE_FOLDS):
        rest = fold != k
        y = np.concatenate([np.zeros(rest.sum()), np.ones(len(adults))])
        weights, bias = fit_logistic(np.concatenate([site[rest], adults]), y, l2)
        scores[~rest] = site[~rest] @ weights + bias
    return scores


def fit_with_forms(children: np.ndarray, child_views: list[np.ndarray], adult_views: list[np.ndarray],
                   children_val: np.ndarray, dims: int = FORM_DIMS, l2: float = L2) -> PopulationCheck:
    """The check as `train.py --adult-dir` fits it. `child_views[0]` / `adult_views[0]`: plain features of some
    children / the adults; the rest: FormConfig views of the same films, row for row. The children are `children`
    plus the child form views; what moves between a film and its form views is projected out first."""
    pairs = [(child_views[0], x) for x in child_views[1:]] + [(adult_views[0], x) for x in adult_views[1:]]
    return PopulationCheck.fit(np.concatenate([children, *child_views[1:]]), np.concatenate(adult_views), children_val,
                               form_directions(pairs, dims) if pairs else None, l2=l2)


