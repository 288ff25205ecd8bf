"""Would the population check do better reading the lungs too? Its global-average features (shipped) against the
global average and the lung-masked average side by side (what the pneumonia head reads; no extra pass).

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.population_variants

Each variant is fitted as `train.py --adult-dir` fits the shipped one (same fit patients, adult patients, form
views and cut-off at the 99.5th percentile of the pediatric validation patients' scores) and measured on films
it was not fitted on, in every form of `tools.population_report` but the two 2048 px ones: held-out adult_dev
patients, the lung_masks adults (other hospitals) and the val/ originals. "At the strictest cut-off" moves the
cut-off to the highest validation child's score: how much room the check has before it misses adults.
shift_dev is not looked at here: this chooses between variants. ~3 minutes (the training films cached).
"""

from __future__ import annotations

import sys

import numpy as np

from tools.lung_pooling import shipped_extractor
from tools.population_report import FORMS, SHARED, read_in_form

SMALL_FORMS = [name for name in FORMS if not name.startswith("2048")]
VARIANTS = {"global average, 20 form directions (shipped)": (512, 20),
            "global + lung-masked average, 20 form directions": (1024, 20),
            "global + lung-masked average, 40 form directions": (1024, 40)}


def features() -> dict:
    """[global | lung-masked] averages of every set, through train.py's own extractor and cache."""
    from pneumo.io import folders
    from pneumo.preprocess import FormConfig, to_model_input

    config, extract = shipped_extractor()
    both = lambda labelled: np.concatenate([labelled.checks, labelled.x], 1)  # noqa: E731
    fit_s, val_s = folders.split_by_patient(folders.kaggle_splits(config.data_dir)["train"], 0.15, 0)
    adult_fit, adult_held = folders.split_by_patient(folders.scan_images(SHARED / "adult_dev"), 0.5, 0)
    form, sample = FormConfig(**config.augment.to_dict()), fit_s[::8]
    out = {"fit": both(extract(fit_s, "fit")), "val": both(extract(val_s, "validation")),
           "child": [both(extract(sample, f"child {v}", v, form if v else None)) for v in range(3)],
           "adult": [both(extract(adult_fit, f"adult {v}", v, form if v else None)) for v in range(3)]}
    network = extract.lungs[1]
    sets = {"adult_dev, held-out patients": [s.path for s in adult_held],
            "lung_masks (other hospitals)": sorted((SHARED / "lung_masks" / "images").glob("*.png")),
            "val/ originals": [s.path for s in folders.scan_class_folder(SHARED / "chest_xray" / "val")]}
    for name, files in sets.items():
        for form_name in SMALL_FORMS:
            images = [read_in_form(p, FORMS[form_name]) for p in files]
            out[(name, form_name)] = np.concatenate([network(np.stack([to_model_input(i) for i in images[k:k + 16]]))
                                                     for k in range(0, len(images), 16)])
    return out


def main() -> int:
    from pneumo.infer import population

    found = features()
    print("| check reads | films | form | flagged | at the strictest cut-off |\n|---|---|---|---|---|")
    for name, (width, dims) in VARIANTS.items():
        cut = lambda x: x[:, :width]  # noqa: E731
        check = population.fit_with_forms(cut(found["fit"]), [cut(x) for x in found["child"]],
                                          [cut(x) for x in found["adult"]], cut(found["val"]), dims)
        strictest = check.score(cut(found["val"])).max()
        for key in (k for k in found if isinstance(k, tuple)):
            scores = check.score(cut(found[key]))
            print(f"| {name} | {key[0]} | {key[1]} | {np.mean(scores > check.cutoff):.1%} | "
                  f"{np.mean(scores > strictest):.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
