"""Fitting the two checks a bundle carries: "is this a frontal chest X-ray?" and "is this a child's film?".

Both read only what the classifier's pass computes anyway (the pooled features, the lung map), so they cost no extra
backbone pass at serving time. Both learn from chest films of several hospitals, and both keep part of every outside
source back, to set their cut-offs and to measure them on films they were not fitted on.
- The chest X-ray check fits on the pediatric fit patients and half of the other hospitals' chest films (the adult
  folders, whatever the patients' ages, and the lung-mask images); its cut-off comes from the rest.
- The population check fits the same pediatric patients against the adult folders' patients aged 18 or more (by
  the folder's metadata.csv, where there is one): a patient under 18 is not an adult, whatever the folder says.
"""

from __future__ import annotations

import numpy as np

from ..infer import population
from ..infer.chest_check import CHEST_FILE, VERSION, ChestCheck
from ..preprocess import FormConfig
from .data import TrainingData


def fit_checks(config, extract, data: TrainingData, fit, val, log=print):
    """Both checks, each with its measurements: ((chest, stats), (population, stats)); the population
    check only with --adult-dir, else (None, None). `extract`: the run's Extractor; `fit`, `val`: the pediatric fit
    and validation patients' features from it."""
    chest, chest_stats = fit_chest_check(extract, data, fit, val)
    log(f"chest X-ray check: {chest_stats['summary']}")
    population = population_stats = None
    if config.adult_dirs:
        # Plain fit films only, whatever --views: the classifier's zoomed views among the children make the check
        # let through more adults of other hospitals (docs/decisions.md).
        population, population_stats = fit_population(config, extract, data, fit.checks, val.checks)
        log(f"population check: {population_stats['summary']}")
    return (chest, chest_stats), (population, population_stats)


def fit_chest_check(extract, data: TrainingData, fit, val) -> tuple[ChestCheck, dict]:
    """The chest X-ray check: Gaussian and lung template on the pediatric fit patients and the fit half of every
    other source; cut-off on the pediatric validation patients and the held-out half of every other source."""
    sources = {name: (extract(a, f"{name}, fit"), extract(b, f"{name}, held out") if b else None)
               for name, (a, b) in data.outside.items()}
    fitted = [(fit.checks, fit.signatures)] + [(x.checks, x.signatures) for x, _ in sources.values() if len(x.y)]
    held = {"pediatric validation patients": (val.checks, val.signatures)}
    held.update({name: (h.checks, h.signatures) for name, (_, h) in sources.items() if h is not None and len(h.y)})
    check = ChestCheck.fit(fitted, held)
    stats = {"file": CHEST_FILE, "version": VERSION, "cutoff": check.cutoff, "percentile": check.percentile,
             "lung_template": check.template is not None,
             "fit_films": {"pediatric fit patients": len(fit.y), **{n: len(x.y) for n, (x, _) in sources.items()}},
             "held_out_flagged": {n: _share(check.score(*pair) > check.cutoff) for n, pair in held.items()}}
    if data.not_chest:  # measured only: nothing of them is fitted
        other = extract(data.not_chest, "not chest X-rays")
        stats["not_chest_caught_by_score"] = _share(check.score(other.checks, other.signatures) > check.cutoff)
    stats["summary"] = "; ".join(f"{n}: {v['flagged']} of {v['films']} flagged"
                                 for n, v in stats["held_out_flagged"].items())
    return check, stats


def _share(flags: np.ndarray) -> dict:
    return {"flagged": int(flags.sum()), "films": int(len(flags)), "share": float(flags.mean())}


def form_features(config, extract, data: TrainingData) -> tuple[list, list]:
    """([plain, *form views] global averages of the adult fit films, the same of every 8th pediatric fit film),
    as `fit_population` reads them."""
    fit = data.adults[0]
    form = FormConfig(**config.augment.to_dict())
    views = range(1, config.population_views + 1)
    adult_x = [extract(fit, "adult films").checks]
    adult_x += [extract(fit, f"adult form {v}", v, form).checks for v in views]
    sample = data.fit[::8]
    child_x = [extract(sample, "child sample").checks]  # cached: the same films' plain features
    child_x += [extract(sample, f"child form {v}", v, form).checks for v in views]
    return adult_x, child_x


def fit_population(config, extract, data: TrainingData, children: np.ndarray, children_val: np.ndarray):
    """The pediatric-vs-adult check: fitted on adult patients' films and views, measured on held-out adult patients
    and on the patients under 18 of the adult folders (never fitted on).

    Both sides also get FormConfig views (random sharpness and JPEG compression), so the film's texture
    tells nothing and anatomy has to; for the children a 1-in-8 sample of the fit films is enough.
    """
    (fit, held_out), minors = data.adults, data.minors
    adult_x, child_x = form_features(config, extract, data)
    form = FormConfig(**config.augment.to_dict())
    check = population.fit_with_forms(children, child_x, adult_x, children_val)
    children_flagged = float(check.flags(children_val).mean())
    stats = {"file": population.POPULATION_FILE, "version": population.VERSION, "cutoff": check.cutoff,
             "percentile": check.percentile, "l2": population.L2, "form_dims": len(check.form),
             "adult_fit_images": len(fit), "adult_holdout_images": len(held_out), "under_18_images": len(minors),
             "form_views": form.to_dict(), "validation_children_flagged": children_flagged}
    summary = f"{children_flagged:.1%} of {len(children_val)} pediatric validation films flagged"
    measured = {}
    for key, films, name in (("holdout_adults_flagged", held_out, "held-out adult"),
                             ("under_18_flagged", minors, "under-18 (never fitted)")):
        if films:
            measured[key] = extract(films, name).checks
            stats[key] = float(check.flags(measured[key]).mean())
            summary += f"; {stats[key]:.1%} of {len(films)} {name} films flagged"
    if "holdout_adults_flagged" in measured:  # kept in the bundle: `pneumo calibrate` fits a site against them
        check.adults, check.adults_held = np.concatenate(adult_x), measured["holdout_adults_flagged"]
    stats["summary"] = summary
    return check, stats
