"""One-off: how much 7-bit weights (no 16-bit saturation on AVX2) cost against 8-bit ones, at the activations.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.int8_weight_bits

96 seeded train films: ranges from the first 64, error measured on the other 32 (block5_conv3 against the float
trunk, and the log1p of its global average, what the heads read). Result: docs/decisions.md, "The int8 trunk".
"""

from __future__ import annotations

import os

import numpy as np

import pneumo.model.int8 as int8
from pneumo.io import folders, read_image
from pneumo.model.build import build_backbone
from pneumo.model.onnx_graph import OnnxTrunk, trunk_to_onnx
from pneumo.preprocess import to_model_input
from tools.appserver import ROOT


def main() -> None:
    samples = folders.kaggle_splits(ROOT.parent / "shared" / "data" / "chest_xray")["train"]
    chosen = np.random.default_rng(0).choice(len(samples), 96, replace=False)
    x = np.stack([to_model_input(read_image(samples[i].path)) for i in chosen]).astype(np.float32)
    base = build_backbone(os.environ["PNEUMO_BACKBONE_WEIGHTS"])
    ranges = int8.calibrate(base, x[:64])
    exact = OnnxTrunk(trunk_to_onnx(base))(x[64:])
    for levels in (64, 127):
        int8.WEIGHT_LEVELS = levels  # read when the graph is written
        quantized = OnnxTrunk(trunk_to_onnx(base, int8=ranges))(x[64:])
        pooled, pooled_q = np.log1p(exact.mean((1, 2))), np.log1p(quantized.mean((1, 2)))
        print(f"weights in [-{levels}, {levels}]: block5_conv3 mean |error| / mean |value| "
              f"{np.abs(quantized - exact).mean() / np.abs(exact).mean():.4f}; pooled log1p "
              f"{np.abs(pooled_q - pooled).mean() / np.abs(pooled).mean():.4f}, correlation "
              f"{np.corrcoef(pooled.ravel(), pooled_q.ravel())[0, 1]:.5f}")


if __name__ == "__main__":
    main()
