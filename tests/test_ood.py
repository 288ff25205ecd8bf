"""The "looks like a chest X-ray?" check: the content score (distance less lung match), the lungs, the cheap image
checks, and the outputs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import synth
from PIL import Image

from pneumo.infer.chest_check import FAR, ChestCheck, image_reasons
from pneumo.infer.lung_fields import NO_LUNGS, lung_reasons
from pneumo.io import read_image

CELLS = 16  # a 4x4 lung signature
WHERE_LUNGS_LIE = np.tile([0.1, 0.9, 0.9, 0.1], 4)  # two lungs in the middle columns of a 4x4 grid


def _films(rng, n, scale=1.0, lungs=WHERE_LUNGS_LIE):
    features = rng.gamma(2.0, 1.0, (n, 12)) * scale
    signatures = np.clip(lungs + rng.normal(0, 0.05, (n, CELLS)), 0, 1)
    return features, signatures


def test_chest_check_spares_every_source_and_lungs_in_place_buy_distance(tmp_path):
    rng = np.random.default_rng(0)
    children, adults = _films(rng, 1500), _films(rng, 300, scale=1.6)  # two hospitals, two looks
    held = {"children": _films(rng, 400), "adults": _films(rng, 200, scale=1.6)}
    check = ChestCheck.fit([children, adults], held, percentile=99.0)
    for features, signatures in held.values():  # the cut-off is the highest source's 99th percentile
        assert np.mean(check.score(features, signatures) > check.cutoff) <= 0.011
    assert np.allclose(check.template, WHERE_LUNGS_LIE, atol=0.02), "each source's mean lung map, averaged"
    # Far content: with lungs where lungs lie (another hospital's chest) it passes more often than with a lung map
    # that looks like nothing (a hand), at the same distance.
    far = rng.gamma(2.0, 1.0, (200, 12)) * 2.6
    lungs_in_place = np.tile(WHERE_LUNGS_LIE, (200, 1))
    no_lungs = np.tile(1.0 - WHERE_LUNGS_LIE, (200, 1))
    flagged_in_place = np.mean(check.score(far, lungs_in_place) > check.cutoff)
    flagged_elsewhere = np.mean(check.score(far, no_lungs) > check.cutoff)
    assert flagged_elsewhere == 1.0 and flagged_in_place < 0.5
    assert np.allclose(check.score(far, lungs_in_place), check.score(far, no_lungs) - 2.0, atol=0.01), \
        "a lung match of +1 against -1"
    check.save(tmp_path / "ood.npz")
    again = ChestCheck.load(tmp_path / "ood.npz")
    assert np.allclose(again.score(far, no_lungs), check.score(far, no_lungs), rtol=1e-5)
    assert again.cutoff == check.cutoff and np.allclose(again.template, check.template)
    np.savez(tmp_path / "old.npz", mean=check.mean, precision=check.precision, cutoff=1.0, percentile=99.5)
    with pytest.raises(ValueError, match="refit-checks"):
        ChestCheck.load(tmp_path / "old.npz")


def test_a_site_added_to_the_reference_is_the_fit_on_all_films_and_can_be_taken_out(tmp_path):
    rng = np.random.default_rng(3)
    children, adults = _films(rng, 600), _films(rng, 200, scale=1.6)
    check = ChestCheck.fit([children, adults], {"children": _films(rng, 300)}, percentile=99.0)
    site = _films(rng, 150, scale=2.4)  # another hospital's chest films: far from both
    site_new = _films(rng, 150, scale=2.4)
    with_site = check.with_site(*site)
    # The pooled Gaussian is exactly the one fitted on every film at once; the lung template averages three sources.
    pooled = ChestCheck.fit([(np.concatenate([children[0], adults[0], site[0]]), None)], {"x": children})
    assert np.allclose(with_site.mean, pooled.mean) and np.allclose(with_site.precision, pooled.precision, rtol=1e-6)
    assert np.allclose(with_site.template, (2 * check.template + site[1].mean(axis=0)) / 3)
    assert with_site.cutoff == check.cutoff and with_site.site_films == 150
    flagged = [np.mean(c.score(*site_new) > c.cutoff) for c in (check, with_site)]
    assert flagged[0] > 0.5 and flagged[1] < flagged[0] - 0.2, flagged  # the cut-off is kept: fewer, not none
    with_site.save(tmp_path / "ood.npz")
    again = ChestCheck.load(tmp_path / "ood.npz")
    assert again.site_films == 150 and np.allclose(again.score(*site_new), with_site.score(*site_new), rtol=1e-5)
    back = again.without_site()  # recalibration starts from the check as training left it
    assert np.allclose(back.score(*site_new), check.score(*site_new), rtol=1e-4) and back.site_films == 0
    assert again.with_site(*site_new).site_films == 150, "a new site replaces the old one"
    old = ChestCheck(check.mean, check.precision, check.template, check.cutoff, check.percentile)
    with pytest.raises(ValueError, match="refit its checks"):
        old.with_site(*site)


def test_chest_check_without_a_lung_head_is_the_distance_alone():
    rng = np.random.default_rng(1)
    check = ChestCheck.fit([(rng.gamma(2.0, 1.0, (800, 6)), None)], {"val": (rng.gamma(2.0, 1.0, (300, 6)), None)})
    assert check.template is None
    x = rng.gamma(2.0, 1.0, (5, 6))
    assert np.allclose(check.score(x), np.log(check.distance(x)))
    with pytest.raises(ValueError, match="held-out chest films"):
        ChestCheck.fit([(x, None)], {"val": (np.zeros((0, 6)), None)})


def test_lung_reasons_need_two_lungs_and_a_sure_map():
    lungs = np.zeros((56, 56), np.float32)
    lungs[10:45, 6:24] = lungs[10:45, 32:50] = 0.97
    assert lung_reasons(lungs) == []
    one = lungs.copy()
    one[:, 28:] = 0.0
    assert lung_reasons(one) == [NO_LUNGS], "one lung is not a pair"
    unsure = np.where(lungs > 0, 0.6, 0.4).astype(np.float32)  # "lung" everywhere it was, but hesitant everywhere
    assert lung_reasons(unsure) == [NO_LUNGS]


def _png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cheap_checks():
    xray = read_image(_png(synth.xray(0, size=(240, 200))), "x.png")
    assert image_reasons(xray) == []
    photo = np.zeros((200, 200, 3), np.uint8)
    photo[:100, :, 0], photo[100:, :, 2] = 220, 200
    assert image_reasons(read_image(_png(photo), "p.png")) == ["it is a colour image; radiographs are grayscale"]
    assert image_reasons(read_image(_png(np.full((100, 2000), 90, np.uint8)), "s.png")) == [
        "its shape (2000x100) is unlike a chest radiograph"]
    ct = read_image(synth.dicom_bytes(synth.xray(1).astype(np.uint16), modality="CT"), "ct.dcm")
    assert image_reasons(ct) == ["the DICOM modality is CT, not a radiograph (CR/DX)"]
    lateral = read_image(synth.dicom_bytes(synth.xray(1).astype(np.uint16), extra=dict(ViewPosition="LL")), "l.dcm")
    assert image_reasons(lateral) == ["the DICOM header says it is a lateral view"]


def test_training_stores_the_check_and_predict_reports_it(tiny_bundle, tiny_predictor, tmp_path, capsys):
    from pneumo.ui.cli import run_predict

    config = json.loads((tiny_bundle / "config.json").read_text())
    block = config["chest_check"]
    assert (tiny_bundle / "ood.npz").is_file() and block["file"] == "ood.npz" and block["lung_template"] is False
    assert block["fit_films"] == {"pediatric fit patients": sum(config["data_counts"]["fit"].values())}
    assert tiny_predictor.chest is not None and tiny_predictor.chest.cutoff == block["cutoff"]
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(photo)
    result = tiny_predictor.analyze(read_image(photo))
    assert result.looks_like_chest_xray is False and result.to_json()["looks_like_chest_xray"] is False
    assert run_predict(tiny_predictor, [photo]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["file"] == str(photo) and line["looks_like_chest_xray"] is False and line["assessed"] is False
    assert line["warnings"][0].startswith("This may not be a frontal chest X-ray: it is a colour image")
    assert FAR in line["warnings"][0], "random noise is far from every chest film too"
