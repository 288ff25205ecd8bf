"""The "outside the pediatric population" check: the classifier, the DICOM header, training, and every output."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import ROOT, SHARED, real_backbone

from pneumo.infer import age
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


def _site_case(rng, n_site=240, site_scale=None):
    """Children, adults and a site whose films the check has never seen (unlike both), as positive features."""
    def films(n, scale):
        return rng.gamma(2.0, 1.0, (n, 24)) * scale
    child, adult = np.ones(24), np.r_[np.full(12, 4.0), np.ones(12)]
    site = np.r_[np.full(12, 2.5), np.full(12, 3.0)] if site_scale is None else site_scale  # adult-ish, yet its own
    check = PopulationCheck.fit(films(1500, child), films(300, adult), films(400, child), percentile=99.5)
    check.adults, check.adults_held = films(300, adult), films(200, adult)
    patients = np.repeat(np.arange(n_site // 2), 2).astype(str)  # two films per patient
    return check, films(n_site, site), patients, films(200, site), films(200, adult)


def test_a_site_taught_to_the_check_is_in_the_population_and_adults_stay_out(tmp_path):
    check, site, patients, site_new, adults_new = _site_case(np.random.default_rng(5))
    assert check.flags(site_new).mean() > 0.9, "the site looks unlike the training children"
    taught, stats = check.with_site(site, patients)
    assert stats["extended"] and taught.site is not None and check.site is None, "a copy; the source is kept"
    assert taught.flags(site_new).mean() <= 0.05 and taught.flags(adults_new).mean() >= 0.95
    assert stats["held_out_adults"] == {"films": 200, "flagged_before": 1.0, "flagged_after": 1.0}
    assert sum(stats["flagged_before"]) > 0.9 * len(site)
    assert sum(stats["flagged_after_out_of_fold"]) <= 0.03 * len(site)
    assert np.array_equal(taught.flags(site_new, site=False), check.flags(site_new)), "the training check underneath"
    taught.save(tmp_path / "population.npz")
    again = PopulationCheck.load(tmp_path / "population.npz")
    assert np.array_equal(again.flags(site_new), taught.flags(site_new)) and again.site.films == len(site)
    assert np.allclose(again.adults, check.adults, rtol=1e-3), "the reference adults travel with the bundle"


def test_a_site_that_looks_like_adults_is_not_taught_and_old_bundles_say_why():
    adult = np.r_[np.full(12, 4.0), np.ones(12)]
    check, site, patients, _, adults_new = _site_case(np.random.default_rng(6), site_scale=adult)
    taught, stats = check.with_site(site, patients)
    assert not stats["extended"] and taught.site is None and stats["held_out_adults"]["flagged_after"] < 0.9
    assert taught.flags(adults_new).mean() >= 0.95
    check.adults = None
    with pytest.raises(ValueError, match="keeps no reference adults"):
        check.with_site(site, patients)


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


@pytest.mark.parametrize("header, years", [
    (dict(PatientAge="045Y"), 45.0),
    (dict(PatientBirthDate="19710302", StudyDate="20170611"), (date(2017, 6, 11) - date(1971, 3, 2)).days / 365.25),
    (dict(PatientAge="003Y"), 3.0),
    (dict(PatientAge="018M", ViewPosition="AP"), 1.5),
    (dict(PatientAge="026W"), 0.5),
    (dict(PatientBirthDate="20210101", StudyDate="20240101"), 3.0),
    (dict(PatientAge="garbled"), None),
    (dict(ViewPosition="LL"), None),
])
def test_dicom_header_age(header, years, caplog, recwarn):
    import logging
    import warnings

    with warnings.catch_warnings():  # pydicom warns about 'garbled' when *writing* the test file
        warnings.simplefilter("ignore")
        data = synth.dicom_bytes(synth.xray(1).astype(np.uint16) * 16, extra=header)
    caplog.clear()
    recwarn.clear()
    with caplog.at_level(logging.DEBUG):
        image = read_image(data, "h.dcm")
    if years is None:
        assert "age_years" not in image.info
    else:
        assert image.info["age_years"] == pytest.approx(years, abs=0.01)
    said = json.dumps({k: v for k, v in image.info.items() if k != "age_years"}) + caplog.text + " ".join(
        str(w.message) for w in recwarn)
    for key in ("PatientAge", "PatientBirthDate", "StudyDate"):  # the header's own values are never kept or logged
        if key in header:
            assert header[key] not in said


@pytest.mark.parametrize("unlike, declared, header, expect", [
    # (pixels say unlike, declared age, header age) -> (in population, headline, cautions, age, source)
    (False, None, None, (True, None, 0, None, None)),
    (True, None, None, (False, age.UNLIKE_HEADLINE, 0, None, None)),
    (True, 4.0, None, (True, None, 1, 4.0, "declared")),  # another hospital's 4-year-old: assessed, with care
    (False, 4.0, None, (True, None, 0, 4.0, "declared")),
    (False, 30.0, None, (False, age.ADULT_HEADLINE, 0, 30.0, "declared")),  # pixels never outrank an age
    (False, 12.0, None, (False, age.AGE_HEADLINE, 0, 12.0, "declared")),
    (False, 0.5, None, (False, age.AGE_HEADLINE, 0, 0.5, "declared")),  # infants are outside the intended use
    (False, 6.0, None, (False, age.AGE_HEADLINE, 0, 6.0, "declared")),  # the sixth birthday ends it
    (True, None, 3.0, (True, None, 1, 3.0, "dicom")),
    (False, None, 45.0, (False, age.ADULT_HEADLINE, 0, 45.0, "dicom")),
    (False, 4.0, 4.6, (True, None, 0, 4.0, "declared")),  # within a year: the declared age is used
    (False, 4.0, 35.0, (False, age.CONFLICT_HEADLINE, 0, None, None)),  # a contradiction is never resolved silently
])
def test_the_age_decides_where_the_pixels_cannot(unlike, declared, header, expect):
    answer = age.decide(unlike, declared, header)
    inside, headline, cautions, years, source = expect
    assert (not answer.reasons, answer.headline, len(answer.cautions), answer.age, answer.source) == expect
    assert "adult" not in " ".join(answer.reasons + answer.cautions).lower() or headline == age.ADULT_HEADLINE
    if not inside:
        assert answer.sentence == f"{headline} ({'; '.join(answer.reasons)})."


@pytest.mark.parametrize("value, expect", [(None, None), ("", None), (" ", None), (3, 3.0), ("2.5", 2.5), (0, 0.0)])
def test_declared_ages_are_read(value, expect):
    assert age.parse_age(value) == expect


@pytest.mark.parametrize("value, message", [("three", "a number of years"), (-1, "between 0 and 120"),
                                            (150, "between 0 and 120"), (float("nan"), "between 0 and 120")])
def test_bad_declared_ages_are_one_sentence(value, message):
    with pytest.raises(ValueError, match=message):
        age.parse_age(value)


@pytest.fixture(scope="module")
def adult_bundle(tiny_config_factory, tmp_path_factory):
    """A tiny bundle whose population check was trained on synthetic 'adult' films."""
    from pneumo.train.loop import run

    adults = synth.adult_folder(tmp_path_factory.mktemp("adults"))
    # NIH's own metadata: two of the eight "adult" patients are children, who must not be fitted as adults
    ages = {f"{10000000 + patient:08d}": 12 if patient in (2, 5) else 40 + patient for patient in range(8)}
    (adults / "metadata.csv").write_text("file,patient_id,age\n" + "".join(
        f"{p.name},{p.stem[:8]},{ages[p.stem[:8]]}\n" for p in sorted(adults.glob("*.png"))))
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / "with-population", adult_dirs=(adults,),
                                 population_views=1, cache_dir=tmp_path_factory.mktemp("cache"))  # passes counted
    return run(config, log=lambda *_: None), adults


@pytest.mark.slow
def test_training_writes_the_check_and_its_measurements(adult_bundle):
    bundle, _ = adult_bundle
    stats = json.loads((bundle / "config.json").read_text())["population"]
    assert (bundle / "population.npz").is_file()
    assert stats["under_18_images"] == 4, "two patients under 18, two films each, by metadata.csv"
    assert stats["adult_fit_images"] + stats["adult_holdout_images"] == 12 and stats["adult_holdout_images"] > 0
    # The synthetic adults look nothing like the synthetic children: every held-out one is flagged; the cut-off is
    # the 99.5th percentile of the 8 validation children's scores, so exactly the highest of them is above it.
    assert stats["holdout_adults_flagged"] == 1.0 and stats["validation_children_flagged"] == 1 / 8
    config = json.loads((bundle / "config.json").read_text())
    assert "--adult-dir ADULTS" in config["command"]
    # the chest X-ray check fitted on the adult folder's fit half (every age) and set its cut-off on the rest
    chest = config["chest_check"]
    assert chest["fit_films"]["adult folders"] + chest["held_out_flagged"]["adult folders"]["films"] == 16
    # from an empty cache: every pediatric film, each adult film (whatever its age) and one form view of each adult
    # fit film, one form view of every 8th fit child: all counted
    children = sum(n for split in config["data_counts"].values() for n in split.values())
    form_children = -(-sum(config["data_counts"]["fit"].values()) // 8)
    assert config["backbone_passes_this_run"] == children + 16 + stats["adult_fit_images"] + form_children


@pytest.mark.slow
def test_predict_json_carries_in_population(adult_bundle, tiny_data, tmp_path):
    from PIL import Image

    from pneumo.infer.predictor import Predictor

    predictor = Predictor.load(adult_bundle[0])
    assert predictor.population_check is not None
    # A training child's own pixels, 8-bit as stored: a film the chest X-ray check accepts, so only the age speaks.
    child = np.asarray(Image.open(sorted((tiny_data / "val" / "NORMAL").iterdir())[0]).convert("L"))
    old = tmp_path / "old.dcm"
    old.write_bytes(synth.dicom_bytes(child.astype(np.uint16), bits=8, extra=dict(PatientAge="067Y")))
    assert predictor.predict_file(old)["looks_like_chest_xray"] is True
    result = predictor.predict_file(old)
    assert (result["in_population"], result["assessed"], result["label"]) == (False, False, None)
    assert (result["age"], result["age_source"]) == (67.0, "dicom")
    assert result["warnings"] == [f"{age.ADULT_HEADLINE} (the DICOM header's age is 67 years)."]
    contradicted = predictor.predict_file(old, declared_age=4)
    assert contradicted["assessed"] is False and contradicted["age"] is None
    assert contradicted["warnings"] == [f"{age.CONFLICT_HEADLINE} (the declared age is 4 years, the DICOM header's "
                                        "67 years)."]


# --- The shipped bundle on real films (needs the real backbone and ../shared) ----------------------------

def held_out_adults(n: int):
    """Held-out adult_dev patients aged 18 or more (metadata.csv): films neither check was fitted on."""
    from tools.shared_data import training_data

    held_out = training_data(json.loads((ROOT / "weights" / "config.json").read_text())["recipe"]).adults[1]
    return [s.path for s in held_out[:: max(1, len(held_out) // n)][:n]]


def nih_child() -> Path:
    """adult_dev's one young child: a 5-year-old of the NIH Clinical Center (metadata.csv), another hospital's."""
    return ADULTS / "NORMAL" / "00003438_000.png"


def hand() -> Path:
    """A child's hand radiograph (not_chest_dev): a radiograph, but not of a chest."""
    return SHARED / "data" / "not_chest_dev" / "hand" / "radinformatics_boneage_example_0.png"


