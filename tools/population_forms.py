"""Could the population check make do with fewer form views (fewer VGG16 passes in a cold run)? The check fitted as
train.py fits it, with the shipped two form views of every 8th fit child and of the fitted adults, and with one.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.population_forms \
        [--cache-dir DIR]

The form views (random sharpness and JPEG compression, pneumo.preprocess.FormConfig) of the 554 sampled children
are 1,108 of a cold run's 12,085 passes (docs/experiments.md, "Cold training"). Flag counts on films no variant was
fitted on: the held-out adult_dev patients, the lung_masks adults (other hospitals) and the val/ originals, in four
forms of tools.population_report, and the pediatric validation patients (where the cut-off is set). shift_dev is not
looked at. DIR: train.py's feature cache of a run of the shipped command (default: train.py's default); ~3 minutes
with it filled, as the films in their forms go through VGG16 (888 passes).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tools.fit_rows import SHIPPED
from tools.population_report import FORMS, SHARED, read_in_form

SHOWN_FORMS = ("as stored", "224 px JPEG", "DICOM (pixels only)", "2048 px 16-bit PNG")
# (child form views, adult form views) fitted, by view number; 0 is the plain film
VARIANTS = {"2 form views of each child and adult (shipped)": ((1, 2), (1, 2)),
            "1 form view of each child (view 1)": ((1,), (1, 2)),
            "1 form view of each child (view 2)": ((2,), (1, 2)),
            "1 form view of each child and adult (view 1)": ((1,), (1,))}


def fitted_features(cache_dir: str | None) -> dict:
    """The global averages the check is fitted on, by train.py's own extractor, cache and check code."""
    import train
    from pneumo.io import folders
    from pneumo.train.checks import form_features
    from pneumo.train.loop import _Extractor
    from pneumo.train.lungs import fit_lung_head
    from pneumo.train.options import from_arguments

    config = from_arguments(train.parse_args(SHIPPED.split() + (["--cache-dir", cache_dir] if cache_dir else [])))
    config.validate()
    extract = _Extractor(config, fit_lung_head(config, log=lambda *_: None)[0])
    fit_s, val_s = folders.split_by_patient(folders.kaggle_splits(config.data_dir)["train"], config.val_fraction,
                                            config.seed)
    _, held, adult, child = form_features(config, extract, fit_s, views=(1, 2))
    return {"fit": extract(fit_s, "fit").checks, "val": extract(val_s, "validation").checks,
            "child": child, "adult": adult, "network": extract.network, "held": [s.path for s in held]}


def test_sets(found: dict) -> dict:
    """{(set, form): global averages} of the films no variant is fitted on."""
    from pneumo.io import folders
    from pneumo.preprocess import to_model_input

    sets = {"adult_dev, held-out patients": found["held"],
            "lung_masks (other hospitals)": sorted((SHARED / "lung_masks" / "images").glob("*.png")),
            "val/ originals": [s.path for s in folders.scan_class_folder(SHARED / "chest_xray" / "val")]}
    out = {}
    for name, files in sets.items():
        for form in SHOWN_FORMS:
            images = [to_model_input(read_in_form(p, FORMS[form])) for p in files]
            out[(name, form)] = np.concatenate([found["network"](np.stack(images[k:k + 16]))
                                                for k in range(0, len(images), 16)])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=None, help="train.py's feature cache (default: its default)")
    from pneumo.infer import population

    found = fitted_features(parser.parse_args(argv).cache_dir)
    tests = test_sets(found)
    print("| check | " + " | ".join(f"{name}: {form}" for name, form in tests) + " | validation children |")
    print("|---" * (len(tests) + 2) + "|")
    for name, (child, adult) in VARIANTS.items():
        check = population.fit_with_forms(found["fit"], [found["child"][v] for v in (0, *child)],
                                          [found["adult"][v] for v in (0, *adult)], found["val"])
        cells = [f"{int(check.flags(x).sum())}/{len(x)}" for x in (*tests.values(), found["val"])]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
