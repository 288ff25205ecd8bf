"""What one result says: which check heads a film that is not assessed, the JSON a script reads, the headline."""

from __future__ import annotations

from html import escape

import numpy as np
import pytest

from pneumo.infer import chest_check, population
from pneumo.infer.predictor import Prediction
from pneumo.ui.result import NOT_CHEST, decision_html, reading_guide

ADULT = population.PIXEL_REASON
COLOUR = "it is a colour image; radiographs are grayscale"


def prediction(probability=0.9, chest=(), adult=(), band=(0.8, 0.95)) -> Prediction:
    return Prediction(probability, 0.83, np.zeros((14, 14)), np.zeros(512), list(chest), list(adult),
                      band=band, threshold_source="calibrated: site, 100 films")


@pytest.mark.parametrize("chest, adult, expected", [
    ((), (), None),
    ((COLOUR,), (ADULT,), "chest"),  # a colourful gradient that "looks adult" is not an adult
    ((COLOUR, chest_check.FAR), (), "chest"),
    ((chest_check.FAR,), (ADULT,), "population"),  # an adult chest film is far from the children's films too
    ((chest_check.FAR,), (), "chest"),
    ((), (ADULT,), "population"),
])
def test_the_most_specific_failed_check_heads_the_answer(chest, adult, expected):
    p = prediction(chest=chest, adult=adult)
    assert p.failed_check == expected and p.assessed == (expected is None)
    if expected == "chest":
        assert p.warnings[0].startswith("This may not be a frontal chest X-ray") and ADULT not in p.warnings[0]
        assert escape(NOT_CHEST) in decision_html(p, "x.png") and "Adult" not in decision_html(p, "x.png")
    if expected == "population":
        assert p.warnings[0].startswith(population.HEADLINE) and population.HEADLINE in decision_html(p, "x.png")


def test_not_assessed_json_has_no_label_and_no_borderline():
    found = prediction(probability=0.98, chest=(COLOUR,)).to_json()
    assert found["label"] is None and found["borderline"] is None and found["probability"] == 0.98
    assert found["assessed"] is False and found["threshold_source"] == "calibrated: site, 100 films"


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
