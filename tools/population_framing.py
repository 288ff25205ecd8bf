"""Can the population check stop flagging children framed otherwise (a crop, a black border) without missing
adults? Variants of the shipped check, each fitted as `train.py --adult-dir` fits it (same fit patients, adult
patients, form views, cut-off at the 99.5th percentile of the pediatric validation patients' scores as stored):

- form views with a random black border around the whole film, before the preprocessing contract
  (`FormConfig.border_max`; both sides), with form views for every 8th or every 4th fit child;
- a stronger L2 on the logistic regression (shipped: 0.01);
- half of the lung_masks films (other hospitals) as a second adult source.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.population_framing

Measured on films no variant was fitted on: held-out adult_dev patients, the odd half of lung_masks, the val/
originals and every second pediatric validation patient, each as stored (224 px JPEG for the adults) and framed
as `tools.population_report --framing` frames them (central 80%, a 10% black border per side; the border views
draw each side's width from 0 to `border_max`, so 10% all round is one case among many); also the even half of
lung_masks, which the "+ lung_masks" variants were fitted on. shift_dev is not looked at: this chooses between
variants. ~20 minutes cold, under a minute once the features are cached.
"""

from __future__ import annotations

import sys

import numpy as np

from tools.population_report import FORMS, FRAMINGS, SHARED, read_in_form

# name: (border_max of the form views, form views for every n-th fit child, L2, also adults from lung_masks)
VARIANTS = {"shipped (no border, L2 0.01)": (0.0, 8, 1e-2, False),
            "border up to 15% per side": (0.15, 8, 1e-2, False),
            "border up to 15%, form views for every 4th child": (0.15, 4, 1e-2, False),
            "L2 0.03": (0.0, 8, 0.03, False),
            "L2 0.1": (0.0, 8, 0.1, False),
            "L2 0.3": (0.0, 8, 0.3, False),
            "L2 1": (0.0, 8, 1.0, False),
            "+ lung_masks even half as adults": (0.0, 8, 1e-2, True),
            "+ lung_masks even half as adults, L2 0.1": (0.0, 8, 0.1, True)}
EVAL_FORMS = {"as stored": FORMS["as stored"], "224 px JPEG": FORMS["224 px JPEG"],  # squeezing moves nothing
              "80% crop": FRAMINGS["central 80% crop"], "10% border": FRAMINGS["black border, 10% per side"]}


def _extractor():
    from pneumo.train.loop import _Extractor
    from pneumo.train.options import TrainConfig

    config = TrainConfig(data_dir=SHARED / "chest_xray", adult_dirs=(SHARED / "adult_dev",))
    config.validate()
    return config, _Extractor(config)


def training_features(config, extract) -> dict:
    """Plain and form-view global averages of the fit children and adult fit patients, per variant."""
    from pneumo.io import folders
    from pneumo.preprocess import FormConfig

    fit_s, val_s = folders.split_by_patient(folders.kaggle_splits(config.data_dir)["train"], 0.15, 0)
    adult_fit, _ = folders.split_by_patient(folders.scan_images(SHARED / "adult_dev"), 0.5, 0)
    other_fit = [s for s in folders.scan_images(SHARED / "lung_masks" / "images")][::2]
    out = {"fit": extract(fit_s, "fit", checks_only=True).x, "val": extract(val_s, "validation", checks_only=True).x}
    for name, (border, every, _, other) in VARIANTS.items():
        form, sample = FormConfig(**config.augment.to_dict(), border_max=border), fit_s[::every]
        sides = (("child", sample), ("adult", adult_fit + other_fit * other))
        out[name] = {side: [extract(films, f"{side} {v}", v, form if v else None, checks_only=True).x
                            for v in range(3)] for side, films in sides}
    return out


def evaluation_features(config, extract) -> dict:
    """Global averages of the films the variants are measured on, in each form (cached: ~6 minutes cold)."""
    import pickle

    from pneumo.io import folders
    from pneumo.preprocess import to_model_input

    _, val_s = folders.split_by_patient(folders.kaggle_splits(config.data_dir)["train"], 0.15, 0)
    _, adult_held = folders.split_by_patient(folders.scan_images(SHARED / "adult_dev"), 0.5, 0)
    other = folders.scan_images(SHARED / "lung_masks" / "images")
    sets = {"NIH adults, held out": ("adult", [s.path for s in adult_held]),
            "other hospitals (lung_masks odd)": ("adult", [s.path for s in other[1::2]]),
            "val/ originals": ("child", [s.path for s in folders.scan_class_folder(SHARED / "chest_xray" / "val")]),
            "validation children (every 2nd)": ("child", [s.path for s in val_s[::2]]),
            "lung_masks even": ("adult", [s.path for s in other[::2]])}  # fitted on by the "+ lung_masks" variants
    cache = config.cache_dir / f"population_framing-{extract.fingerprint}.pkl"
    out = pickle.loads(cache.read_bytes()) if cache.exists() else {}
    for name, (kind, files) in sets.items():
        for form_name, form in EVAL_FORMS.items():
            if (kind, form_name) in (("adult", "as stored"), ("child", "224 px JPEG")) or (kind, name, form_name) in out:
                continue  # adults are stored large: the small form is the hard one; children are stored small
            images = [read_in_form(p, form) for p in files]
            out[(kind, name, form_name)] = np.concatenate(
                [extract.network(np.stack([to_model_input(i) for i in images[k:k + 16]]))
                 for k in range(0, len(images), 16)])
            print(f"  features: {name}, {form_name}", file=sys.stderr, flush=True)
            cache.write_bytes(pickle.dumps(out))
    return out


def main() -> int:
    from pneumo.infer import population

    config, extract = _extractor()
    train, found = training_features(config, extract), evaluation_features(config, extract)
    columns = list(found)
    print("| check | " + " | ".join(f"{films}: {form}" for _, films, form in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in VARIANTS:
        check = population.fit_with_forms(train["fit"], train[name]["child"], train[name]["adult"], train["val"],
                                          l2=VARIANTS[name][2])
        cells = [f"{check.flags(found[key]).sum()}/{len(found[key])}" for key in columns]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
