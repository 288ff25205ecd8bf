"""A tiny bundle whose scores spread across its threshold, with no training: the head is set by hand.

The tiny bundle (random 32 px backbone) scores every synthetic film about the same, so a test with it never sees
the NORMAL side of a verdict or of Grad-CAM. Here its files are read at 64 px, and its log1p -> BN -> Dense head is
replaced by a lesion detector in closed form: BatchNorm the identity, the Dense kernel the difference of the mean
log features of films with and without a bright opacity (`with_lesion`), the bias halfway between them. Films with
the lesion score ~0.95 or more, films without ~0.05 or less, against a threshold of 0.5 and a band of 0.3-0.7.
Without the chest X-ray check (synthetic films are far from everything), every synthetic film is assessed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import synth

SIZE = 64  # block5_conv3 4x4
FILM = (96, 96)
LESION = (0.35, 0.3)  # (row, column) of the opacity, in [0, 1) of the film: the upper left lung
THRESHOLD, BAND = 0.5, (0.3, 0.7)


def with_lesion(pixels: np.ndarray, where=LESION, amplitude: float = 0.6, radius: float = 0.08) -> np.ndarray:
    """The film with a bright round opacity centred at `where`."""
    height, width = pixels.shape
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    blob = amplitude * np.exp(-(((xx - where[1]) / radius) ** 2 + ((yy - where[0]) / radius) ** 2))
    return np.uint8(np.clip(pixels / 255.0 + blob, 0, 1) * 255)


def clean_film(seed: int) -> np.ndarray:
    return synth.xray(seed, size=FILM)


def lesion_film(seed: int) -> np.ndarray:
    return with_lesion(clean_film(seed))


def make(tiny_bundle: Path, out: Path) -> Path:
    """Write the spread bundle to `out` from the tiny bundle's files."""
    from pneumo.infer.predictor import Predictor
    from pneumo.io import DecodedImage
    from pneumo.model.build import HeadConfig, build_head_model
    from pneumo.preprocess import to_model_input

    shutil.copytree(tiny_bundle, out)
    (out / "ood.npz").unlink()
    config = json.loads((out / "config.json").read_text())
    config.update(input_size=SIZE, threshold=THRESHOLD, borderline=list(BAND))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    predictor = Predictor.load(out)

    def log_features(films):
        inputs = np.stack([to_model_input(DecodedImage(f, "PNG"), SIZE) for f in films])
        return np.log1p(predictor.predict_inputs(inputs)[1].astype(np.float64))

    clean = log_features([clean_film(s) for s in range(16)])
    sick = log_features([lesion_film(s) for s in range(16)])
    direction = sick.mean(axis=0) - clean.mean(axis=0)
    middle = (sick.mean(axis=0) + clean.mean(axis=0)) @ direction / 2
    scale = 6.0 / (sick.mean(axis=0) @ direction - middle)  # the mean lesion film at logit +6, the mean clean at -6
    head = build_head_model(HeadConfig(pooling="gap", weight_decay=0.0))
    bn = head.get_layer("head_bn1")
    width = len(direction)
    bn.set_weights([np.ones(width), np.zeros(width), np.zeros(width), np.full(width, 1.0 - bn.epsilon)])
    head.get_layer("logit").set_weights([(scale * direction)[:, None].astype(np.float32),
                                         np.array([-scale * middle], np.float32)])
    head.save_weights(out / "head.weights.h5")
    return out
