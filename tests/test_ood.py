"""The "looks like a chest X-ray?" check: the Gaussian on features, the cheap image checks, and the outputs."""

from __future__ import annotations

import io
import json

import numpy as np
import synth
from PIL import Image

from pneumo.infer.chest_check import FeatureGaussian, image_reasons
from pneumo.io import read_image


def test_gaussian_flags_far_features_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.gamma(2.0, 1.0, (2000, 16))
    val = rng.gamma(2.0, 1.0, (400, 16))
    gaussian = FeatureGaussian.fit(train, val, percentile=99.0)
    assert (gaussian.distance(val) > gaussian.cutoff).mean() <= 0.011
    far = rng.gamma(2.0, 1.0, (50, 16)) * 8
    assert (gaussian.distance(far) > gaussian.cutoff).all()
    gaussian.save(tmp_path / "ood.npz")
    again = FeatureGaussian.load(tmp_path / "ood.npz")
    assert np.allclose(again.distance(far), gaussian.distance(far), rtol=1e-4) and again.cutoff == gaussian.cutoff


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cheap_checks():
    xray = read_image(_png(synth.xray(0, size=(240, 200))), "x.png")
    assert image_reasons(xray) == []
    photo = np.zeros((200, 200, 3), np.uint8)
    photo[:100, :, 0], photo[100:, :, 2] = 220, 200
    assert "colour" in image_reasons(read_image(_png(photo), "p.png"))[0]
    assert "shape" in image_reasons(read_image(_png(np.full((100, 2000), 90, np.uint8)), "s.png"))[0]
    ct = read_image(synth.dicom_bytes(synth.xray(1).astype(np.uint16), modality="CT"), "ct.dcm")
    assert any("modality is CT" in r for r in image_reasons(ct))


def test_training_stores_the_check_and_predict_reports_it(tiny_bundle, tiny_predictor, tmp_path, capsys):
    from pneumo.ui.cli import run_predict

    config = json.loads((tiny_bundle / "config.json").read_text())
    assert (tiny_bundle / "ood.npz").is_file() and config["ood"]["cutoff"] > 0
    assert tiny_predictor.gaussian is not None
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo)
    result = tiny_predictor.analyze(read_image(photo))
    assert result.looks_like_chest_xray is False and result.to_json()["looks_like_chest_xray"] is False
    assert run_predict(tiny_predictor, [photo]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["file"] == str(photo) and line["looks_like_chest_xray"] is False and line["assessed"] is False
    assert any("may not be a frontal chest X-ray" in w for w in line["warnings"])
