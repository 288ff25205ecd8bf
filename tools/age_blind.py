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


class Projection:
    """Standardise log1p features on the plain fit films, remove `directions` (k, d), map back."""

    def __init__(self, plain: np.ndarray):
        self.mean, self.std = plain.mean(axis=0), plain.std(axis=0) + 1e-6
        self.directions = np.zeros((0, plain.shape[1]))

    def z(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = self.z(x)
        return (self.mean + self.std * (z - (z @ self.directions.T) @ self.directions)).astype(np.float32)


def adult_features(extract) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log1p lung-pooled features of adult_dev: the check's fit patients, the held-out ones, and the latter's labels."""
    from pneumo.io.folders import scan_images, split_by_patient

    fit_patients, held_patients = split_by_patient(scan_images(SHARED / "adult_dev"), 0.5, 0)  # train.py's split
    held = extract(held_patients, "adult_dev held-out patients")
    labels = np.array([p.parent.name == "PNEUMONIA" for p in held.paths], np.float32)
    return np.log1p(extract(fit_patients, "adult_dev fit patients").x), np.log1p(held.x), labels


def row(k: int, seed: int, y: dict, probs: dict, threshold: float) -> str:
    from pneumo.train.metrics import binary_metrics

    cells = [" / ".join(f"{m[key]:.3f}" for key in ("accuracy", "sensitivity", "specificity", "auc"))
             for m in (binary_metrics(y[name], probs[name], threshold) for name in ("val", "shift"))]
    normal_called = float(np.mean(probs["adults"][y["adults"] == 0] >= threshold))
    adult_auc = binary_metrics(y["adults"], probs["adults"], threshold)["auc"]
    return f"| {k} | {seed} | {cells[0]} | {cells[1]} | {normal_called:.0%} / {adult_auc:.3f} |"


def main(argv=None) -> int:
    parser = tool_parser(__doc__, seeds=3)
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS), help="directions projected out")
    parser.add_argument("--mean", action="store_true", help="project out the difference of the group means "
                        "(one direction) instead of the logistic-regression directions")
    args = parser.parse_args(argv)
    found = setup(args.model)
    from pneumo.io.folders import split_by_patient
    from pneumo.train.metrics import choose_threshold

    raw = {"train": pooled(found.maps["train"], True), "shift": pooled(found.maps["shift"], True)}
    fit_samples = split_by_patient(found.train, 0.15, 0)[0]
    views = view_features(fit_samples)
    adult_fit, adult_held, adult_y = adult_features(shipped_extractor()[1])
    plain = np.log1p(raw["train"][found.rows["fit"]])
    inputs = {"fit": np.concatenate([plain, np.log1p(np.stack([views[s.path] for s in fit_samples]))]),
              "val": np.log1p(raw["train"][found.rows["val"]]), "shift": np.log1p(raw["shift"]), "adults": adult_held}
    y = {**found.y, "fit": np.concatenate([found.y["fit"], found.y["fit"]]), "adults": adult_y}
    print("| directions out | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "held-out adults: normal called PNEUMONIA / AUC |\n|---|---|---|---|---|")
    project = Projection(plain)
    for k in args.dims:
        project.directions = nullspace(project.z(plain), project.z(adult_fit), k, mean=args.mean)
        x = {name: project(v) for name, v in inputs.items()}
        for seed in range(args.seeds):
            head = fit("linear", x["fit"], y["fit"], x["val"], y["val"], seed)
            probs = {name: head.predict(x[name], verbose=0)[:, 0] for name in ("val", "shift", "adults")}
            threshold = choose_threshold(y["val"], probs["val"], "sensitivity95")
            print(row(k, seed, y, probs, threshold), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
