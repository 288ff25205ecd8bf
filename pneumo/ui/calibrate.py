"""`pneumo calibrate FOLDER --output DIR`: a copy of a bundle with its threshold set on a site's own films, and its
checks taught that site.

The folder is the site's word: its films are children of the intended age. So films the population check flags
count (a new site's films often look unlike the training hospital's), while films the chest X-ray or framing check
rejects are left out, by name. It refuses a set that cannot support a threshold, sets the threshold by
`pneumo.stats.site_rule`'s rule, adds the site to both checks (population.PopulationCheck.with_site,
chest_check.ChestCheck.with_site) and writes the copy atomically; the source bundle is never touched.
"""

from __future__ import annotations

import copy
import shutil
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import CLASS_NAMES
from ..infer.chest_check import CHEST_FILE
from ..infer.population import POPULATION_FILE
from ..infer.predictor import predict_paths
from ..io.folders import file_hash, scan_class_folder
from ..model import bundle as bundles
from ..model import card
from ..model.plots import save_site_scores
from ..stats import metrics
from ..stats import site_rule as rule


def check_folder(folder: Path, output: Path, target: float = rule.TARGET, out=print) -> list:
    """The folder's films, refused before the model is loaded if they can never support a threshold."""
    if not 0.5 < target < 1:
        raise ValueError(f"--sensitivity must be between 0.5 and 1 (a target such as 0.95); got {target}.")
    if Path(output).exists() and Path(output).resolve() == Path(folder).resolve():
        raise ValueError(f"--output '{output}' is the folder of films; choose a new folder for the bundle.")
    samples, copies = drop_duplicates(scan_class_folder(folder))
    if copies:
        out(f"counted once: {len(copies)} file(s) identical to another (e.g. {copies[0][0]} = {copies[0][1]})")
    # Counted again on the films that count after scoring; this catches a small folder in a second, not minutes.
    rule.check_enough([s.label == 1 for s in samples], [s.patient for s in samples], target)
    return samples


def run_calibrate(predictor, folder: Path, samples: list, output: Path, target: float = rule.TARGET,
                  out=print) -> int:
    """Calibrate `predictor`'s bundle on `samples` (from `check_folder`) and write the copy to `output`."""
    source = predictor.bundle.path
    if Path(output).resolve() == source.resolve():
        raise ValueError(f"--output '{output}' is the bundle being calibrated; write the calibrated copy to a new "
                         "folder (the source bundle is never changed).")
    predictor = factory_checks(predictor)  # scored and taught from the checks as training left them
    films = score_site(predictor, samples)
    for reason, names in sorted(films.left_out.items()):
        out(f"left out: {len(names)} film(s): {reason}: {', '.join(names)}")
    rule.check_enough(films.site.labels, films.site.patients, target)
    checks, taught = site_checks(predictor, films)
    config = calibrated_config(predictor.bundle.config, Path(folder).resolve().name, films.site, target, taught, out,
                               films.unlike, films.left_out)
    with bundles.writing(output) as new_bundle:
        fill_bundle(new_bundle, source, config, films.site, checks)
    out(f"wrote {output}: threshold {config.threshold:.4f} (the source bundle had {predictor.bundle.threshold:.4f})")
    return 0


def drop_duplicates(samples: list) -> tuple[list, list[tuple[Path, Path]]]:
    """Each distinct file once (the Kermany folders hold a few byte-identical copies of a film): the samples kept,
    and (copy, original) pairs. The same file under both classes is refused: its label cannot be both."""
    kept, copies, seen = [], [], {}
    for sample in samples:
        digest = file_hash(sample.path)  # the feature cache's content key
        first = seen.setdefault(digest, sample)
        if first is sample:
            kept.append(sample)
        elif first.label != sample.label:
            raise ValueError(f"'{first.path}' and '{sample.path}' are the same file (identical bytes) under both "
                             f"{' and '.join(CLASS_NAMES)}; give each film one label and run again.")
        else:
            copies.append((sample.path, first.path))
    return kept, copies


