"""One-off: how much of the chest check's count on held-out adults is the noise of its own cut-off?

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 \
        python -m tools.chest_cutoff_noise weights /path/to/int8_bundle

The chest check flags a film whose Mahalanobis distance exceeds the 99.5th percentile of the validation
children's distances (~780 films: the cut-off rests on the 4th-largest one). Per bundle, in its own precision:
the cut-off recomputed from the validation films (it must equal the stored one), the held-out adults over it,
and over 2,000 patient-bootstrap resamples of the validation children the 5-95% range of the cut-off and of that
count. Also the adults within 5% of the cut-off either side, the bundles' difference on the same
resamples, and each bundle's features under the other's check. ~8 minutes per bundle on 2 cores (feature pass).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from tools.appserver import ROOT

SHARED = ROOT.parent / "shared" / "data"
RESAMPLES = 2000


def checks_features(bundle, samples, cache_root: Path, desc: str) -> np.ndarray:
    from pneumo.model import build
    from pneumo.model.bundle import load_int8_ranges
    from pneumo.preprocess import AugmentConfig
    from pneumo.train import features

    int8 = load_int8_ranges(bundle)
    weights = build.backbone_weights_setting()
    trunk = build.build_feature_extractor(weights, bundle.config["input_size"])
    extractor = features.FeatureExtractor(trunk, int8=int8)
    cache = features.FeatureCache(cache_root, features.trunk_fingerprint(weights, int8), 0, AugmentConfig())
    found = features.extract([s.path for s in samples], extractor, cache, desc=desc)
    if found.failed:
        raise ValueError(f"unreadable films: {found.failed}")
    return found.features


def distances(source: str, cache_root: Path) -> dict:
    """The bundle's chest-check distances of the validation children and the held-out adults, and its cut-off."""
    from pneumo.infer.chest_check import OOD_FILE, FeatureGaussian
    from pneumo.io.folders import kaggle_splits, scan_images, split_by_patient
    from pneumo.model.bundle import load_bundle

    bundle = load_bundle(source)
    recipe = bundle.config["recipe"]
    _, val = split_by_patient(kaggle_splits(SHARED / "chest_xray")["train"], recipe["val_fraction"], recipe["seed"])
    _, adults = split_by_patient(scan_images(SHARED / "adult_dev"), recipe["adult_holdout"], recipe["seed"])
    gaussian = FeatureGaussian.load(bundle.path / OOD_FILE)
    found = {"val": checks_features(bundle, val, cache_root, "validation children"),
             "adults": checks_features(bundle, adults, cache_root, "held-out adults")}
    return {"source": source, "precision": bundle.precision, "gaussian": gaussian, "patients": [s.patient for s in val],
            "features": found, **{name: gaussian.distance(x) for name, x in found.items()}}


def crossed(first: dict, other: dict) -> str:
    """Each bundle's features under the other's Gaussian and cut-off: does the trunk or the refit move the count?"""
    parts = []
    for features_of, check_of in ((other, first), (first, other)):
        g = check_of["gaussian"]
        over = {name: int((g.distance(x) > g.cutoff).sum()) for name, x in features_of["features"].items()}
        parts.append(f"{features_of['precision']} features under the {check_of['precision']} check: "
                     f"{over['adults']}/{len(features_of['adults'])} held-out adults, "
                     f"{over['val']}/{len(features_of['val'])} validation children over its cut-off")
    return "; ".join(parts)


def resampled_counts(m: dict, draws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per resample of validation patients: the cut-off the rule gives, and the held-out adults over it."""
    patients = sorted(set(m["patients"]))
    rows = {p: [i for i, q in enumerate(m["patients"]) if q == p] for p in patients}
    pct = m["gaussian"].percentile
    cutoffs = np.array([np.percentile(np.concatenate([m["val"][rows[patients[i]]] for i in d]), pct) for d in draws])
    return cutoffs, (m["adults"][None, :] > cutoffs[:, None]).sum(axis=1)


def row(m: dict, draws: list[np.ndarray]) -> str:
    g = m["gaussian"]
    cutoffs, counts = resampled_counts(m, draws)
    near = int(np.sum(np.abs(m["adults"] / g.cutoff - 1) < 0.05))
    c5, c95 = np.percentile(cutoffs, [5, 95])
    n5, n50, n95 = np.percentile(counts, [5, 50, 95])
    recomputed = np.percentile(m["val"], g.percentile)
    return (f"| {m['source']} | {m['precision']} | {len(m['val'])} | {g.cutoff:.2f} (recomputed {recomputed:.2f}) | "
            f"{c5:.2f}-{c95:.2f} | {int((m['adults'] > g.cutoff).sum())}/{len(m['adults'])} | {n5:.0f} / {n50:.0f} / "
            f"{n95:.0f} | {near} |")


def paired(first: dict, other: dict, draws: list[np.ndarray]) -> str:
    """Both bundles on the same resamples (the same validation patients): the difference in adults flagged."""
    if first["patients"] != other["patients"]:
        return f"{other['source']}: other validation films than {first['source']}, no paired comparison"
    diff = resampled_counts(other, draws)[1] - resampled_counts(first, draws)[1]
    d5, d50, d95 = np.percentile(diff, [5, 50, 95])
    return (f"{other['source']} minus {first['source']}, held-out adults flagged on the same {len(draws)} "
            f"resamples: median {d50:+.0f}, 5-95% {d5:+.0f} to {d95:+.0f}; fewer in {np.mean(diff < 0):.0%}, "
            f"as many in {np.mean(diff == 0):.0%}, more in {np.mean(diff > 0):.0%}")


def main(argv=None) -> int:
    sources = (argv if argv is not None else sys.argv[1:]) or ["weights"]
    print("| bundle | precision | validation films | cut-off | cut-off 5-95% (bootstrap) | held-out adults over "
          "it | same, bootstrap 5% / 50% / 95% | adults within 5% of the cut-off |")
    print("|---" * 8 + "|")
    scratch = Path(tempfile.gettempdir()) / "pneumo-chest-cutoff-noise"  # kept: a rerun reads the features back
    found = [distances(source, scratch) for source in sources]
    rng = np.random.default_rng(0)
    n = len(set(found[0]["patients"]))
    draws = [rng.choice(n, n) for _ in range(RESAMPLES)]
    for m in found:
        print(row(m, draws))
    for other in found[1:]:
        print(paired(found[0], other, draws))
        print(crossed(found[0], other))
    return 0


if __name__ == "__main__":
    sys.exit(main())
