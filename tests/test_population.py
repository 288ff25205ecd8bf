"""The "outside the pediatric population" check: the classifier, the DICOM header, training, and every output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import synth
from conftest import ROOT, SHARED, real_backbone

from pneumo.infer.population import PopulationCheck, fit_logistic, form_directions
from pneumo.io import read_image

ADULTS = SHARED / "data" / "adult_dev"
CHILDREN = SHARED / "data" / "shift_dev"


def test_logistic_regression_separates_and_cutoff_spares_children(tmp_path):
    rng = np.random.default_rng(0)
    children, children_val = rng.gamma(2.0, 1.0, (1500, 24)), rng.gamma(2.0, 1.0, (400, 24))
    adults = rng.gamma(2.0, 1.0, (300, 24)) * np.r_[np.full(12, 4.0), np.ones(12)]
    check = PopulationCheck.fit(children, adults, children_val, percentile=99.5)
    assert check.flags(children_val).mean() <= 0.01
    new_adults = rng.gamma(2.0, 1.0, (200, 24)) * np.r_[np.full(12, 4.0), np.ones(12)]
    assert check.flags(new_adults).mean() >= 0.95
    check.save(tmp_path / "population.npz")
    again = PopulationCheck.load(tmp_path / "population.npz")
    assert np.allclose(again.score(new_adults), check.score(new_adults)) and again.cutoff == check.cutoff
    np.savez(tmp_path / "old.npz", **{k: v for k, v in np.load(tmp_path / "population.npz").items() if k != "version"})
    with pytest.raises(ValueError, match="Retrain the bundle"):
        PopulationCheck.load(tmp_path / "old.npz")


def test_projecting_out_form_directions_stops_the_check_from_using_texture():
    # Feature 0 is "texture": adults are smooth (high), children sharp (low); feature 1 is "anatomy".
    rng = np.random.default_rng(2)

    def films(n, texture, anatomy):
        x = rng.gamma(4.0, 1.0, (n, 8))
        x[:, 0] *= texture
        x[:, 1] *= anatomy
        return x

    children, adults, val = films(800, 1.0, 1.0), films(300, 6.0, 6.0), films(300, 1.0, 1.0)
    smooth_children = films(200, 6.0, 1.0)  # full-size pediatric originals: smooth like the adults
    plain = films(200, 1.0, 1.0)
    reformed = plain.copy()
    reformed[:, 0] *= 6.0  # the same films, only smoother
    naive = PopulationCheck.fit(children, adults, val)
    robust = PopulationCheck.fit(children, adults, val, form_directions([(plain, reformed)], k=1))
    assert naive.flags(smooth_children).mean() > 0.5, "without the projection texture decides"
    assert robust.flags(smooth_children).mean() < 0.05 and robust.flags(films(200, 1.0, 6.0)).mean() > 0.9


def test_logistic_regression_matches_the_closed_form_optimum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = (x @ [1.5, -2.0, 0.0] + rng.normal(size=400) > 0).astype(float)
    w, b = fit_logistic(x, y, l2=1e-3)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    weight = np.where(y > 0, 1 / (2 * y.sum()), 1 / (2 * (1 - y).sum()))
    assert np.abs(x.T @ (weight * (p - y)) + 1e-3 * w).max() < 1e-8  # the gradient vanishes at the optimum
    assert w[0] > 0.5 and w[1] < -0.5 and abs(w[2]) < 0.5


def test_empty_inputs_are_a_clear_error():
    with pytest.raises(ValueError, match="pediatric, adult and pediatric validation"):
        PopulationCheck.fit(np.ones((5, 3)), np.ones((0, 3)), np.ones((5, 3)))


@pytest.mark.parametrize("header, flagged", [
    (dict(PatientAge="045Y"), "age over 10 years"),
    (dict(PatientBirthDate="19710302", StudyDate="20170611"), "age over 10 years"),
    (dict(PatientAge="003Y"), None),
    (dict(PatientAge="018M", ViewPosition="AP"), None),
    (dict(PatientBirthDate="20210101", StudyDate="20240101"), None),
    (dict(PatientAge="garbled"), None),
    (dict(ViewPosition="LL"), "lateral view"),
])
def test_dicom_header_age_and_view(header, flagged, caplog, recwarn):
    import logging
    import warnings

    with warnings.catch_warnings():  # pydicom warns about 'garbled' when *writing* the test file
        warnings.simplefilter("ignore")
        data = synth.dicom_bytes(synth.xray(1).astype(np.uint16) * 16, extra=header)
    caplog.clear()
    recwarn.clear()
    with caplog.at_level(logging.DEBUG):
        image = read_image(data, "h.dcm")
    found = image.info["population_reasons"]
    assert (flagged in " ".join(found)) if flagged else found == []
    said = json.dumps(image.info) + caplog.text + " ".join(str(w.message) for w in recwarn)
    for value in header.values():  # the values are never returned, logged or warned about
        assert value not in said


@pytest.fixture(scope="module")
def adult_bundle(tiny_config_factory, tmp_path_factory):
    """A tiny bundle whose population check was trained on synthetic 'adult' films."""
    from pneumo.train.loop import run

    adults = synth.adult_folder(tmp_path_factory.mktemp("adults"))
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / "with-population", adult_dirs=(adults,),
                                 population_views=1, cache_dir=tmp_path_factory.mktemp("cache"))  # passes counted
    return run(config, log=lambda *_: None), adults


def test_training_writes_the_check_and_its_measurements(adult_bundle):
    bundle, _ = adult_bundle
    stats = json.loads((bundle / "config.json").read_text())["population"]
    assert (bundle / "population.npz").is_file()
    assert stats["adult_fit_images"] + stats["adult_holdout_images"] == 16 and stats["adult_holdout_images"] > 0
    assert 0 <= stats["validation_children_flagged"] <= 0.2 and 0 <= stats["holdout_adults_flagged"] <= 1
    assert "--adult-dir ADULTS" in json.loads((bundle / "config.json").read_text())["command"]
    # from an empty cache: every pediatric film, each adult film and its one form view, one form view of every
    # 8th fit child: all counted
    config = json.loads((bundle / "config.json").read_text())
    children = sum(n for split in config["data_counts"].values() for n in split.values())
    form_children = -(-sum(config["data_counts"]["fit"].values()) // 8)
    assert config["backbone_passes_this_run"] == (children + 2 * stats["adult_fit_images"]
                                                  + stats["adult_holdout_images"] + form_children)


def test_predict_json_carries_in_population(adult_bundle, tmp_path):
    from pneumo.infer.predictor import Predictor

    predictor = Predictor.load(adult_bundle[0])
    assert predictor.population is not None
    old = tmp_path / "old.dcm"
    old.write_bytes(synth.dicom_bytes(synth.xray(2).astype(np.uint16) * 16, extra=dict(PatientAge="067Y")))
    result = predictor.predict_file(old)
    assert result["in_population"] is False and result["assessed"] is False
    assert any("trained on children aged 1-5" in w and "age over 10" in w for w in result["warnings"])
    assert "067" not in json.dumps(result)


# --- The shipped bundle on real films (needs the real backbone and ../shared) ----------------------------

def held_out_adults(n: int):
    from pneumo.io.folders import scan_images, split_by_patient

    recipe = json.loads((ROOT / "weights" / "config.json").read_text())["recipe"]
    _, held_out = split_by_patient(scan_images(ADULTS), recipe["adult_holdout"], recipe["seed"])
    return [s.path for s in held_out[:: max(1, len(held_out) // n)][:n]]


def some_children(n: int):
    return sorted(CHILDREN.rglob("*.jpeg"))[:: 40][:n] + sorted((SHARED / "data/chest_xray/val").rglob("*.jpeg"))[:2]


@pytest.fixture(scope="module")
def shipped():
    from pneumo.infer.predictor import Predictor

    if not ADULTS.is_dir():
        pytest.skip("needs ../shared/data/adult_dev")
    return Predictor.load(ROOT / "weights", real_backbone())


def test_shipped_check_flags_adults_and_passes_children(shipped):
    adults = [shipped.analyze(read_image(p), with_cam=False) for p in held_out_adults(6)]
    children = [shipped.analyze(read_image(p), with_cam=False) for p in some_children(4)]
    assert [p.in_population for p in adults] == [False] * 6
    assert [p.in_population for p in children] == [True] * 6
    assert all(not p.assessed and "trained on children aged 1-5" in " ".join(p.warnings) for p in adults)


def test_shipped_check_holds_for_films_as_a_pacs_exports_them(shipped):
    """12-bit MONOCHROME1 DICOMs at 2048 px with a window: what another hospital's archive sends."""
    from tools.population_report import as_pacs_dicom

    def analyze(path):
        return shipped.analyze(read_image(as_pacs_dicom(path.read_bytes()), path.name + ".dcm"), with_cam=False)

    assert [analyze(p).in_population for p in held_out_adults(3)] == [False] * 3
    assert [analyze(p).in_population for p in some_children(1)] == [True] * 3