@dataclass
class SiteFilms:
    """The films that count (the chest X-rays of the folder, whole), what the checks read of them, and the rest."""
    site: rule.SiteScores
    features: np.ndarray  # (n, d) the checks' pooled features
    signatures: np.ndarray | None  # (n, cells) where the lungs lie, with a lung head
    unlike: np.ndarray  # (n,) bool: the population check's pixels call the film unlike the training children
    left_out: dict[str, list[str]]  # reason: file names


def score_site(predictor, samples) -> SiteFilms:
    """Score every film; a film counts unless it is unreadable or the chest X-ray or framing check rejects it."""
    by_path = {s.path: s for s in samples}
    kept, left_out = [], defaultdict(list)
    for path, prediction, error in predict_paths(predictor, list(by_path), desc="calibrate",
                                                 with_cam=predictor.decoder is not None):
        if error is not None or prediction.failed_check in ("chest", "framing"):
            left_out[error or " ".join(prediction.warnings)].append(f"{CLASS_NAMES[by_path[path].label]}/{path.name}")
        else:
            kept.append((by_path[path], prediction))
    # "NORMAL/IM-0115": a patient id never spans both classes
    site = rule.SiteScores.of([s.label == 1 for s, _ in kept], [p.probability for _, p in kept],
                              [s.patient for s, _ in kept])
    features = np.array([p.check_features for _, p in kept]) if kept else np.zeros((0, 0))
    signatures = np.array([p.signature for _, p in kept]) if kept and kept[0][1].signature is not None else None
    return SiteFilms(site, features, signatures, np.array([p.pixels_unlike for _, p in kept], bool), dict(left_out))


def factory_checks(predictor):
    """The predictor with the checks its bundle was trained with: a calibrated bundle is calibrated again from its
    training state, never on top of the site it learned before (so the same folder gives the same bundle)."""
    factory = copy.copy(predictor)
    if predictor.population_check is not None:
        factory.population_check = replace(predictor.population_check, site=None)
    if predictor.chest is not None and predictor.chest.site_films:
        factory.chest = predictor.chest.without_site()
    return factory


def site_checks(predictor, films: SiteFilms) -> tuple[dict, dict]:
    """({file name: check} of the checks taught this site, what was measured), from `predictor`'s training checks
    (`factory_checks`): the population check learns the site's films as children, the chest X-ray check adds them to
    its reference. A bundle whose checks keep no reference statistics (made before them) keeps its checks as they
    are, and says so."""
    checks, taught = {}, {}
    population = predictor.population_check
    if population is not None and population.adults is not None:
        checks[POPULATION_FILE], taught["population"] = population.with_site(films.features, films.site.patients)
    elif population is not None:
        taught["population"] = {"extended": False, "why": "the bundle keeps no reference adults (refit its checks)"}
    chest = predictor.chest
    if chest is not None and chest.reference is not None:
        checks[CHEST_FILE] = chest.with_site(films.features, films.signatures)
        taught["chest"] = {"films_added": len(films.features), "reference_films": chest.reference.count}
    return checks, taught


def calibrated_config(source: bundles.BundleConfig, name: str, site: rule.SiteScores, target: float,
                      taught: dict | None = None, out=print, unlike: np.ndarray | None = None,
                      left_out: dict | None = None) -> bundles.BundleConfig:
    """The source bundle's config with the new threshold, the band on the site's films and a calibration block."""
    before = source.calibration  # a calibrated bundle keeps the validation threshold training chose
    factory = before.factory_threshold if before else source.threshold
    threshold, cuts = rule.site_threshold(site, target)
    block = bundles.Calibration(
        folder=name, films=_per_class(site, lambda keep: int(keep.sum())),
        patients=_per_class(site, lambda keep: len(set(site.patients[keep]))),
        rule=rule.RULE, rule_text=rule.RULE_TEXT.format(resamples=rule.RESAMPLES, target=target),
        target_sensitivity=target, resamples=rule.RESAMPLES, seed=rule.SEED,
        factory_threshold=factory,
        factory_threshold_rule=before.factory_threshold_rule if before else source.threshold_rule,
        threshold=threshold, resampled_thresholds=_spread(cuts),
        in_sample=_in_sample(site, threshold), factory_in_sample=_in_sample(site, factory),
        split_estimate=rule.split_estimate(site, target),
        site_checks=_site_block(site, taught or {}, unlike, left_out or {}))
    band = rule.site_band(site, threshold, target)
    # borderline_validation goes: it described the validation threshold's band
    config = replace(source, threshold=threshold, threshold_rule=rule.RULE, borderline=list(band),
                     borderline_site=metrics.band_stats(site.labels, site.scores, threshold, band),
                     calibration=block, borderline_validation=None)
    for line in summary(block):
        out(line)
    return config