def some_children(n: int):
    return sorted(CHILDREN.rglob("*.jpeg"))[:: 40][:n] + sorted((SHARED / "data/chest_xray/val").rglob("*.jpeg"))[:2]


@pytest.fixture(scope="module")
def shipped():
    from pneumo.infer.predictor import Predictor

    if not ADULTS.is_dir():
        pytest.skip("needs ../shared/data/adult_dev")
    return Predictor.load(ROOT / "weights", real_backbone())


@pytest.mark.slow
def test_shipped_check_flags_adults_and_passes_children(shipped):
    adults = [shipped.analyze(read_image(p), with_cam=False) for p in held_out_adults(6)]
    children = [shipped.analyze(read_image(p), with_cam=False) for p in some_children(4)]
    assert [p.in_population for p in adults] == [False] * 6
    assert [p.in_population for p in children] == [True] * 6
    assert [p.looks_like_chest_xray for p in adults + children] == [True] * 12, "chest films of two hospitals"
    assert all(p.warnings == [f"{age.UNLIKE_HEADLINE} ({age.UNLIKE})."] for p in adults), "never 'adult' unasked"


@pytest.mark.slow
def test_shipped_another_hospitals_child_with_and_without_its_age(shipped):
    image = read_image(nih_child())
    unknown = shipped.analyze(image, with_cam=False)
    assert (unknown.looks_like_chest_xray, unknown.assessed, unknown.population.headline) == (
        True, False, age.UNLIKE_HEADLINE)
    declared = shipped.analyze(image, with_cam=False, declared_age=5)
    assert declared.assessed and declared.verdict == "NORMAL" and declared.warnings == [age.CAUTION.format(
        age="5 years")], "a normal 5-year-old of another hospital: assessed, and said to be unvalidated"
    hand_at_three = shipped.analyze(read_image(hand()), with_cam=False, declared_age=3)
    assert hand_at_three.assessed is False and hand_at_three.failed_check == "chest"


