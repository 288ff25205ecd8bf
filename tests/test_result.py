"""What one result says: which check heads a film that is not assessed, the JSON a script reads, the headline."""

from __future__ import annotations

from html import escape

import numpy as np
import pytest

from pneumo.infer import age, chest_check
from pneumo.infer.predictor import Prediction
from pneumo.ui.result import NOT_CHEST, decision_html, reading_guide

COLOUR = "it is a colour image; radiographs are grayscale"


def prediction(probability=0.9, chest=(), unlike=False, band=(0.8, 0.95), declared=None, header=None,
               framing=()) -> Prediction:
    return Prediction(probability=probability, threshold=0.83, heatmap=np.zeros((14, 14)),
                      check_features=np.zeros(512), chest_reasons=list(chest),
                      framing_reasons=list(framing), pixels_unlike=unlike, band=band,
                      threshold_source="calibrated: site, 100 films", declared_age=declared, header_age=header)


@pytest.mark.parametrize("chest, unlike, declared, expected, headline", [
    ((), False, None, None, None),
    ((COLOUR,), True, None, "chest", NOT_CHEST),  # a colourful gradient that "looks unlike a child" has no age
    ((COLOUR, chest_check.FAR), False, None, "chest", NOT_CHEST),
    ((chest_check.FAR,), True, None, "chest", NOT_CHEST),  # unlike every chest film: no age makes it one
    ((chest_check.FAR,), False, 3.0, "chest", NOT_CHEST),  # a hand stays a hand at any declared age
    ((), True, None, "population", age.UNLIKE_HEADLINE),
    ((), True, 3.0, None, None),
    ((), False, 40.0, "population", age.ADULT_HEADLINE),
    ((), False, 9.0, "population", age.AGE_HEADLINE),
])
def test_the_most_specific_failed_check_heads_the_answer(chest, unlike, declared, expected, headline):
    p = prediction(chest=chest, unlike=unlike, declared=declared)
    assert p.failed_check == expected and p.assessed == (expected is None)
    html = decision_html(p, "x.png")
    if expected == "chest":
        assert p.warnings == [f"This may not be a frontal chest X-ray: {'; '.join(chest)}."]
    if expected == "population":
        assert p.warnings == [p.population.sentence] and p.warnings[0].startswith(headline)
    if headline:
        assert escape(headline) in html and "Not assessed" in html
    assert ("Adult" in html) == (headline == age.ADULT_HEADLINE), "only a known age says 'adult'"


def test_a_film_assessed_by_its_declared_age_carries_the_caution_on_the_page_and_in_the_json():
    p = prediction(probability=0.2, unlike=True, declared=4.0)
    found = p.to_json()
    assert found["assessed"] is True and found["label"] == "NORMAL" and found["in_population"] is True
    assert (found["age"], found["age_source"]) == (4.0, "declared")
    assert found["warnings"] == [age.CAUTION.format(age="4 years")]
    html = decision_html(p, "x.png")
    assert escape(found["warnings"][0]) in html and "Not assessed" not in html
    assert "The age you gave, 4 years, is in the intended range." in reading_guide(p, "")


def test_the_guide_of_a_film_unlike_the_training_children_asks_for_the_age():
    assert "enter the age beside the upload" in reading_guide(prediction(unlike=True), "")
    assert "enter the age" not in reading_guide(prediction(declared=30.0), ""), "an age was given: nothing to ask"
    assert "enter the age" not in reading_guide(prediction(chest=(COLOUR,)), "")


def test_not_assessed_json_carries_nothing_of_the_models_answer():
    found = prediction(probability=0.98, chest=(COLOUR,)).to_json()
    assert (found["label"], found["probability"], found["borderline"], found["heat_in_lungs"]) == (None,) * 4
    assert found["in_population"] is None, "a photo has no population"
    assert found["assessed"] is False and found["threshold_source"] == "calibrated: site, 100 films"
    adult = prediction(probability=0.3, declared=40.0).to_json()
    assert (adult["label"], adult["probability"], adult["in_population"], adult["looks_like_chest_xray"]) == (
        None, None, False, True), "a chest film outside the population: the checks said, the score not"
    assert prediction(probability=0.3).to_json()["probability"] == 0.3


@pytest.mark.parametrize("probability, label, borderline", [(0.9, "PNEUMONIA", True), (0.99, "PNEUMONIA", False),
                                                            (0.1, "NORMAL", False), (0.81, "NORMAL", True)])
def test_assessed_json_label_and_borderline(probability, label, borderline):
    found = prediction(probability=probability).to_json()
    assert found["label"] == label and found["borderline"] is borderline
    html = decision_html(prediction(probability=probability), "film.png")
    assert ("(borderline)" in html) == borderline and "Result for <b>film.png</b>" in html


def test_a_result_not_assessed_says_no_threshold_and_no_heat_share():
    p = prediction(chest=(COLOUR,))
    headline, guide = decision_html(p, "photo.png"), reading_guide(p, "")
    assert "threshold" not in headline and "lung fields" not in guide and "No verdict" in headline


def test_the_guide_for_a_verdict_says_at_or_above_and_where_the_threshold_came_from():
    guide = reading_guide(prediction(), "")
    assert "at or above it the model says PNEUMONIA" in guide and "calibrated: site, 100 films" in guide


def test_a_cropped_film_is_not_assessed_and_says_upload_the_whole_film():
    from pneumo.infer.lung_fields import CUT
    from pneumo.infer.predictor import CROPPED

    p = prediction(probability=0.999, framing=(CUT,), unlike=True)
    assert (p.failed_check, p.assessed, p.verdict) == ("framing", False, None), "before the population's say"
    assert p.warnings == [f"{CROPPED}: {CUT}."]
    found = p.to_json()
    assert (found["looks_cropped"], found["probability"], found["label"]) == (True, None, None)
    assert escape(CROPPED) in decision_html(p, "crop.png") and "Not assessed" in decision_html(p, "crop.png")
    assert prediction(chest=(COLOUR,), framing=(CUT,)).failed_check == "chest"
    assert prediction().to_json()["looks_cropped"] is False