def test_cli_says_in_population(shipped):
    from test_cli import pneumo

    files = held_out_adults(2) + some_children(1)
    result = pneumo("predict", *map(str, files), env_extra={"PNEUMO_BACKBONE_WEIGHTS": real_backbone()})
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["in_population"] for line in lines] == [False, False, True, True, True]
    assert result.returncode == 0


@pytest.mark.server
def test_app_api_says_in_population(shipped, shipped_server):
    from gradio_client import Client, handle_file

    client = Client(shipped_server[0], verbose=False)
    adult, _ = client.predict(handle_file(str(held_out_adults(1)[0])), api_name="/predict")
    child, _ = client.predict(handle_file(str(some_children(1)[0])), api_name="/predict")
    assert adult["in_population"] is False and adult["assessed"] is False
    assert child["in_population"] is True and child["assessed"] is True
    assert 0.0 <= child["heat_in_lungs"] <= 1.0, "the shipped bundle has a lung head"


def test_form_views_change_texture_not_content_and_have_their_own_cache(tmp_path):
    from pneumo.preprocess import AugmentConfig, FormConfig, augment
    from pneumo.train.features import FeatureCache

    gray = synth.xray(4, size=(224, 224))
    plain = AugmentConfig(rotation_deg=0, zoom_max=1.0, shift=0, contrast=0, brightness=0)
    form = FormConfig(**plain.to_dict())
    views = [augment(gray, np.random.default_rng(seed), form) for seed in range(12)]
    assert all(v.shape == gray.shape and v.dtype == np.uint8 for v in views)
    roughness = [np.abs(np.diff(v.astype(float), axis=1)).mean() for v in views]
    assert max(roughness) / min(roughness) > 1.3, "blur and sharpening should spread the texture"
    assert max(np.abs(v.astype(float).mean() - gray.mean()) for v in views) < 6, "the content stays"
    assert FeatureCache(tmp_path, "fp", 1, plain).folder != FeatureCache(tmp_path, "fp", 1, form).folder

