"""Do augmented views help the lung-pooled head? The shipped head fitted on the plain view only (shipped up to
commit edbb5ee), plus one augmented view of the normal fit films (`train.py --views 1 --augment-classes NORMAL`),
plus one of every fit film (`--views 1`, shipped now), plus two (`--views 2`).

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.views_fit

The views are `pneumo.preprocess.AugmentConfig`'s (rotation, zoom 1-1.45: tighter frames, shift, contrast):
tight crops of normal chests take away the "tight frame = pneumonia" shortcut of the training films. Same
cached maps, patient split (seed 0) and head as `python -m tools.lung_pooling` (the bundle's lung head,
lung-masked pooling, log1p -> BatchNorm -> Dense(1), L2 0.01; sensitivity95 threshold on the validation
patients; shift_dev only scored); the views' lung-masked averages come from train.py's own feature cache.
Each seed initialises the head. ~3 minutes with everything cached; each view costs one pass per fit film
(~14 minutes for all of them) on first use.
"""

from __future__ import annotations

import sys

import numpy as np

from tools.lung_pooling import _row, fit, heat_shares, pooled, setup, shipped_extractor, tool_parser

BOTH = ("NORMAL", "PNEUMONIA")
ROWS = {"plain view only (shipped up to edbb5ee)": ((), 0), "+ 1 view of each normal fit film": (("NORMAL",), 1),
        "+ 1 view of every fit film (shipped)": (BOTH, 1), "+ 2 views of every fit film": (BOTH, 2)}


def view_features(fit_samples: list, view: int = 1) -> dict:
    """Lung-masked averages of view `view` of every fit film, by path, through train.py's extractor and cache."""
    views = shipped_extractor()[1](fit_samples, f"train view {view}", view)
    return dict(zip(views.paths, views.x))


def main(argv=None) -> int:
    args = tool_parser(__doc__, seeds=3).parse_args(argv)
    found = setup(args.model)
    from pneumo.config import CLASS_NAMES
    from pneumo.io.folders import split_by_patient
    from pneumo.train import metrics

    features = {"train": pooled(found.maps["train"], True), "shift": pooled(found.maps["shift"], True)}
    fit_samples = split_by_patient(found.train, 0.15, 0)[0]
    views = {v: view_features(fit_samples, v) for v in (1, 2)}
    fit_x, fit_y = np.log1p(features["train"][found.rows["fit"]]), found.y["fit"]
    val_x, shift_x = np.log1p(features["train"][found.rows["val"]]), np.log1p(features["shift"])
    print("| fit on | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "shift_dev heat in lungs |\n|---|---|---|---|---|")
    for name, (classes, n_views) in ROWS.items():
        chosen = [s for s in fit_samples if CLASS_NAMES[s.label] in classes]
        x = np.concatenate([fit_x] + [np.log1p(np.stack([views[v][s.path] for s in chosen]))
                                      for v in range(1, n_views + 1)])
        y = np.concatenate([fit_y] + [np.array([s.label for s in chosen], np.float32)] * n_views)
        for seed in range(args.seeds):
            head = fit("linear", x, y, val_x, found.y["val"], seed)
            val_p, shift_p = (head.predict(v, verbose=0)[:, 0] for v in (val_x, shift_x))
            threshold = metrics.choose_threshold(found.y["val"], val_p, "sensitivity95")
            heat = heat_shares(head, features["shift"], found.maps["shift"], found.y["shift"], shift_p, threshold,
                               True, True)
            _row(name, str(seed), threshold, found.y, val_p, shift_p, heat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