def _site_block(site: rule.SiteScores, taught: dict, unlike: np.ndarray | None, left_out: dict) -> dict:
    """Per class: films scored, left out (not chest X-rays, cut), flagged by the population check before the site
    was added and after (each patient scored by a fit that has not seen it); and what each check learned."""
    population = taught.get("population", {})
    before = np.zeros(len(site.labels), bool) if unlike is None else unlike
    after = np.array(population.get("flagged_after_out_of_fold", before), bool)
    if not population.get("extended", False):
        after = before
    per_class = {}
    for cls, keep in ((CLASS_NAMES[1], site.labels), (CLASS_NAMES[0], ~site.labels)):
        per_class[cls] = {"scored": int(keep.sum()),
                          "left_out": sum(n.startswith(f"{cls}/") for names in left_out.values() for n in names),
                          "unlike_before": int(before[keep].sum()), "unlike_after": int(after[keep].sum())}
    summary = {k: v for k, v in population.items() if k not in ("flagged_before", "flagged_after_out_of_fold")}
    return {"per_class": per_class, "population": summary, "chest": taught.get("chest", {"films_added": 0})}


def _per_class(site: rule.SiteScores, count) -> dict:
    return {CLASS_NAMES[1]: count(site.labels), CLASS_NAMES[0]: count(~site.labels)}


def _spread(values: np.ndarray) -> dict:
    return {"p5": float(np.quantile(values, 0.05)), "median": float(np.median(values)),
            "p95": float(np.quantile(values, 0.95))}


def _in_sample(site: rule.SiteScores, threshold: float) -> dict:
    """Sensitivity and specificity on the calibration films themselves, with exact 95% intervals."""
    called = site.scores >= threshold
    found = {}
    for name, keep, right in (("sensitivity", site.labels, called), ("specificity", ~site.labels, ~called)):
        k, n = int(right[keep].sum()), int(keep.sum())
        found[name] = {"value": k / n, "k": k, "n": n, "interval95": list(rule.clopper_pearson(k, n))}
    return found


def summary(block: bundles.Calibration) -> list[str]:
    """What the command prints: the films, what the checks learned, the threshold, what to expect on new patients."""
    est, films, patients, inside = block.split_estimate, block.films, block.patients, block.in_sample
    return [f"{block.folder}: {films['PNEUMONIA']} PNEUMONIA films of {patients['PNEUMONIA']} patients, "
            f"{films['NORMAL']} NORMAL films of {patients['NORMAL']} patients",
            *card.site_lines(block.site_checks),
            f"threshold {block.threshold:.4f} (validation: {block.factory_threshold:.4f}); rule: "
            f"{block.rule_text}",
            f"on new patients of this site (rule set on half the patients, checked on the other half, "
            f"{est['splits']} splits; median, 5-95%): sensitivity {card.spread(est['sensitivity'])}, "
            f"specificity {card.spread(est['specificity'])}",
            f"on these films themselves (in-sample, not a measurement): sensitivity "
            f"{inside['sensitivity']['value']:.3f}, specificity {inside['specificity']['value']:.3f}"]


def fill_bundle(folder: Path, source: Path, config: bundles.BundleConfig, site: rule.SiteScores,
                checks: dict | None = None) -> None:
    """The source bundle's files, the checks taught the site, the new config, a plot of the site's scores and the
    regenerated model card."""
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, folder / path.name)
    for name, check in (checks or {}).items():
        check.save(folder / name)
    save_site_scores(site, config, folder / card.SITE_PLOT)
    card.save(folder, config)
