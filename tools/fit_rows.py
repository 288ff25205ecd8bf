"""Which rows should the shipped head be fitted on? Cheaper sets of rows (fewer VGG16 passes in a cold run), views
of only some fit films, adult films as extra rows, and stretched views, against plain + one view of every fit film,
on several lung heads; and (`--transform`) the pooled features normalised per film before the head.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.fit_rows \
        [--run CACHE_DIR:LUNGS_NPZ ...] [--rows cheaper fraction adults stretch] [--transform zone-l2 film-mean]

Each `--run` is the feature cache of one cold `train.py` run of the shipped command and the lung head it trained
(CACHE_DIR/lungs-*.npz); the lung head is not bit-reproducible, so the same rows are fitted on each run's features
to see what is the recipe and what is the run. Default: train.py's default cache and the lung head in it. Every row
is fitted as train.py fits the head (`--heads 5`, linear, L2 0.01, the same patient split), its threshold by the
sensitivity95 rule on the validation patients; shift_dev is only scored. Cold passes: what a cold run of the
shipped command would make, the checks fitted on the plain fit films the recipe computes. ~4 minutes per run with
its cache filled; computed on first use: the adult films' lung-pooled features (240 passes, "adults") and one
stretched view of every fit film (4,432 passes, ~7 minutes, "stretch": `train.py --view-stretch`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from pneumo.model.pooling import ZONES
from tools.population_report import SHARED

SHIPPED = ("--data-dir ../shared/data/chest_xray --output unused --head linear --pooling lung-zones-14 --heads 5 "
           "--views 1 --weight-decay 0.01 --lung-masks ../shared/data/lung_masks --adult-dir ../shared/data/adult_dev")
COLD_PASSES = 12085  # the shipped command from an empty cache (docs/experiments.md, "Cold training")
STRETCH = 1.25  # the views' stretch tried (pneumo.preprocess.AugmentConfig.stretch_max)


def load_run(cache: str, lungs: str):
    """train.py's config and extractor for the shipped command on `cache`, with the lung head in `lungs`, and the
    lung head's fingerprint (what names it in the cache)."""
    import train
    from pneumo.model.lungs import decoder_fingerprint, load_decoder
    from pneumo.train.loop import _Extractor
    from pneumo.train.options import from_arguments

    config = from_arguments(train.parse_args(SHIPPED.split() + ["--cache-dir", cache]))
    config.validate()
    decoder = load_decoder(lungs)
    return config, _Extractor(config, decoder), decoder_fingerprint(decoder)


GROUPS = ("cheaper", "fraction", "adults", "stretch")
FRACTIONS = (0.75, 0.5)  # of the fit films given a view ("fraction")


def rows(config, extract, groups=GROUPS) -> tuple[dict, object, object]:
    """{name: (fit x, fit y, cold passes)} for the shipped rows and each group's, plus the validation and shift_dev
    features, from the run's cache (what a group needs beyond it is computed and cached on first use)."""
    from pneumo.io import folders

    splits = folders.kaggle_splits(config.data_dir)
    fit_s, val_s = folders.split_by_patient(splits["train"], config.val_fraction, config.seed)
    train = extract(splits["train"], "train")
    fit, val, view = train.subset(fit_s), train.subset(val_s), extract(fit_s, "train view 1", 1)
    base = [fit.x, view.x], [fit.y, view.y]
    out = {"plain + view 1 of every fit film (shipped)": (*base, COLD_PASSES)}
    if "cheaper" in groups:
        out.update(_cheaper(config, fit_s, fit, view))
    if "fraction" in groups:
        out.update(_fractions(config, fit, view))
    if "adults" in groups:
        out.update(_with_adults(config, extract, base))
    if "stretch" in groups:
        stretched = extract(fit_s, "train view 1, stretched", 1, replace(config.augment, stretch_max=STRETCH))
        out[f"plain + view 1 stretched (--view-stretch {STRETCH})"] = ([fit.x, stretched.x], [fit.y, stretched.y],
                                                                       COLD_PASSES)
        out["plain + view 1 + view 1 stretched"] = ([*base[0], stretched.x], [*base[1], stretched.y],
                                                     COLD_PASSES + len(fit.y))
    shift = extract(folders.scan_class_folder(SHARED / "shift_dev"), "shift_dev")
    return {name: (np.concatenate(x), np.concatenate(y), passes) for name, (x, y, passes) in out.items()}, val, shift


