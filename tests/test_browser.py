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
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: PNEUMO_SCREENSHOTS_DIR if set, else a temporary folder (tests never touch the checkout)."""
    chosen = os.environ.get("PNEUMO_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def page(shipped_server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1100})
        tab.goto(shipped_server[0])
        tab.locator("#examples").wait_for()
        tab.shots = shots  # where shoot() writes
        yield tab
        browser.close()


def verdict_for(page, name: str) -> str:
    """Wait until the result shown is the one for file `name`; return the headline's text."""
    page.locator("#result-label .verdict").wait_for(timeout=60_000)
    page.locator("#summary").get_by_text(name).wait_for(timeout=60_000)
    return page.locator("#result-label .verdict").inner_text()


def shoot(page, name: str) -> None:
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=False)


def test_clicking_each_example_shows_a_verdict_and_an_overlay(page):
    names = sorted(p.name for p in (ROOT / "examples").glob("*.jpeg"))
    thumbs = page.locator("#examples .thumbnail-item")
    assert thumbs.count() == len(names)
    taken = set()
    for index, name in enumerate(names):
        thumbs.nth(index).click()
        verdict = verdict_for(page, name)
        assert verdict.split()[0] in ("NORMAL", "PNEUMONIA"), (name, verdict)
        page.locator("#overlay img").wait_for(timeout=30_000)
        assert page.locator("#result-label .score-marker").count() == 1
        kind = verdict.split()[0].lower()
        if kind not in taken:  # one screenshot of each verdict
            shoot(page, kind)
            taken.add(kind)
    assert taken == {"normal", "pneumonia"}, "the examples should show both verdicts"


@pytest.mark.parametrize("kind", ["knee", "photo"])
def test_a_knee_and_a_colour_photo_are_not_assessed(page, tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    pixels = synth.knee(3) if kind == "knee" else np.random.default_rng(2).integers(0, 255, (300, 400, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    drop_file(page, "#upload", path, "image/png")
    verdict = verdict_for(page, path.name)
    assert "Not assessed" in verdict
    text = page.locator("#result-label").inner_text()
    assert "PNEUMONIA" not in text.split("\n")[0] and "NORMAL" not in text.split("\n")[0]
    if kind == "knee":
        shoot(page, "not-assessed-knee")


@pytest.mark.skipif(not (SHARED / "data" / "adult_dev").is_dir(), reason="needs ../shared/data/adult_dev")
def test_the_lung_outline_switch_redraws_the_overlay_and_the_heat_share_is_stated(page):
    name = sorted(p.name for p in (ROOT / "examples").glob("*.jpeg"))[-1]
    page.locator("#examples .thumbnail-item").nth(4).click()
    verdict_for(page, name)
    summary = page.locator("#summary").inner_text()
    assert "of the heat falls inside the lung fields" in summary
    assert "read from the lung fields only" in summary, "the shipped model pools over the lungs: the page says so"
    page.locator("#overlay img").wait_for(timeout=30_000)
    # Each redraw is a new file: wait for the shown image to change and finish loading. The src is read before
    # each switch is flipped (reading it after let a fast redraw land first, and the wait never ended: CI).
    changed = ("src => { const img = document.querySelector('#overlay img');"
               " return img && img.complete && img.src !== src; }")
    current = lambda: page.evaluate("document.querySelector('#overlay img').src")  # noqa: E731
    for switch in ("uncheck", "check"):
        before = current()
        getattr(page.locator("#show-lungs input"), switch)()
        page.wait_for_function(changed, arg=before, timeout=30_000)
    shoot(page, "lung-outline")


def test_an_adult_film_headlines_the_population_warning(page):
    from test_population import held_out_adults

    film = held_out_adults(1)[0]
    drop_file(page, "#upload", film, "image/png")
    verdict_for(page, film.name)
    assert "Adult film? This model was trained on children aged 1-5" in page.locator("#result-label").inner_text()
    shoot(page, "not-assessed-adult")


def test_a_film_dropped_while_another_is_analysed_gets_its_own_answer(page, tmp_path):
    from test_population import held_out_adults

    first = tmp_path / "large-child.png"  # large, so its analysis is still pending when the next film arrives
    Image.fromarray(synth.xray(5, size=(2500, 3000))).save(first)
    adult = held_out_adults(1)[0]
    drop_file(page, "#upload", first, "image/png")
    page.locator(".progress-text, .eta-bar").first.wait_for(timeout=10_000)
    drop_file(page, "#upload", adult, "image/png")
    verdict_for(page, adult.name)
    assert "Adult film?" in page.locator("#result-label").inner_text()


def test_a_bad_file_keeps_its_reason_on_the_page(page, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("these are my notes, not an image")
    drop_file(page, "#upload", bad, "image/jpeg")
    page.locator("#result-label .upload-error").wait_for(timeout=30_000)
    time.sleep(20)  # a toast would be gone by now
    text = page.locator("#result-label").inner_text()
    assert "Could not read this file" in text and "text file" in text
    shoot(page, "error")
