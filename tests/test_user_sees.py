"""What the user sees, pinned with small known inputs: verdicts on both sides of the threshold, the side Grad-CAM
explains and where its heat lands, the overlay, and each reason of the two checks firing alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
import spread
import synth
from PIL import Image

from pneumo.infer import age
from pneumo.infer.chest_check import FAR
from pneumo.infer.lung_fields import NO_LUNGS
from pneumo.io import DecodedImage, read_image
from pneumo.model.backends import Run


def film(pixels: np.ndarray) -> DecodedImage:
    return DecodedImage(pixels, "PNG")


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- verdicts ------------------------------------------------------------------------------------------------

def test_verdicts_fall_on_both_sides_of_the_threshold(spread_predictor):
    for seed in (40, 41, 42):
        clean = spread_predictor.analyze(film(spread.clean_film(seed)))
        sick = spread_predictor.analyze(film(spread.lesion_film(seed)))
        assert (clean.verdict, clean.borderline) == ("NORMAL", False) and clean.probability < 0.1
        assert (sick.verdict, sick.borderline) == ("PNEUMONIA", False) and sick.probability > 0.9
        assert clean.to_json()["label"] == "NORMAL" and sick.to_json()["label"] == "PNEUMONIA"


def test_a_score_exactly_at_the_threshold_is_pneumonia(spread_predictor):
    image = film(spread.lesion_film(43))
    score = spread_predictor.analyze(image).probability
    threshold = spread_predictor.threshold
    try:
        spread_predictor.threshold = score
        assert spread_predictor.analyze(image).verdict == "PNEUMONIA", "at the threshold: PNEUMONIA"
        spread_predictor.threshold = float(np.nextafter(score, 1.0))
        assert spread_predictor.analyze(image).verdict == "NORMAL", "just below it: NORMAL"
    finally:
        spread_predictor.threshold = threshold


def test_the_borderline_band_marks_scores_inside_it_on_either_side(spread_predictor):
    prediction = spread_predictor.analyze(film(spread.clean_film(44)))
    assert prediction.band == spread.BAND
    assert prediction.with_age(None).borderline is False
    inside = spread_predictor.prediction(film(spread.clean_film(44)), 0.4, prediction.check_features)
    above = spread_predictor.prediction(film(spread.clean_film(44)), 0.6, prediction.check_features)
    assert (inside.verdict, inside.borderline) == ("NORMAL", True)
    assert (above.verdict, above.borderline) == ("PNEUMONIA", True)


# --- Grad-CAM: the side the score falls on, and where the heat lands -------------------------------------------

LESION_CELL, NORMAL_CELL = (1, 1), (2, 3)


def designed_run(probs: list[float]) -> Run:
    """A forward pass with known activations: channel 0 fires only at LESION_CELL and pushes the logit up (evidence
    of pneumonia), channel 1 fires only at NORMAL_CELL and pushes it down (evidence of a normal film)."""
    n = len(probs)
    activations = np.zeros((n, 4, 4, 8), np.float32)
    activations[:, LESION_CELL[0], LESION_CELL[1], 0] = 3.0
    activations[:, NORMAL_CELL[0], NORMAL_CELL[1], 1] = 2.0
    weights = np.zeros((n, 8), np.float32)
    weights[:, 0], weights[:, 1] = 0.5, -0.5
    return Run(np.array(probs), np.ones((n, 512), np.float32), activations, weights, None)


def test_gradcam_explains_the_side_the_score_falls_on(spread_predictor, monkeypatch):
    monkeypatch.setattr(spread_predictor, "_run", lambda inputs: designed_run([0.9, 0.1]))
    images = [film(spread.clean_film(45)), film(spread.clean_film(46))]
    pneumonia, normal = spread_predictor.predictions(images, np.zeros((2, 64, 64, 3), np.float32), with_cam=True)
    assert pneumonia.side == "PNEUMONIA" and normal.side == "NORMAL"
    for prediction, cell in ((pneumonia, LESION_CELL), (normal, NORMAL_CELL)):
        hot = np.argwhere(prediction.heatmap > 0.5)
        assert hot.tolist() == [list(cell)], f"{prediction.side}: the heat is on its own evidence only"


def test_the_overlay_shows_the_heat_and_only_where_it_is(spread_predictor):
    from pneumo.infer.gradcam import heat_in_image_frame
    from pneumo.ui.service import Analysis, Service

    pixels = spread.lesion_film(47)
    prediction = spread_predictor.analyze(film(pixels))
    analysis = Analysis("lesion.png", film(pixels), prediction, 0.1)
    shown = Service.render(analysis, 0.8, True).astype(int)
    plain = np.repeat(pixels[..., None], 3, axis=-1).astype(int)
    heat = heat_in_image_frame(prediction.heatmap, *pixels.shape)
    assert heat.max() > 0.5
    changed = np.abs(shown - plain).max(axis=-1) > 0
    assert changed[heat > 0.3].mean() > 0.95, "coloured where the heat is"
    assert not changed[heat == 0].any(), "the film unchanged where there is none (the margin the model never sees)"
    assert np.array_equal(Service.render(analysis, 0.8, False), plain), "heatmap switch off: the film alone"
    adult = Analysis("adult.png", film(pixels), prediction.with_age(40.0), 0.1)  # not assessed: nothing to read
    assert np.array_equal(Service.render(adult, 0.8, True, True), plain), "no heat, no outline"


def test_a_large_film_is_drawn_at_display_size_with_its_heat_in_the_same_place(spread_predictor):
    import cv2

    from pneumo.infer.gradcam import heat_in_image_frame
    from pneumo.ui.cache import DISPLAY_MAX, display_film
    from pneumo.ui.service import Analysis, Service

    pixels = cv2.resize(spread.lesion_film(47), (2048, 1536), interpolation=cv2.INTER_CUBIC)  # a film 4:3, large
    prediction = spread_predictor.analyze(film(pixels))
    analysis = Analysis("large.png", film(pixels), prediction, 0.1)
    shown = Service.render(analysis, 0.8, True).astype(int)
    assert shown.shape == (768, 1024, 3) and DISPLAY_MAX == 1024, "the long side at 1024 px, the aspect kept"
    assert abs(display_film(pixels).mean() - pixels.mean()) < 0.5, "area-averaged, not cropped"
    heat = heat_in_image_frame(prediction.heatmap, 768, 1024)  # the same heatmap, in the drawn frame
    changed = np.abs(shown - np.repeat(display_film(pixels)[..., None], 3, axis=-1)).max(axis=-1) > 0
    assert changed[heat > 0.3].mean() > 0.95 and not changed[heat == 0].any()
    small = spread.lesion_film(47)
    assert display_film(small) is small, "a film under 1024 px is drawn as it is"


# --- each reason of the two checks, firing alone ------------------------------------------------------------------

@pytest.fixture(scope="module")
def child(tiny_data) -> np.ndarray:
    """A training film of the tiny bundle: the tiny chest X-ray check accepts it."""
    return np.asarray(Image.open(sorted((tiny_data / "train" / "NORMAL").iterdir())[0]).convert("L"))


def chest_reasons(predictor, image: DecodedImage) -> list[str]:
    return predictor.analyze(image, with_cam=False).chest_reasons


def test_a_training_film_passes_every_check(tiny_predictor, child):
    prediction = tiny_predictor.analyze(film(child), with_cam=False)
    assert prediction.chest_reasons == [] and prediction.assessed


def test_content_unlike_any_chest_film_alone(tiny_predictor):
    knee = synth.knee(0, (300, 240))  # gray, an ordinary shape, no DICOM: only its content gives it away
    assert chest_reasons(tiny_predictor, read_image(png(knee), "knee.png")) == [FAR]


def test_colour_alone(tiny_predictor, child):
    # A tint that leaves the luma (what the model reads) as it was: +30 red, -10 green, -27 blue.
    tinted = np.clip(child[..., None].astype(int) + np.array([30, -10, -27]), 0, 255).astype(np.uint8)
    image = read_image(png(tinted), "sepia.png")
    assert image.colourfulness > 12
    assert chest_reasons(tiny_predictor, image) == ["it is a colour image; radiographs are grayscale"]


def test_shape_alone(tiny_predictor, child):
    # Stretched to 3:1, then read back to the model's square: the same content, an impossible shape.
    wide = np.asarray(Image.fromarray(child).resize((child.shape[1] * 3, child.shape[0]), Image.BICUBIC))
    reasons = chest_reasons(tiny_predictor, read_image(png(wide), "wide.png"))
    assert reasons == [f"its shape ({wide.shape[1]}x{wide.shape[0]}) is unlike a chest radiograph"]


@pytest.mark.parametrize("extra, reason", [(dict(Modality="CT"), "the DICOM modality is CT, not a radiograph (CR/DX)"),
                                           (dict(ViewPosition="LL"), "the DICOM header says it is a lateral view")])
def test_dicom_header_alone(tiny_predictor, child, extra, reason):
    data = synth.dicom_bytes(child.astype(np.uint16), bits=8, **({"modality": extra["Modality"]}
                                                                    if "Modality" in extra else {"extra": extra}))
    assert chest_reasons(tiny_predictor, read_image(data, "x.dcm")) == [reason]


def test_no_lungs_alone(tiny_predictor, child):
    """The predictor's own wiring of the lung head's verdict: the same film, with and without a pair of lungs."""
    features = tiny_predictor.analyze(film(child), with_cam=False).check_features
    lungs = np.zeros((8, 8), np.float32)
    assert tiny_predictor.prediction(film(child), 0.2, features, lung_map=lungs).chest_reasons == [NO_LUNGS]
    lungs[1:7, 1:3] = lungs[1:7, 5:7] = 0.98
    assert tiny_predictor.prediction(film(child), 0.2, features, lung_map=lungs).chest_reasons == []


def test_a_cut_film_alone(tiny_predictor, child):
    """Lungs filling both sides of the view, as a film cut through the chest: the framing check, and only it."""
    from pneumo.infer.lung_fields import CUT

    features = tiny_predictor.analyze(film(child), with_cam=False).check_features
    lungs = np.zeros((56, 56), np.float32)
    lungs[8:48, 0:24] = lungs[8:48, 32:56] = 0.98  # both lungs run into the view's side edges
    cut = tiny_predictor.prediction(film(child), 0.2, features, lung_map=lungs)
    assert (cut.chest_reasons, cut.framing_reasons, cut.assessed) == ([], [CUT], False)
    lungs[:, 0:3] = lungs[:, 53:56] = 0.0  # the same lungs with a margin: a whole film
    assert tiny_predictor.prediction(film(child), 0.2, features, lung_map=lungs).framing_reasons == []


def test_the_population_checks_pixels_alone(tiny_predictor, child, monkeypatch):
    from pneumo.infer.population import PopulationCheck

    width = 512
    always = PopulationCheck(np.zeros(width), np.zeros((0, width)), np.ones(width), np.zeros(width), 5.0, 0.0, 99.5)
    monkeypatch.setattr(tiny_predictor, "population_check", always)  # the pixels say: unlike the training children
    flagged = tiny_predictor.analyze(film(child), with_cam=False)
    assert (flagged.looks_like_chest_xray, flagged.in_population) == (True, False)
    assert flagged.warnings == [f"{age.UNLIKE_HEADLINE} ({age.UNLIKE})."]
    assert tiny_predictor.analyze(film(child), with_cam=False, declared_age=3).assessed, "a declared age of 3 decides"


def test_the_dicom_age_alone(tiny_predictor, child):
    data = synth.dicom_bytes(child.astype(np.uint16), bits=8, extra=dict(PatientAge="045Y"))
    prediction = tiny_predictor.analyze(read_image(data, "old.dcm"), with_cam=False)
    assert prediction.chest_reasons == [] and prediction.warnings == [f"{age.ADULT_HEADLINE} (the DICOM header's age "
                                                                      "is 45 years)."]


def test_read_image_refuses_a_file_over_its_size_limit(tmp_path):
    from pneumo.io.image import MAX_BYTES

    big = tmp_path / "huge.png"
    with big.open("wb") as handle:  # sparse: nothing is written to disk
        handle.write(png(synth.xray(1)))
        handle.truncate(MAX_BYTES + 1)
    with pytest.raises(ValueError, match=f"'huge.png' is 200 MB; the limit is {MAX_BYTES // 2**20} MB."):
        read_image(big)


# --- the app takes requests at once ---------------------------------------------------------------------------

def test_requests_at_once_never_run_the_model_pass_together(spread_predictor, tmp_path, monkeypatch):
    """The app takes MODEL_REQUESTS requests at once so one decodes and draws while another's model pass runs,
    but the passes themselves take turns (each already uses both cores)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pneumo.ui.service import MODEL_REQUESTS, Service

    running, most, lock = 0, 0, threading.Lock()
    analyze = spread_predictor.analyze

    def counted(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for the others to arrive
        try:
            return analyze(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(spread_predictor, "analyze", counted)
    paths = []
    for seed in range(4):
        paths.append(tmp_path / f"film{seed}.png")
        Image.fromarray(spread.lesion_film(seed) if seed % 2 else spread.clean_film(seed)).save(paths[-1])
    service = Service(spread_predictor, str(tmp_path), [])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda path: service.api(str(path))[0], paths))
    assert MODEL_REQUESTS >= 2 and most == 1
    assert [r["label"] for r in results] == ["NORMAL", "PNEUMONIA", "NORMAL", "PNEUMONIA"]


def test_every_event_that_runs_the_model_takes_the_same_requests_at_once(spread_predictor):
    """Gradio holds a concurrency group to its lowest limit: one model event without it would serialise them all."""
    from pneumo.ui.service import MODEL_REQUESTS
    from pneumo.ui.web import build_demo

    demo = build_demo(spread_predictor)
    model = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    assert sorted(fn.name for fn in model) == ["on_api", "on_example", "on_upload"]
    assert [fn.concurrency_limit for fn in model] == [MODEL_REQUESTS] * 3 and MODEL_REQUESTS >= 2
