"""Verdict from the lungs? The shipped head against heads that pool block5 only over the lung fields.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_pooling

One ONNX pass per image (trunk + the bundle's lung decoder, v2 input) over train/ and shift_dev, cached in
~/.cache/pneumo/experiments. Heads are fitted on the same patient-wise fit split as train.py, thresholds chosen
on its validation patients (sensitivity95); shift_dev is only scored. Rows:
- the shipped bundle, with its own pooling and head;
- GAP, MLP head (the v2 head: BN, Dense 256, Dropout, BN, Dense 1; plain view only: a control for the rows below);
- GAP, linear head (BN -> Dense(1), L2) on log1p features;
- lung-masked average pooling of block5_pool, MLP and linear heads;
and for each, the share of Grad-CAM heat inside the predicted lungs on shift_dev pneumonia films called PNEUMONIA;
then how many children's films the "no plausible pair of lungs" check would flag. ~20 minutes cold, seconds cached.
For masked pooling the heatmap is the logit's own decomposition over positions (gradient x activation): positions
outside the lungs contribute nothing to the verdict, so they get no heat.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tools.appserver import ROOT

SHARED = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "pneumo" / "experiments"


def extract(paths: list[Path], trunk, keep_activations: bool, make_input=None) -> dict:
    """block5_pool maps (float16), lung maps (uint8) and, for shift_dev, block5_conv3 activations.
    `make_input(path)` gives the model input (default: the preprocessing contract on the file)."""
    from pneumo.io import read_image
    from pneumo.model.backends import max_pool2
    from pneumo.preprocess import to_model_input

    make_input = make_input or (lambda path: to_model_input(read_image(path)))
    pools, lungs, acts = [], [], []
    for start in tqdm(range(0, len(paths), 16), desc="block5 + lungs", unit="batch"):
        batch = np.stack([make_input(p) for p in paths[start:start + 16]])
        activations, lung = trunk(batch, every=True)
        pools.append(max_pool2(activations).astype(np.float16))
        lungs.append(np.rint(lung[..., 0] * 255).astype(np.uint8))
        if keep_activations:
            acts.append(activations.astype(np.float16))
    out = {"pool": np.concatenate(pools), "lungs": np.concatenate(lungs)}
    if keep_activations:
        out["activations"] = np.concatenate(acts)
    return out


def cached_maps(name: str, paths: list[Path], trunk, keep_activations: bool, key: str, make_input=None) -> dict:
    path = CACHE / f"{name}-{key}.npz"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, **extract(paths, trunk, keep_activations, make_input))
    with np.load(path) as stored:
        return {k: stored[k] for k in stored.files}


def pooled(maps: dict, masked: bool) -> np.ndarray:
    """Global average of block5_pool, or its average over the lung fields as `--pooling lungs` computes it."""
    from pneumo.model.pooling import lung_pool

    pool = maps["pool"].astype(np.float32)
    return lung_pool(pool, maps["lungs"] / 255.0) if masked else pool.mean(axis=(1, 2))


def linear_head(l2: float, dim: int = 512):
    import keras
    from keras import layers

    x = inputs = keras.Input((dim,))
    x = layers.BatchNormalization(name="head_bn1")(x)
    x = layers.Dense(1, kernel_regularizer=keras.regularizers.l2(l2), name="logit")(x)
    return keras.Model(inputs, layers.Activation("sigmoid")(x))


def fit(kind: str, fit_x, fit_y, val_x, val_y, seed: int = 0):
    """A head trained like train.py's (balanced class weights, best validation-loss epoch)."""
    import keras

    from pneumo.model.build import HeadConfig, build_head_model
    from pneumo.train.loop import fit_head
    from pneumo.train.options import TrainConfig

    keras.utils.set_random_seed(seed)
    head = build_head_model(HeadConfig()) if kind == "mlp" else linear_head(1e-2, fit_x.shape[1])
    fit_head(head, fit_x, fit_y, val_x, val_y, TrainConfig(data_dir=SHARED))
    return head


def logit_gradient(head, x: np.ndarray) -> np.ndarray:
    """d logit / d pooled features for a batch (the head's logit layer, not the sigmoid)."""
    import keras
    import tensorflow as tf

    logit_model = keras.Model(head.input, head.get_layer("logit").output)
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = logit_model(x, training=False)
    return tape.gradient(logits, x).numpy()


