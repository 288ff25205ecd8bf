"""Does the pneumonia head read age? The shipped head fitted after the directions that tell children from adults
are projected out of its features.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.age_blind

The model calls 77% of normal adults PNEUMONIA, and the normal children of shift_dev it calls PNEUMONIA look
older than the training children (README, Safety and limits). If "older-looking" is part of what the head reads
as pneumonia, a head that cannot see it should call fewer of them. Iterative nullspace projection (Ravfogel et
al. 2020): a logistic regression tells the pediatric fit films from the population check's adult fit patients
(adult_dev, the same patient split as `train.py --adult-dir`), its direction is projected out of the standardised
log1p lung-pooled features, and again, `k` times. Then the shipped recipe's head (log1p, BatchNorm, Dense(1),
L2 0.01, plain view plus view 1 of every fit film, as `train.py --views 1`) on what is left; sensitivity95
threshold on the validation patients. Nothing is fitted on shift_dev or on the held-out adults: they are only
scored. ~5 minutes with the views cached (train.py's feature cache) and the maps of tools.lung_pooling.
"""

from __future__ import annotations

import sys

import numpy as np

from tools.lung_pooling import SHARED, fit, pooled, setup, shipped_extractor, tool_parser
from tools.views_fit import view_features

DIMS = (0, 1, 2, 4, 8, 16)


def nullspace(children: np.ndarray, adults: np.ndarray, k: int, l2: float = 0.01, mean: bool = False) -> np.ndarray:
    """(k, d) orthonormal directions, each the logistic-regression direction separating the two groups once the
    ones before it are projected out (inputs standardised). `mean`: the difference of the group means instead
    (what moves adults, on average, along every direction the head may read)."""
    from pneumo.infer.population import fit_logistic

    if mean and k:
        difference = adults.mean(axis=0) - children.mean(axis=0)
        return (difference / np.linalg.norm(difference))[None]
    x = np.concatenate([children, adults])
    y = np.concatenate([np.zeros(len(children)), np.ones(len(adults))])
    found = np.zeros((0, x.shape[1]))
    for _ in range(k):
        w, _ = fit_logistic(x - (x @ found.T) @ found, y, l2)
        w -= found.T @ (found @ w)  # numerically back inside the nullspace
        found = np.vstack([found, w / np.linalg.norm(w)])
    return found


def main(argv=None) -> int:
    parser = tool_parser(__doc__, seeds=3)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS), help="directions projected out")
    parser.add_argument("--mean", action="store_true", help="project out the difference of the group means "
                        "(one direction) instead of the logistic-regression directions")
    args = parser.parse_args(argv)
    found = setup(args.model)
    from pneumo.io.folders import scan_images, split_by_patient
    from pneumo.train import metrics
    from pneumo.train.metrics import binary_metrics

    raw = {"train": pooled(found.maps["train"], True), "shift": pooled(found.maps["shift"], True)}
    fit_samples = split_by_patient(found.train, 0.15, 0)[0]
    views = view_features(fit_samples)
    extract = shipped_extractor()[1]
    adults_fit, adults_held = split_by_patient(scan_images(SHARED / "adult_dev"), 0.5, 0)
    adult_fit = np.log1p(extract(adults_fit, "adult_dev fit patients").x)
    held = extract(adults_held, "adult_dev held-out patients")
    held_x = np.log1p(held.x)
    held_y = np.array([p.parent.name == "PNEUMONIA" for p in held.paths], np.float32)

    plain = np.log1p(raw["train"][found.rows["fit"]])
    mean, std = plain.mean(axis=0), plain.std(axis=0) + 1e-6
    z = lambda v: (v - mean) / std  # noqa: E731
    fit_x = np.concatenate([plain, np.log1p(np.stack([views[s.path] for s in fit_samples]))])
    fit_y = np.concatenate([found.y["fit"], found.y["fit"]])
    val_x, shift_x = np.log1p(raw["train"][found.rows["val"]]), np.log1p(raw["shift"])
    print("| directions out | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "held-out adults: normal called PNEUMONIA / AUC |\n|---|---|---|---|---|")
    for k in args.dims:
        gone = nullspace(z(plain), z(adult_fit), k, mean=args.mean)
        project = lambda v: mean + std * (z(v) - (z(v) @ gone.T) @ gone)  # noqa: E731
        sets = [project(v).astype(np.float32) for v in (fit_x, val_x, shift_x, held_x)]
        for seed in range(args.seeds):
            head = fit("linear", sets[0], fit_y, sets[1], found.y["val"], seed)
            val_p, shift_p, held_p = (head.predict(v, verbose=0)[:, 0] for v in sets[1:])
            threshold = metrics.choose_threshold(found.y["val"], val_p, "sensitivity95")
            cells = [binary_metrics(labels, probs, threshold)
                     for labels, probs in ((found.y["val"], val_p), (found.y["shift"], shift_p))]
            cells = [" / ".join(f"{m[key]:.3f}" for key in ("accuracy", "sensitivity", "specificity", "auc"))
                     for m in cells]
            normal_called = float(np.mean(held_p[held_y == 0] >= threshold))
            adult_auc = binary_metrics(held_y, held_p, threshold)["auc"]
            print(f"| {k} | {seed} | {cells[0]} | {cells[1]} | {normal_called:.0%} / {adult_auc:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
