"""One-off: which "is this a chest X-ray?" score accepts other hospitals' chest films and still catches other
radiographs? Compares, on the same films, cross-fitted by patient (2 folds over adult_dev and lung_masks):

A. one Gaussian distance on pooled features fitted on train fit patients + the fit fold of adult_dev and lung_masks,
   cut-off at a percentile of the held-out chest films (pooled): 99, 99.5, 99.9, 100;
B. a logistic regression chest vs non-chest radiographs on the 512 pooled features, fitted on hands only and
   measured on pelvises, and the reverse (does it generalise to a body part it never saw?);
C. the shipped form: log(distance) - beta * corr(lung signature, mean lung signature), cut-off the highest source's
   99.5th percentile of held-out scores; beta 0.8 / 1.0 / 1.2.
Every variant also flags "no plausible pair of lungs" (the lung head's rule), as the product does.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.chest_check_variants

About 15 minutes on 2 cores (one pass over train/ with the shipped bundle).
"""

from __future__ import annotations

import numpy as np

from tools.ood_report import SHARED, other_images


def features(predictor, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pooled features, lung signatures, no-lungs flags) of decoded images, batched."""
    from pneumo.infer.lung_fields import lung_reasons
    from pneumo.model.pooling import lung_signature
    from pneumo.preprocess import to_model_input

    feats, sigs, none = [], [], []
    for start in range(0, len(images), 16):
        batch = images[start:start + 16]
        run = predictor._run(np.stack([to_model_input(i, predictor.input_size) for i in batch]))
        feats.append(run.check_features)
        sigs.append(lung_signature(run.lungs, predictor.grid))
        none += [bool(lung_reasons(lungs)) for lungs in run.lungs]
    return np.concatenate(feats), np.concatenate(sigs), np.array(none)


def load_sets(predictor) -> dict:
    from tqdm import tqdm

    from pneumo.io import read_image
    from pneumo.io.folders import read_ages, scan_class_folder, scan_images, split_by_patient

    recipe = predictor.bundle.config["recipe"]
    fit, val = split_by_patient(scan_class_folder(SHARED / "chest_xray" / "train"), recipe["val_fraction"],
                                recipe["seed"])
    adults = scan_images(SHARED / "adult_dev")
    ages = read_ages(SHARED / "adult_dev")
    paths = {"kids_fit": [s.path for s in fit], "kids_val": [s.path for s in val],
             "shift": [s.path for s in scan_class_folder(SHARED / "shift_dev")],
             "adult": [s.path for s in adults], "masks": sorted((SHARED / "lung_masks" / "images").iterdir()),
             "hand": sorted((SHARED / "not_chest_dev" / "hand").iterdir()),
             "pelvis": sorted((SHARED / "not_chest_dev" / "pelvis_hip").iterdir())}
    out = {name: features(predictor, [read_image(p) for p in tqdm(ps, desc=name)]) for name, ps in paths.items()}
    out["others"] = features(predictor, [read_image(data, n) for n, data in other_images().items()])
    out["adult_patient"] = np.array([s.patient for s in adults])
    out["adult_minor"] = np.array([ages[s.path] < 18 for s in adults])
    return out


def log1p(x):
    return np.log1p(np.maximum(x, 0).astype(np.float64))


def gaussian(x, shrinkage=0.1):
    lx = log1p(x)
    mean = lx.mean(0)
    cov = np.cov(lx - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(mean))
    precision = np.linalg.inv(cov)
    return lambda f: np.sqrt(np.einsum("ij,jk,ik->i", log1p(f) - mean, precision, log1p(f) - mean))


def correlation(template):
    b = (template - template.mean()) / np.linalg.norm(template - template.mean())
    return lambda s: (s - s.mean(1, keepdims=True)) @ b / (np.linalg.norm(s - s.mean(1, keepdims=True), axis=1)
                                                           + 1e-9)


def folds(ids, k=2, seed=0):
    unique = np.unique(ids)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold = {unique[i]: j % k for j, i in enumerate(order)}
    return np.array([fold[i] for i in ids])


def cross_fit(d) -> dict:
    """{set: [(distance, lung match, no lungs) per fold]}: held-out films under a Gaussian fitted without them."""
    adult_fold, mask_fold = folds(d["adult_patient"]), folds(np.arange(len(d["masks"][0])))
    out = {}
    for k in range(2):
        parts = [d["kids_fit"], tuple(a[adult_fold != k] for a in d["adult"]),
                 tuple(a[mask_fold != k] for a in d["masks"])]
        distance = gaussian(np.concatenate([p[0] for p in parts]))
        match = correlation(np.mean([p[1].mean(0) for p in parts], 0))
        held = {"kids_val": d["kids_val"], "adult": tuple(a[adult_fold == k] for a in d["adult"]),
                "masks": tuple(a[mask_fold == k] for a in d["masks"]), "shift": d["shift"],
                "minors": tuple(a[(adult_fold == k) & d["adult_minor"]] for a in d["adult"]),
                "hand": d["hand"], "pelvis": d["pelvis"], "others": d["others"]}
        for name, (f, s, none) in held.items():
            out.setdefault(name, []).append((distance(f), match(s), none))
    return out


CHEST = ("kids_val", "adult", "masks")  # where cut-offs are set
SHOWN = ("kids_val", "shift", "adult", "minors", "masks", "hand", "pelvis", "others")


def rates(held, score, cuts) -> str:
    """Share flagged per set (the score over the fold's cut-off, or no lungs), averaged over the folds."""
    found = {n: np.mean([np.mean((score(d, c) > cuts[k]) | none) for k, (d, c, none) in enumerate(held[n])])
             for n in SHOWN}
    return "  ".join(f"{n} {r:.3f}" for n, r in found.items())


def variant_a(held) -> None:
    print("A. one Gaussian distance, cut-off at a percentile of the pooled held-out chest films")
    for pct in (99, 99.5, 99.9, 100):
        cuts = [np.percentile(np.concatenate([held[n][k][0] for n in CHEST]), pct) for k in range(2)]
        print(f"   {pct:>5}: " + rates(held, lambda d, c: d, cuts))


def variant_b(d) -> None:
    from pneumo.infer.population import fit_logistic

    chest = np.concatenate([d["kids_fit"][0][::8], d["adult"][0], d["masks"][0]])
    print("B. logistic regression chest vs one body part, on the other body part (never seen)")
    for seen, unseen in (("hand", "pelvis"), ("pelvis", "hand")):
        x = log1p(np.concatenate([chest, d[seen][0]]))
        mean, scale = x.mean(0), x.std(0) + 1e-6
        w, b = fit_logistic((x - mean) / scale, np.r_[np.zeros(len(chest)), np.ones(len(d[seen][0]))], 0.01)
        caught = np.mean(((log1p(d[unseen][0]) - mean) / scale) @ w + b > 0)
        print(f"   fitted on {seen}, {unseen} caught by the score alone: {caught:.2f}")


def variant_c(held) -> None:
    print("C. log(distance) - beta * lung match, cut-off the highest source's 99.5th percentile")
    for beta in (0.8, 1.0, 1.2):
        def score(d, c, beta=beta):
            return np.log(d) - beta * c
        cuts = [max(np.percentile(score(*held[n][k][:2]), 99.5) for n in CHEST) for k in range(2)]
        print(f"   {beta:>5}: " + rates(held, score, cuts))


def main() -> None:
    from pneumo import import_tensorflow_quietly

    import_tensorflow_quietly()
    from pneumo.infer.predictor import Predictor

    data = load_sets(Predictor.load())
    held = cross_fit(data)
    print("share flagged 'not a chest X-ray' (no-lungs rule included); chest films held out of the fit")
    variant_a(held)
    variant_b(data)
    variant_c(held)


if __name__ == "__main__":
    main()
