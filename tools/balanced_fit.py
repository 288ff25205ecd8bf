"""Does the head need all of train/? The shipped head fitted on every fit film against `train.py --balance`.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.balanced_fit

Kaggle's train/ holds ~3 pneumonia films per normal one and the head already weights the classes equally, so
the extra pneumonia films may buy nothing but backbone passes (the cost of cold training). Same cached maps,
patient split (seed 0) and head as `python -m tools.lung_pooling` (the bundle's lung head, lung-masked pooling,
log1p -> BatchNorm -> Dense(1), L2 0.01; sensitivity95 threshold on the validation patients; shift_dev only
scored); each seed draws the balanced subset (`pneumo.io.folders.balance_classes`, as `train.py --balance
--seed N` does) and initialises the head. ~2 minutes with the maps cached (~20 minutes cold).
"""

from __future__ import annotations

import sys

import numpy as np

from tools.lung_pooling import _row, fit, heat_shares, pooled, setup, tool_parser


def main(argv=None) -> int:
    args = tool_parser(__doc__, seeds=3).parse_args(argv)
    found = setup(args.model)
    from pneumo.io.folders import balance_classes, split_by_patient
    from pneumo.train import metrics

    features = {"train": pooled(found.maps["train"], True), "shift": pooled(found.maps["shift"], True)}
    fit_samples = split_by_patient(found.train, 0.15, 0)[0]
    row_of = {s.path: i for i, s in enumerate(found.train)}
    val_x, shift_x = np.log1p(features["train"][found.rows["val"]]), np.log1p(features["shift"])
    print("| fit films | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "shift_dev heat in lungs |\n|---|---|---|---|---|")
    for balanced in (False, True):
        for seed in range(args.seeds):
            chosen = balance_classes(fit_samples, seed) if balanced else fit_samples
            rows = np.array([row_of[s.path] for s in chosen])
            labels = np.array([s.label for s in chosen], np.float32)
            head = fit("linear", np.log1p(features["train"][rows]), labels, val_x, found.y["val"], seed)
            val_p, shift_p = (head.predict(x, verbose=0)[:, 0] for x in (val_x, shift_x))
            threshold = metrics.choose_threshold(found.y["val"], val_p, "sensitivity95")
            heat = heat_shares(head, features["shift"], found.maps["shift"], found.y["shift"], shift_p, threshold,
                               True, True)
            name = f"{'balanced' if balanced else 'all'}: {len(chosen)} ({int(labels.sum())} pneumonia)"
            _row(name, str(seed), threshold, found.y, val_p, shift_p, heat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
