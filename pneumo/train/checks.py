"""Fitting the "is this a child's film?" check a bundle carries (the chest X-ray check fits in one call).

It uses only the pooled features the classifier computes anyway, so it costs no extra backbone pass at
serving time. Its cut-off is set on the pediatric validation patients, never on the films it scores.
"""

from __future__ import annotations

import numpy as np

from ..infer import population
from ..io import folders
from ..preprocess import FormConfig


def form_features(config, extract, child_samples: list) -> tuple[list, list, list, list]:
    """(adult fit films, held-out adult films, [plain, *form views] global averages of the adult fit films, the same
    of every 8th pediatric fit film), as `fit_population` reads them."""
    adults = [s for folder in config.adult_dirs for s in folders.scan_images(folder)]
    fit, held_out = folders.split_by_patient(adults, config.adult_holdout, config.seed) if config.adult_holdout \
        else (adults, [])
    form = FormConfig(**config.augment.to_dict())
    views = range(1, config.population_views + 1)
    adult_x = [extract(fit, "adult films", 0, checks_only=True).checks]
    adult_x += [extract(fit, f"adult form {v}", v, form, checks_only=True).checks for v in views]
    sample = child_samples[::8]
    child_x = [extract(sample, "child sample", 0).checks]  # cached: the same films' plain features
    child_x += [extract(sample, f"child form {v}", v, form, checks_only=True).checks for v in views]
    return fit, held_out, adult_x, child_x


def fit_population(config, extract, children: np.ndarray, child_samples: list, children_val):
    """The pediatric-vs-adult check: fitted on adult patients' films and views, measured on held-out adult patients.

    Both sides also get FormConfig views (random sharpness and JPEG compression), so the film's texture
    tells nothing and anatomy has to; for the children a 1-in-8 sample of the fit films is enough.
    """
    fit, held_out, adult_x, child_x = form_features(config, extract, child_samples)
    form = FormConfig(**config.augment.to_dict())
    check = population.fit_with_forms(children, child_x, adult_x, children_val)
    children_flagged = float(check.flags(children_val).mean())
    stats = {"file": population.POPULATION_FILE, "version": population.VERSION, "cutoff": check.cutoff,
             "percentile": check.percentile, "l2": population.L2, "form_dims": len(check.form),
             "adult_fit_images": len(fit), "adult_holdout_images": len(held_out), "form_views": form.to_dict(),
             "validation_children_flagged": children_flagged}
    summary = f"{children_flagged:.1%} of {len(children_val)} pediatric validation films flagged"
    if held_out:
        flagged = float(check.flags(extract(held_out, "held-out adults", checks_only=True).checks).mean())
        stats["holdout_adults_flagged"] = flagged
        summary += f"; {flagged:.1%} of {len(held_out)} held-out adult films flagged"
    stats["summary"] = summary
    return check, stats
