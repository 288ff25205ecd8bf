"""The shipped weights/ with the real ImageNet backbone (skipped unless PNEUMO_BACKBONE_WEIGHTS is set)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, SHARED_VAL, real_backbone


@pytest.fixture(scope="module")
def shipped():
    from pneumo.infer.predictor import Predictor

    return Predictor.load(ROOT / "weights", real_backbone())


@pytest.mark.skipif(not SHARED_VAL.is_dir(), reason="needs ../shared/data/chest_xray/val")
def test_shipped_bundle_reproduces_its_stored_kaggle_val_metrics(shipped):
    from pneumo.infer.predictor import predict_paths
    from pneumo.io.folders import scan_class_folder
    from pneumo.train.metrics import binary_metrics

    samples = scan_class_folder(SHARED_VAL)
    probs = [p.probability for _, p, _ in predict_paths(shipped, [s.path for s in samples])]
    measured = binary_metrics([s.label for s in samples], probs, shipped.threshold)
    stored = json.loads((ROOT / "weights" / "config.json").read_text())["metrics"]["kaggle_val"]
    assert measured["confusion"] == stored["confusion"] and measured["auc"] == pytest.approx(stored["auc"], abs=1e-3)


def test_fast_path_matches_keras_on_the_real_model(shipped):
    """ONNX Runtime + closed-form head gradient vs Keras model.predict, on the example X-rays (issue: +-1e-3)."""
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image
    from pneumo.preprocess import to_model_input

    tf_backend = Predictor(shipped.bundle, shipped.model, backend="tf")
    for path in sorted((ROOT / "examples").glob("*.jpeg")):
        image = read_image(path)
        fast, reference = shipped.analyze(image), tf_backend.analyze(image)
        keras_prob = float(shipped.model.predict(to_model_input(image)[None], verbose=0)[0, 0])
        assert abs(fast.probability - keras_prob) < 1e-3 and abs(reference.probability - keras_prob) < 1e-3
        assert np.abs(fast.heatmap - reference.heatmap).max() < 1e-3
        assert fast.looks_like_chest_xray, path.name