@pytest.mark.slow
def test_shipped_check_holds_for_films_as_a_pacs_exports_them(shipped):
    """12-bit MONOCHROME1 DICOMs at 2048 px with a window: what another hospital's archive sends."""
    from tools.population_report import as_pacs_dicom

    def analyze(path):
        return shipped.analyze(read_image(as_pacs_dicom(path.read_bytes()), path.name + ".dcm"), with_cam=False)

    assert [analyze(p).in_population for p in held_out_adults(3)] == [False] * 3
    assert [analyze(p).in_population for p in some_children(1)] == [True] * 3


@pytest.mark.slow
def test_cli_says_in_population_and_takes_the_age(shipped):
    from test_cli import pneumo

    env = {"PNEUMO_BACKBONE_WEIGHTS": real_backbone()}
    files = [*held_out_adults(2), nih_child(), hand(), *some_children(1)]
    result = pneumo("predict", *map(str, files), env_extra=env)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["in_population"] for line in lines] == [False, False, False, None, True, True, True]  # a hand: none
    assert [line["looks_like_chest_xray"] for line in lines] == [True, True, True, False, True, True, True]
    assert [line["age_source"] for line in lines] == [None] * 7 and result.returncode == 0
    young = pneumo("predict", "--age", "3", str(nih_child()), str(hand()), env_extra=env)
    child, limb = (json.loads(line) for line in young.stdout.splitlines())
    assert (child["assessed"], child["label"], child["age"], child["age_source"]) == (True, "NORMAL", 3.0, "declared")
    assert (limb["assessed"], limb["looks_like_chest_xray"], limb["label"]) == (False, False, None)
    old = pneumo("predict", "--age", "30", *map(str, some_children(1)), env_extra=env)
    assert [json.loads(line)["assessed"] for line in old.stdout.splitlines()] == [False] * 3
    refused = pneumo("predict", "--age", "-2", str(hand()), env_extra=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "error: the patient's age must be between 0 and 120 years, got -2.0." in refused.stderr.splitlines()


@pytest.mark.server
@pytest.mark.slow
def test_app_api_says_in_population(shipped, shipped_server):
    from gradio_client import Client, handle_file

    client = Client(shipped_server[0], verbose=False)
    adult, _ = client.predict(handle_file(str(held_out_adults(1)[0])), api_name="/predict")  # the old one-argument call
    child, _ = client.predict(handle_file(str(some_children(1)[0])), api_name="/predict")
    assert adult["in_population"] is False and adult["assessed"] is False and adult["age"] is None
    assert child["in_population"] is True and child["assessed"] is True
    assert 0.5 <= child["heat_in_lungs"] <= 1.0, "the shipped bundle has a lung head; most heat is on the lungs"
    nih, _ = client.predict(handle_file(str(nih_child())), 5, api_name="/predict")
    assert (nih["assessed"], nih["label"], nih["age"], nih["age_source"]) == (True, "NORMAL", 5.0, "declared")
    limb, _ = client.predict(handle_file(str(hand())), 3, api_name="/predict")
    assert limb["assessed"] is False and limb["looks_like_chest_xray"] is False
    old, _ = client.predict(handle_file(str(some_children(1)[0])), 30, api_name="/predict")
    assert old["assessed"] is False and old["warnings"][0].startswith(age.ADULT_HEADLINE)


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

