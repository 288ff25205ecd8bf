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
    stored = json.loads((ROOT / "weights" / "config.json").read_text())["metrics"]["kaggle_val"]
    measured = binary_metrics([s.label for s in samples], probs, stored["threshold"])  # training's threshold
    assert measured["confusion"] == stored["confusion"] and measured["auc"] == pytest.approx(stored["auc"], abs=1e-3)


SHIFT_DEV = ROOT.parent / "shared" / "data" / "shift_dev"


@pytest.mark.skipif(not SHIFT_DEV.is_dir(), reason="needs ../shared/data/shift_dev")
def test_calibrate_on_shift_dev_reproduces_the_shipped_threshold(shipped, tmp_path):
    """The README's promise: `python -m pneumo calibrate ../shared/data/shift_dev --output DIR` with its
    defaults writes exactly the threshold shipped in weights/."""
    from pneumo.ui.calibrate import check_folder, run_calibrate

    out = tmp_path / "calibrated"
    run_calibrate(shipped, SHIFT_DEV, check_folder(SHIFT_DEV, out, out=print), out, out=print)
    written, stored = (json.loads((p / "config.json").read_text()) for p in (out, ROOT / "weights"))
    assert written["threshold"] == stored["threshold"]
    assert written["calibration"] == stored["calibration"] and written["borderline"] == stored["borderline"]
    assert shipped.bundle.threshold_source == "calibrated: shift_dev, 157 films"


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
