"""`pneumo calibrate FOLDER --output DIR`: a copy of a bundle with its threshold set on a site's own films.

Scores the films (only assessed ones count), refuses a set that cannot support a threshold, sets the
threshold by `pneumo.train.calibrate`'s rule, and writes the copy atomically; the source bundle is never touched.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import CLASS_NAMES
from ..io.folders import scan_class_folder
from ..model import bundle as bundles
from ..train import calibrate as rule
from ..train import card, metrics
from ..train.features import file_hash


def check_folder(folder: Path, output: Path, target: float = rule.TARGET, out=print) -> list:
    """The folder's films, refused before the model is loaded if they can never support a threshold."""
    if not 0.5 < target < 1:
        raise ValueError(f"--sensitivity must be between 0.5 and 1 (a target such as 0.95); got {target}.")
    if Path(output).exists() and Path(output).resolve() == Path(folder).resolve():
        raise ValueError(f"--output '{output}' is the folder of films; choose a new folder for the bundle.")
    samples, copies = drop_duplicates(scan_class_folder(folder))
    if copies:
        out(f"counted once: {len(copies)} file(s) identical to another (e.g. {copies[0][0]} = {copies[0][1]})")
    # Counted again on the assessed films after scoring; this catches a small folder in a second, not minutes.
    rule.check_enough([s.label == 1 for s in samples], [s.patient for s in samples], target)
    return samples


def run_calibrate(predictor, folder: Path, samples: list, output: Path, target: float = rule.TARGET,
                  out=print) -> int:
    """Calibrate `predictor`'s bundle on `samples` (from `check_folder`) and write the copy to `output`."""
    source = predictor.bundle.path
    if Path(output).resolve() == source.resolve():
        raise ValueError(f"--output '{output}' is the bundle being calibrated; write the calibrated copy to a new "
                         "folder (the source bundle is never changed).")
    site, not_assessed = score_site(predictor, samples)
    for reason, files in sorted(not_assessed.items()):
        out(f"not assessed, left out: {len(files)} film(s): {reason} (e.g. {files[0]})")
    rule.check_enough(site.labels, site.patients, target)
    config = calibrated_config(predictor.bundle.config, Path(folder).resolve().name, site, target, out)
    bundles.write(output, lambda tmp: fill_bundle(tmp, source, config, site))
    out(f"wrote {output}: threshold {config['threshold']:.4f} (the source bundle had {predictor.bundle.threshold:.4f})")
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


def score_site(predictor, samples) -> tuple[rule.SiteScores, dict[str, list[str]]]:
    """The assessed films' scores, and the others grouped by the reason they were left out."""
    from ..infer.predictor import predict_paths

    by_path = {s.path: s for s in samples}
    labels, scores, patients = [], [], []
    left_out: dict[str, list[str]] = defaultdict(list)
    for path, prediction, error in predict_paths(predictor, list(by_path), desc="calibrate",
                                                 with_cam=predictor.decoder is not None):
        if error is not None or not prediction.assessed:
            left_out[error or " ".join(prediction.warnings)].append(Path(path).name)
            continue
        labels.append(by_path[path].label == 1)
        scores.append(prediction.probability)
        patients.append(by_path[path].patient)  # "NORMAL/IM-0115": a patient id never spans both classes
    return rule.SiteScores.of(labels, scores, patients), dict(left_out)


def calibrated_config(source: dict, name: str, site: rule.SiteScores, target: float, out=print) -> dict:
    """The source bundle's config with the new threshold, the band on the site's films and a calibration block."""
    factory = source.get("calibration", {}).get("factory_threshold", source["threshold"])
    threshold, cuts = rule.site_threshold(site, target)
    estimate = rule.split_estimate(site, target)
    block = {"folder": name, "films": _per_class(site, lambda keep: int(keep.sum())),
             "patients": _per_class(site, lambda keep: len(set(site.patients[keep]))),
             "rule": rule.RULE, "rule_text": rule.RULE_TEXT.format(resamples=rule.RESAMPLES, target=target),
             "target_sensitivity": target, "resamples": rule.RESAMPLES, "seed": rule.SEED,
             "factory_threshold": factory, "factory_threshold_rule": source.get("calibration", {}).get(
                 "factory_threshold_rule", source["threshold_rule"]),
             "threshold": threshold, "resampled_thresholds": _spread(cuts),
             "in_sample": _in_sample(site, threshold), "factory_in_sample": _in_sample(site, factory),
             "split_estimate": estimate}
    band = rule.site_band(site, threshold, target)
    config = {**source, "threshold": threshold, "threshold_rule": rule.RULE, "borderline": list(band),
              "borderline_site": metrics.band_stats(site.labels, site.scores, threshold, band), "calibration": block}
    config.pop("borderline_validation", None)  # it described the validation threshold's band
    for line in summary(block):
        out(line)
    return config


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


def summary(block: dict) -> list[str]:
    """What the command prints: the threshold, and what to expect on new patients of the site."""
    est, films, patients = block["split_estimate"], block["films"], block["patients"]

    def spread(name):
        return f"{est[name]['median']:.3f} ({est[name]['p5']:.3f}-{est[name]['p95']:.3f})"

    inside = block["in_sample"]
    return [f"{block['folder']}: {films['PNEUMONIA']} PNEUMONIA films of {patients['PNEUMONIA']} patients, "
            f"{films['NORMAL']} NORMAL films of {patients['NORMAL']} patients",
            f"threshold {block['threshold']:.4f} (validation: {block['factory_threshold']:.4f}); rule: "
            f"{block['rule_text']}",
            f"on new patients of this site (rule set on half the patients, checked on the other half, "
            f"{est['splits']} splits; median, 5-95%): sensitivity {spread('sensitivity')}, "
            f"specificity {spread('specificity')}",
            f"on these films themselves (in-sample, not a measurement): sensitivity "
            f"{inside['sensitivity']['value']:.3f}, specificity {inside['specificity']['value']:.3f}"]


def fill_bundle(folder: Path, source: Path, config: dict, site: rule.SiteScores) -> None:
    """The source bundle's files, the new config, a plot of the site's scores and the regenerated model card."""
    from ..train.plots import save_site_scores

    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, folder / path.name)
    save_site_scores(site, config, folder / card.SITE_PLOT)
    (folder / bundles.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (folder / "README.md").write_text(card.model_card(config))