def pooling_positions(maps: dict) -> np.ndarray:
    """Each block5_conv3 position's weight in the lung pooling of `maps` (films with activations and lungs)."""
    from pneumo.model.backends import lung_pool_inputs

    return lung_pool_inputs(maps["activations"].astype(np.float32), maps["lungs"] / 255.0)[1]


def film_heats(head, features, activations, chosen, positions=None, log1p: bool = True) -> list[np.ndarray]:
    """The heatmaps of the films `chosen`: each position's gradient x activation (>= 0), times its weight in the
    pooling when `positions` are given (as the shipped heatmap is). `features` are the head's raw inputs."""
    x = np.log1p(features[chosen]) if log1p else features[chosen]
    gradient = logit_gradient(head, x) / (1 + features[chosen] if log1p else 1)
    return [np.maximum(activations[k].astype(np.float32) @ g, 0) * (1.0 if positions is None else positions[k])
            for k, g in zip(chosen, gradient)]


def heat_shares(head, features, maps: dict, labels, probs, threshold: float, masked: bool, log1p: bool) -> float:
    """Mean share of heat inside the predicted lungs, over pneumonia films called PNEUMONIA."""
    from pneumo.infer.lungs import heat_in_lungs, lung_fields

    chosen = np.flatnonzero((labels == 1) & (probs >= threshold))
    heats = film_heats(head, features, maps["activations"], chosen, pooling_positions(maps) if masked else None,
                       log1p)
    return float(np.mean([heat_in_lungs(h, lung_fields(maps["lungs"][k] / 255.0)) for h, k in zip(heats, chosen)]))


@dataclass
class Setup:
    """What both lung-pooling tools start from: the bundle, its one-pass ONNX trunk, the patient-wise split of
    train/ (train.py's) and shift_dev, the cached maps of both, and labels."""

    predictor: object
    trunk: object
    key: str  # the bundle's lung head: the caches are keyed by it
    train: list
    shift: list
    maps: dict
    rows: dict  # "fit", "val": rows of train/
    y: dict  # "fit", "val", "shift": labels


def setup(model: str | None) -> Setup:
    from pneumo import import_tensorflow_quietly

    import_tensorflow_quietly()
    import hashlib

    from pneumo.infer.predictor import Predictor
    from pneumo.io.folders import kaggle_splits, scan_class_folder, split_by_patient
    from pneumo.model.lungs import LUNGS_FILE
    from pneumo.model.onnx_graph import OnnxTrunk, trunk_to_onnx

    predictor = Predictor.load(model)
    if predictor.decoder is None:
        raise ValueError("the bundle has no lung head: train it with `python train.py ... --lung-masks DIR`.")
    key = hashlib.sha256((predictor.bundle.path / LUNGS_FILE).read_bytes()).hexdigest()[:12]
    trunk = OnnxTrunk(trunk_to_onnx(predictor.model, decoder=predictor.decoder))
    train = kaggle_splits(SHARED / "chest_xray")["train"]
    fit_s, val_s = split_by_patient(train, 0.15, 0)
    shift_s = scan_class_folder(SHARED / "shift_dev")
    maps = {"train": cached_maps("train", [s.path for s in train], trunk, False, key),
            "shift": cached_maps("shift_dev", [s.path for s in shift_s], trunk, True, key)}
    index = {s.path: i for i, s in enumerate(train)}
    rows = {name: np.array([index[s.path] for s in part]) for name, part in (("fit", fit_s), ("val", val_s))}
    y = {name: np.array([s.label for s in part], np.float32)
         for name, part in (("fit", fit_s), ("val", val_s), ("shift", shift_s))}
    return Setup(predictor, trunk, key, train, shift_s, maps, rows, y)