def _cheaper(config, fit_s, fit, view) -> dict:
    from pneumo.io import folders

    n, rng = len(fit.y), np.random.default_rng(config.seed)
    half = rng.permutation(n) < n // 2
    chosen = {s.path for s in folders.balance_classes(fit_s, config.seed)}  # as train.py --balance-views draws them
    balanced = np.array([p in chosen for p in view.paths])
    return {
        "view 1 of every fit film, no plain fit rows": ([view.x], [view.y], COLD_PASSES - n + n // 8),
        "each fit film once: plain for a random half, view 1 for the other half":
            ([fit.x[half], view.x[~half]], [fit.y[half], view.y[~half]], COLD_PASSES - n),
        "plain of every fit film + view 1 of every normal one and as many pneumonia ones (--balance-views)":
            ([fit.x, view.x[balanced]], [fit.y, view.y[balanced]], COLD_PASSES - n + int(balanced.sum())),
    }


def _fractions(config, fit, view) -> dict:
    """Plain rows of every fit film, view 1 of a random (seeded) fraction of them: each view is a pass saved."""
    n, out = len(fit.y), {}
    for fraction in FRACTIONS:
        keep = np.random.default_rng(config.seed).permutation(n) < int(round(fraction * n))
        out[f"plain of every fit film + view 1 of a random {fraction:.0%}"] = (
            [fit.x, view.x[keep]], [fit.y, view.y[keep]], COLD_PASSES - n + int(keep.sum()))
    return out


def _with_adults(config, extract, base) -> dict:
    """The shipped rows plus the population check's adult fit patients' films (plain and view 1), labelled."""
    from pneumo.io import folders

    labels = {s.path: s.label for s in folders.scan_class_folder(SHARED / "adult_dev")}
    adults = folders.split_by_patient(folders.scan_images(SHARED / "adult_dev"), config.adult_holdout, config.seed)[0]
    adults = [folders.Sample(s.path, labels[s.path], s.patient) for s in adults]
    a0, a1 = extract(adults, "adult fit films", 0), extract(adults, "adult fit films, view 1", 1)
    ax, ay = np.concatenate([a0.x, a1.x]), np.concatenate([a0.y, a1.y])
    plus = lambda keep, copies: ([*base[0], *[ax[keep]] * copies], [*base[1], *[ay[keep]] * copies])  # noqa: E731
    return {"shipped + the check's adult fit films (both labels, plain + view 1)": (*plus(ay >= 0, 1),
                                                                                    COLD_PASSES + len(ay)),
            "shipped + the same adult films x10": (*plus(ay >= 0, 10), COLD_PASSES + len(ay)),
            "shipped + the adult NORMAL films x10": (*plus(ay == 0, 10), COLD_PASSES + len(ay))}


def scored(config, fit_x, fit_y, val, shift) -> tuple[float, dict, dict]:
    """(threshold, validation metrics, shift_dev metrics) of the head train.py fits on these rows."""
    import keras

    from pneumo.model import build
    from pneumo.train import loop, metrics

    keras.utils.set_random_seed(config.seed)
    head = build.build_head_model(config.head)
    loop._fit_heads_into(head, config, fit_x, fit_y, val.x, val.y, log=lambda *_: None)
    val_p = loop.predict_head(head, val.x)
    threshold = metrics.choose_threshold(val.y, val_p, config.threshold_rule)
    return (threshold, metrics.binary_metrics(val.y, val_p, threshold),
            metrics.binary_metrics(shift.y, loop.predict_head(head, shift.x), threshold))


TRANSFORMS = ("none", "zone-l2", "film-mean")


def normaliser(name: str, fit_x: np.ndarray, zones: int):
    """A per-film normalisation of pooled features, scaled back to the fit rows' typical size (so log1p -> BN ->
    Dense sees values of the usual magnitude): each lung zone's 512 features to the same L2 norm ("zone-l2"), or
    all of them by their mean ("film-mean"). Tried because washed-out or dense films change every feature's
    scale at once."""
    if name == "none":
        return lambda x: x
    by_zone = lambda x: x.reshape(len(x), zones, -1)  # noqa: E731 (the zones' features come zone after zone)
    if name == "zone-l2":
        size = float(np.linalg.norm(by_zone(fit_x), axis=2).mean())
        return lambda x: (by_zone(x) / (np.linalg.norm(by_zone(x), axis=2, keepdims=True) + 1e-6) * size
                          ).reshape(len(x), -1).astype(np.float32)
    size = float(fit_x.mean())
    return lambda x: (x / (x.mean(axis=1, keepdims=True) + 1e-6) * size).astype(np.float32)


def _run_spec(text: str) -> tuple[str, str]:
    cache, _, lungs = text.partition(":")
    if not Path(cache).is_dir() or not Path(lungs).is_file():
        raise argparse.ArgumentTypeError(f"expected CACHE_DIR:LUNGS_NPZ, both existing; got '{text}'")
    return cache, lungs


def default_run() -> tuple[str, str]:
    from pneumo.config import feature_cache_dir

    cache = feature_cache_dir()
    found = sorted(Path(cache).glob("lungs-*.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no lung head in {cache}: run the shipped train.py command first, or pass --run.")
    return str(cache), str(found[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=_run_spec, action="append", metavar="CACHE_DIR:LUNGS_NPZ",
                        help="a cold run's feature cache and lung head (repeatable)")
    parser.add_argument("--rows", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="groups of rows beside the shipped ones (default: all)")
    parser.add_argument("--transform", nargs="+", choices=TRANSFORMS, default=["none"],
                        help="per-film normalisations of the pooled features to fit each row with (default: none)")
    args = parser.parse_args(argv)
    runs = args.run or [default_run()]
    f = lambda m: " / ".join(f"{m[k]:.3f}" for k in ("accuracy", "sensitivity", "specificity", "auc"))  # noqa: E731
    print("| lung head | fit rows | cold passes | threshold | validation acc / sens / spec / AUC | "
          "shift_dev acc / sens / spec / AUC | shift_dev confusion |\n|---|---|---|---|---|---|---|")
    for cache, lungs in runs:
        config, extract, fingerprint = load_run(cache, lungs)
        found, val, shift = rows(config, extract, args.rows)
        for (name, (x, y, passes)), transform in itertools.product(found.items(), args.transform):
            norm = normaliser(transform, x, ZONES[config.pooling])
            threshold, v, s = scored(config, norm(x), y, replace(val, x=norm(val.x)), replace(shift, x=norm(shift.x)))
            name += "" if transform == "none" else f", features normalised ({transform})"
            print(f"| {fingerprint} | {name} | {passes:,} | {threshold:.3f} | {f(v)} | {f(s)} | "
                  f"{s['confusion']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
