"""The page as a clinician meets it, in a real Chromium: examples, verdicts, "not assessed", errors that stay.

Runs against `python app.py` serving the shipped weights/ with the real backbone (skipped without it), so
what it sees is what a visitor sees. Its screenshots go to a temporary folder, or to PNEUMO_SCREENSHOTS_DIR when
set: `python -m tools.screenshots` sets it to docs/screenshots/ to refresh the README's pictures.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import synth
from conftest import ROOT, SHARED, drop_file
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: PNEUMO_SCREENSHOTS_DIR if set, else a temporary folder (tests never touch the checkout)."""
    chosen = os.environ.get("PNEUMO_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Gradio's own upload-progress stream logs this warning when it closes (its EventSource stand-in); nothing else may.
GRADIO_INTERNAL = {"Method not implemented."}


@pytest.fixture(scope="module")
def page(shipped_server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.console = []  # every error, warning and page error of the whole session, checked at the end
        tab.on("console", lambda m: tab.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
               and m.text not in GRADIO_INTERNAL else None)
        tab.on("pageerror", lambda err: tab.console.append(f"page error: {err}"))
        tab.goto(shipped_server[0])
        tab.locator("#examples").wait_for()
        tab.shots = shots  # where shoot() writes
        yield tab
        browser.close()


def verdict_for(page, name: str) -> str:
    """Wait until the result shown is the one for `name` (a file name, or "Example 3"); return the headline."""
    page.locator("#result-label .analysed-file").get_by_text(name, exact=True).wait_for(timeout=60_000)
    return page.locator("#result-label .verdict").inner_text()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=False)


def selected_examples(page) -> int:
    return page.locator("#examples .thumbnail-item.selected").count()


def test_clicking_each_example_shows_a_verdict_and_an_overlay(page):
    examples = sorted((ROOT / "examples").glob("*.jpeg"))
    thumbs = page.locator("#examples .thumbnail-item")
    assert thumbs.count() == len(examples)
    assert "NORMAL" not in page.locator("#examples").inner_text()  # captions do not give the answer away
    taken = set()
    for index, path in enumerate(examples):
        thumbs.nth(index).click()
        verdict = verdict_for(page, f"Example {index + 1}")
        assert verdict.split()[0] in ("NORMAL", "PNEUMONIA"), (path.name, verdict)
        truth = "PNEUMONIA" if path.name.startswith("person") else "NORMAL"
        assert f"dataset label: {truth}" in page.locator("#result-label").inner_text()
        assert path.name.split(".")[0] not in page.locator("#upload").inner_text()  # the box waits for a film
        page.locator("#overlay img").wait_for(timeout=30_000)
        assert page.locator("#result-label .score-marker").count() == 1
        kind = verdict.split()[0].lower()
        if kind not in taken:  # one screenshot of each verdict
            shoot(page, kind)
            taken.add(kind)
    assert taken == {"normal", "pneumonia"}, "the examples should show both verdicts"


def test_verdict_scale_and_overlay_are_in_view_together(page, shots):
    page.locator("#examples .thumbnail-item").nth(0).click()
    verdict_for(page, "Example 1")
    page.locator("#overlay img").wait_for(timeout=30_000)
    verdict, overlay = (page.locator(s).bounding_box() for s in ("#result-label .verdict", "#overlay"))
    assert verdict["y"] < 450 and overlay["y"] < 450, (verdict, overlay)
    assert overlay["y"] + overlay["height"] <= 1000 and "overlay" in page.locator("#overlay").inner_text().lower()
    assert not page.locator("#summary").is_visible()  # the method text waits, closed, under "How to read this"
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    try:
        time.sleep(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing runs off the side
        page.evaluate("window.scrollTo(0, 0)")
        page.locator("#examples .thumbnail-item").nth(1).click()  # as a visitor on a phone would, from the top
        verdict_for(page, "Example 2")
        page.locator("#overlay img").wait_for(timeout=30_000)
        time.sleep(1)  # the scroll to the result
        verdict, image = (page.locator(s).bounding_box() for s in ("#result-label .verdict", "#overlay img"))
        assert verdict["y"] >= 0 and image["y"] + image["height"] / 2 <= 844, "verdict and overlay in view"
        assert image["x"] >= 0 and image["x"] + image["width"] <= 390
        shoot(page, "phone")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.evaluate("window.scrollTo(0, 0)")


def test_upload_example_upload_leaves_nothing_of_the_one_before(page, tmp_path):
    first, second = tmp_path / "first-child.png", tmp_path / "second-child.png"
    Image.fromarray(synth.xray(21)).save(first)
    Image.fromarray(synth.xray(22, pneumonia=True)).save(second)
    drop_file(page, "#upload", first, "image/png")
    verdict_for(page, first.name)
    page.locator("#examples .thumbnail-item").nth(2).click()
    verdict_for(page, "Example 3")
    assert selected_examples(page) == 1 and first.stem not in page.locator("#upload").inner_text()
    drop_file(page, "#upload", second, "image/png")
    verdict_for(page, second.name)
    time.sleep(1)  # let the gallery redraw
    assert selected_examples(page) == 0, "a new upload clears the example selection"
    shown = page.locator("#result-label").inner_text() + page.locator("#upload").inner_text()
    assert "Example 3" not in shown and "dataset label" not in shown and first.stem not in shown


def test_a_film_dropped_on_the_box_after_another_replaces_it(page, tmp_path):
    first, second = tmp_path / "one.png", tmp_path / "two.png"
    Image.fromarray(synth.xray(31)).save(first)
    Image.fromarray(synth.xray(32)).save(second)
    drop_file(page, "#upload", first, "image/png")
    verdict_for(page, first.name)
    assert page.locator("#upload button.upload-container").count() == 1, "the box is ready for the next film"
    drop_file(page, "#upload", second, "image/png")  # no click on the x in between
    verdict_for(page, second.name)
    assert first.name not in page.locator("#result-label").inner_text()


@pytest.mark.parametrize("kind", ["knee", "photo", "ct"])
def test_a_knee_a_colour_photo_and_a_ct_slice_are_not_chest_x_rays(page, tmp_path, kind):
    if kind == "ct":
        path = tmp_path / "slice.dcm"
        path.write_bytes(synth.dicom_bytes(synth.knee(4, (512, 512)).astype(np.uint16) * 16, modality="CT"))
    else:
        path = tmp_path / f"{kind}.png"
        pixels = synth.knee(3) if kind == "knee" else np.random.default_rng(2).integers(0, 255, (300, 400, 3), np.uint8)
        Image.fromarray(pixels).save(path)
    drop_file(page, "#upload", path, "application/dicom" if kind == "ct" else "image/png")
    assert "Not assessed" in verdict_for(page, path.name)
    text = page.locator("#result-label").inner_text()
    assert "Not a frontal chest X-ray?" in text and "Adult" not in text and "adult" not in text
    assert "threshold" not in text and "PNEUMONIA" not in text.split("Not assessed")[1].split("\n")[0]
    page.get_by_text("How to read this").click()
    guide = page.locator("#summary").inner_text()
    assert "lung fields" not in guide and "no verdict, no score and no heatmap" in guide
    page.get_by_text("How to read this").click()
    page.locator("#overlay img").wait_for(timeout=30_000)
    if kind != "photo":  # a gray film: no heat and no outline in colour over it
        assert coloured_share(page) == 0.0, "nothing of the model's answer is drawn"
    if kind == "knee":
        shoot(page, "not-assessed-knee")


def coloured_share(page) -> float:
    """Share of the shown overlay's pixels that are not gray (heat or the lung outline over a gray film)."""
    import io

    pixels = np.asarray(Image.open(io.BytesIO(page.locator("#overlay img").screenshot())).convert("RGB"), int)
    return float((np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max(axis=-1) > 12).mean())


@pytest.mark.skipif(not (SHARED / "data" / "adult_dev").is_dir(), reason="needs ../shared/data/adult_dev")
def test_the_lung_outline_switch_redraws_the_overlay_and_the_heat_share_is_stated(page):
    page.locator("#examples .thumbnail-item").nth(4).click()
    verdict_for(page, "Example 5")
    page.get_by_text("How to read this").click()
    summary = page.locator("#summary").inner_text()
    assert "of it falls inside the lung fields" in summary
    assert "reads only the lung fields" in summary, "the shipped model pools over the lungs: the page says so"
    page.get_by_text("How to read this").click()
    page.locator("#overlay img").wait_for(timeout=30_000)
    # Each redraw is a new file: wait for the shown image to change and finish loading. The src is read before
    # each switch is flipped (reading it after let a fast redraw land first, and the wait never ended: CI).
    changed = ("src => { const img = document.querySelector('#overlay img');"
               " return img && img.complete && img.src !== src; }")
    current = lambda: page.evaluate("document.querySelector('#overlay img').src")  # noqa: E731
    for switch, outlined in (("uncheck", False), ("check", True)):
        before = current()
        getattr(page.locator("#show-lungs input"), switch)()
        page.wait_for_function(changed, arg=before, timeout=30_000)
        assert (cyan_share(page) > 0.002) == outlined, f"the lung outline {'drawn' if outlined else 'gone'}"
    shoot(page, "lung-outline")


def cyan_share(page) -> float:
    """Share of the shown overlay's pixels in the outline's cyan (0, 220, 255): heat is inferno, the film gray."""
    import io

    pixels = np.asarray(Image.open(io.BytesIO(page.locator("#overlay img").screenshot())).convert("RGB"), int)
    return float(((pixels[..., 0] < 80) & (pixels[..., 1] > 170) & (pixels[..., 2] > 200)).mean())


def set_age(page, years: str) -> None:
    """Type an age into the page's field and leave it, as a user would ("" clears it)."""
    field = page.locator("#age input, #age textarea").first
    field.fill(years)
    field.press("Tab")


def test_an_adult_film_without_an_age_is_outside_the_training_population_and_30_makes_it_adult(page):
    from test_population import held_out_adults

    film = held_out_adults(1)[0]
    drop_file(page, "#upload", film, "image/png")
    verdict_for(page, film.name)
    text = page.locator("#result-label").inner_text()
    assert "Outside the training population? This model was trained on children aged 1-5" in text
    assert "Adult" not in text and "threshold" not in text, "the pixels alone never say 'adult'"
    shoot(page, "not-assessed-adult")
    set_age(page, "30")
    page.locator("#result-label").get_by_text("Adult film: this model was trained").wait_for(timeout=30_000)
    assert "the declared age is 30 years" in page.locator("#result-label").inner_text()
    set_age(page, "")


def test_another_hospitals_child_is_assessed_once_the_age_is_given(page):
    from test_population import nih_child

    film = nih_child()  # NIH's 5-year-old (adult_dev/metadata.csv): unlike the Guangzhou children to the pixels
    drop_file(page, "#upload", film, "image/png")
    verdict_for(page, film.name)
    assert "Not assessed" in page.locator("#result-label").inner_text()
    set_age(page, "5")  # re-analyses the film on screen
    page.locator("#result-label .caution").wait_for(timeout=30_000)
    text = page.locator("#result-label").inner_text()
    assert "Not assessed" not in text and page.locator("#result-label .verdict").inner_text() in ("NORMAL", "PNEUMONIA")
    assert "assessed because the patient's age is 5 years" in text and "Adult" not in text
    shoot(page, "assessed-by-age")
    set_age(page, "")
    page.locator("#result-label").get_by_text("Outside the training population?").wait_for(timeout=30_000)


def test_a_hand_stays_not_a_chest_x_ray_at_any_declared_age(page):
    from test_population import hand

    set_age(page, "3")
    drop_file(page, "#upload", hand(), "image/png")
    verdict_for(page, hand().name)
    text = page.locator("#result-label").inner_text()
    assert "Not a frontal chest X-ray?" in text and "Not assessed" in text
    set_age(page, "")


def test_a_film_dropped_while_another_is_analysed_gets_its_own_answer(page, tmp_path):
    from test_population import held_out_adults

    first = tmp_path / "large-child.png"  # large, so its analysis is still pending when the next film arrives
    Image.fromarray(synth.xray(5, size=(2500, 3000))).save(first)
    adult = held_out_adults(1)[0]
    drop_file(page, "#upload", first, "image/png")
    page.locator(".progress-text, .eta-bar").first.wait_for(timeout=10_000)
    drop_file(page, "#upload", adult, "image/png")
    verdict_for(page, adult.name)
    assert "Outside the training population?" in page.locator("#result-label").inner_text()


def test_a_bad_file_keeps_its_reason_on_the_page(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my notes, not an image")
    drop_file(page, "#upload", bad, "image/jpeg")
    page.locator("#result-label .upload-error").wait_for(timeout=30_000)
    time.sleep(20)  # a toast would be gone by now
    text = page.locator("#result-label").inner_text()
    assert "Could not read this file" in text and "text file" in text
    shoot(page, "error")


def test_no_console_errors_on_load_or_use(page):
    """Runs last in this file: everything above was done in this one page."""
    assert page.console == []