def shipped_extractor():
    """train.py's own feature extractor and cache for the shipped recipe (lung-pooled, the lung head it trains)."""
    from pneumo.train.loop import _Extractor
    from pneumo.train.lungs import fit_lung_head
    from pneumo.train.options import TrainConfig

    config = TrainConfig(data_dir=SHARED / "chest_xray", head_kind="linear", pooling="lungs", weight_decay=0.01,
                         lung_masks=SHARED / "lung_masks")
    config.validate()
    return config, _Extractor(config, fit_lung_head(config, log=lambda *_: None)[0])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def tool_parser(doc: str, seeds: int | None = None) -> argparse.ArgumentParser:
    """The lung tools' shared arguments: --model, and --seeds for those that fit each head more than once."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle with a lung head (default: weights/)")
    if seeds is not None:
        parser.add_argument("--seeds", type=_positive, default=seeds,
                            help=f"heads fitted per row, seeds 0.. (default {seeds})")
    return parser


def main(argv=None) -> int:
    args = tool_parser(__doc__).parse_args(argv)
    found = setup(args.model)
    from pneumo.infer.lungs import lung_fields, lung_reasons
    from pneumo.model.backends import NumpyHead, lung_pooled, sigmoid
    from pneumo.train import metrics

    predictor, maps, rows_of, y = found.predictor, found.maps, found.rows, found.y
    print("| head | pooling | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "shift_dev heat in lungs |\n|---|---|---|---|---|")
    shipped, by_lungs = NumpyHead(predictor.model), lung_pooled(predictor.model)
    shipped_val = sigmoid(shipped(pooled(maps["train"], by_lungs)[rows_of["val"]])[0])
    shipped_shift = sigmoid(shipped(pooled(maps["shift"], by_lungs))[0])
    head = predictor.bundle.config["recipe"]["head"]
    _row(f"shipped weights/ ({head.get('kind', 'mlp')}, views {predictor.bundle.config['recipe']['views']})",
         "lung-masked average" if by_lungs else "GAP", predictor.threshold, y, shipped_val, shipped_shift,
         _shipped_heat(predictor, maps["shift"], y["shift"], shipped_shift))
    for masked in (False, True):
        features = {"train": pooled(maps["train"], masked), "shift": pooled(maps["shift"], masked)}
        for kind, log1p in (("mlp", False), ("linear", True)):
            prep = (lambda v: np.log1p(v)) if log1p else (lambda v: v)
            fx, vx = (prep(features["train"][rows_of[s]]) for s in ("fit", "val"))
            head = fit(kind, fx, y["fit"], vx, y["val"])
            val_p = head.predict(vx, verbose=0)[:, 0]
            shift_p = head.predict(prep(features["shift"]), verbose=0)[:, 0]
            threshold = metrics.choose_threshold(y["val"], val_p, "sensitivity95")
            heat = heat_shares(head, features["shift"], maps["shift"], y["shift"], shift_p, threshold, masked, log1p)
            name = "MLP (the v2 head)" if kind == "mlp" else "BN -> Dense(1), L2 0.01, log1p"
            _row(name, "lung-masked average" if masked else "GAP", threshold, y, val_p, shift_p, heat)
    lung_area = float(np.mean([lung_fields(m / 255.0).mean() for m in maps["shift"]["lungs"]]))
    print(f"\nlung area (what a uniform heatmap scores), shift_dev mean: {lung_area:.1%}")
    for name, split in (("train/", maps["train"]), ("shift_dev", maps["shift"])):
        failed = sum(bool(lung_reasons(m / 255.0)) for m in split["lungs"])
        print(f"{name}: {failed} of {len(split['lungs'])} films with no plausible pair of lungs (the chest warning)")
    return 0


def _shipped_heat(predictor, maps, labels, probs) -> float:
    from pneumo.infer.gradcam import heatmap_from_weights
    from pneumo.infer.lungs import heat_in_lungs, lung_fields
    from pneumo.model.backends import NumpyHead, lung_pool_inputs, lung_pooled, pool_activations

    chosen = np.flatnonzero((labels == 1) & (probs >= predictor.threshold))
    acts = maps["activations"][chosen].astype(np.float32)
    lungs = maps["lungs"][chosen] / 255.0
    by_lungs = lung_pooled(predictor.model)
    head_input, positions = lung_pool_inputs(acts, lungs) if by_lungs else (pool_activations(acts), [None] * len(acts))
    _, grad = NumpyHead(predictor.model)(head_input)
    weights = grad / (acts.shape[1] * acts.shape[2])
    return float(np.mean([heat_in_lungs(heatmap_from_weights(a, w, True, p), lung_fields(m))
                          for a, w, p, m in zip(acts, weights, positions, lungs)]))


def _row(name, pooling, threshold, y, val_p, shift_p, heat, extra: str = "") -> None:
    from pneumo.train.metrics import binary_metrics

    cells = []
    for labels, probs in ((y["val"], val_p), (y["shift"], shift_p)):
        m = binary_metrics(labels, probs, threshold)
        cells.append(" / ".join(f"{m[k]:.3f}" for k in ("accuracy", "sensitivity", "specificity", "auc")))
    print(f"| {name} | {pooling} | {cells[0]} | {cells[1]} | {heat:.1%}{extra} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
