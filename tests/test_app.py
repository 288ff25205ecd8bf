"""The app as users meet it: a real `python app.py` server, gradio_client calls, and a real Chromium drag-and-drop."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import spread
import synth
from conftest import ROOT, drop_file
from PIL import Image

pytestmark = pytest.mark.slow  # a real `python app.py` (the server fixture)

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    out = {"jpeg": folder / "child.jpeg", "png16": folder / "detector.png", "dicom": folder / "IM000001"}
    # The served (spread) bundle calls films with the synthetic opacity PNEUMONIA, films without it NORMAL.
    Image.fromarray(spread.with_lesion(synth.xray(1, False, (300, 360)))).save(out["jpeg"], quality=92)
    Image.fromarray(synth.xray(2, False, (240, 200)).astype(np.uint16) * 257).save(out["png16"])
    out["dicom"].write_bytes(synth.dicom_bytes(spread.with_lesion(synth.xray(3, False, (256, 320))).astype(np.uint16)
                                               * 16, window=(2048, 4096), patient="DOE^JOHN"))
    out["corrupt"] = folder / "broken.jpg"
    out["corrupt"].write_bytes(out["jpeg"].read_bytes()[:500])
    out["pdf"] = folder / "report.pdf"
    out["pdf"].write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n%%EOF\n")
    return out


def left_by_requests(cache: Path) -> list[Path]:
    """Files in the app's cache but the example images and model-card plots the demo cached at start-up."""
    demo_images = {p.name for p in (ROOT / "examples").iterdir()} | {"roc.png", "confusion.png"}
    return [p for p in cache.rglob("*") if p.is_file() and p.name not in demo_images]


def call(url: str, path: Path):
    from gradio_client import Client, handle_file

    return Client(url, verbose=False).predict(handle_file(str(path)), api_name="/predict")


@pytest.mark.server
@pytest.mark.parametrize("kind, size, label", [("jpeg", (360, 300), "PNEUMONIA"), ("png16", (200, 240), "NORMAL"),
                                               ("dicom", (320, 256), "PNEUMONIA")])
def test_predict_endpoint(server, files, kind, size, label):
    result, overlay = call(server[0], files[kind])
    assert (result["label"], result["assessed"], result["threshold"]) == (label, True, spread.THRESHOLD)
    assert (result["probability"] > 0.9) == (label == "PNEUMONIA") and (result["probability"] < 0.1) == (
        label == "NORMAL"), "well on one side of the threshold"
    assert result["threshold_source"] == "validation"  # not calibrated
    assert "probabilities" not in result, "1 - p and p said nothing that probability does not"
    shown = np.asarray(Image.open(overlay).convert("RGB"), int)
    assert shown.shape[1::-1] == size, "a film under 1024 px is drawn at its own size"
    coloured = np.abs(shown - shown.mean(axis=-1, keepdims=True)).max(axis=-1) > 8  # gray film, coloured heat
    if label == "PNEUMONIA":  # (this bundle's NORMAL side has no evidence of its own: no heat to draw)
        assert 0.01 < coloured.mean() < 0.9, "the heat is drawn where it is, not everywhere or nowhere"
    assert "DOE" not in str(result) and "SECRET" not in str(result)


@pytest.mark.server
def test_dicom_patient_fields_are_never_logged(server, files):
    call(server[0], files["dicom"])
    log = server[2].read_text()
    assert "DOE" not in log and "SECRET-123" not in log


@pytest.mark.server
def test_four_clients_at_once(server, files):
    paths = [files["jpeg"], files["png16"], files["dicom"], files["jpeg"]]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: call(server[0], p), paths))
    assert [r[0]["width"] for r in results] == [360, 200, 320, 360]


@pytest.mark.server
def test_same_file_from_many_clients_at_once_gives_whole_overlays(server, tmp_path):
    # Identical requests give identical overlays; Gradio would store those in one shared file and
    # rewrite it while another client downloads it (truncated bodies in CI): each request owns its file.
    big = tmp_path / "same.jpeg"
    Image.fromarray(synth.xray(7, True, (900, 1100))).save(big, quality=95)

    def user(_):
        return [call(server[0], big)[1] for _ in range(4)]

    with ThreadPoolExecutor(6) as pool:
        overlays = [path for paths in pool.map(user, range(6)) for path in paths]
    assert len(overlays) == 24 and len(set(overlays)) == 24, "each client downloads its own copy"
    for path in overlays:
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
            assert image.size == (1024, 838), "drawn at most 1024 px on the long side, aspect kept"


@pytest.mark.server
@pytest.mark.parametrize("kind, message", [("corrupt", "damaged or incomplete"), ("pdf", "PDF document")])
def test_bad_files_get_a_message_and_the_app_keeps_serving(server, files, kind, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        call(server[0], files[kind])
    assert call(server[0], files["jpeg"])[0]["label"] == "PNEUMONIA"


@pytest.mark.server
def test_colour_photo_is_answered_with_a_warning(server, tmp_path):
    photo = tmp_path / "holiday.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    result, _ = call(server[0], photo)
    assert result["looks_like_chest_xray"] is False and "colour image" in result["warnings"][0]
    assert result["assessed"] is False


@pytest.mark.server
def test_a_rejected_upload_is_one_log_line_not_a_traceback(server, files):
    from gradio_client.exceptions import AppError

    before = server[2].read_text()
    with pytest.raises(AppError):
        call(server[0], files["pdf"])
    deadline = time.time() + 10  # a busy CI machine may write the log line late
    while "rejected upload" not in server[2].read_text()[len(before):] and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # and anything printed after it (a traceback would come here)
    added = server[2].read_text()[len(before):]
    assert added.count("rejected upload") == 1 and "PDF document" in added
    assert "Traceback" not in added


@pytest.mark.server
def test_uploads_and_overlays_are_deleted_after_the_request(server, files, tmp_path):
    # Gradio's own delete_cache loop died under concurrent requests and kept every later upload (seen in CI),
    # and it never deleted the empty tmp files that appear there, one per upload: a burst of clients first, then one
    # request, and everything of theirs must go.
    def left():
        return left_by_requests(server[1])

    burst = []
    for i in range(6):
        burst.append(tmp_path / f"burst{i}.jpeg")
        Image.fromarray(synth.xray(20 + i, i % 2 == 0, (200, 240))).save(burst[-1])
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda p: [call(server[0], p) for _ in range(3)], burst))
    call(server[0], files["dicom"])
    assert any(p.name == files["dicom"].name for p in left()), "the request left its upload in Gradio's cache"
    deadline = time.time() + 20
    while left() and time.time() < deadline:
        time.sleep(0.5)
    assert left() == [], "PNEUMO_DELETE_AFTER_S=3 should clear uploads and overlays within seconds"


@pytest.mark.server
def test_stopping_the_app_deletes_what_requests_left(tiny_bundle, files, tmp_path):
    from tools.appserver import running_app

    cache = tmp_path / "gradio-tmp"
    cache.mkdir()
    env = {"PNEUMO_MODEL": str(tiny_bundle), "GRADIO_TEMP_DIR": str(cache)}  # the default 60 s: only the exit sweeps
    with running_app(env, tmp_path / "app.log") as app:
        call(app.url, files["jpeg"])
        assert any(p.name == files["jpeg"].name for p in cache.rglob("*"))
    # running_app stopped it with SIGTERM, as docker stop and a restarting Space do
    assert left_by_requests(cache) == []
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log and "Keyboard interruption" not in log and log.rstrip().endswith("Stopped.")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_drag_and_drop_in_a_real_browser(server, files, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server[0])
        page.get_by_text("Drop a chest X-ray").first.wait_for()
        page.get_by_text("Upload the whole film as exported").first.wait_for()  # crops and borders move the verdict
        drop_file(page, "#upload", files["jpeg"], "image/jpeg")
        page.locator("#result-label .analysed-file").get_by_text("child.jpeg").wait_for(timeout=60_000)
        assert page.locator("#result-label .verdict").inner_text().startswith("PNEUMONIA")
        assert "at or above the threshold 0.500" in page.locator("#result-label").inner_text()
        page.locator("#overlay img").wait_for(timeout=30_000)
        shown = page.locator("#overlay img").screenshot()
        browser.close()
    pixels = np.asarray(Image.open(io.BytesIO(shown)).convert("RGB"), int)
    coloured = np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max(axis=-1) > 8
    assert coloured.mean() > 0.01, "the overlay on the page shows heat in colour over the gray film"


def just_over_the_limit(folder: Path) -> Path:
    """A file one byte over the decoder's limit (sparse: no 200 MB written to the test's disk)."""
    from pneumo.io.image import MAX_BYTES

    path = folder / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    return path


def big_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1024 * 1024]


@pytest.mark.server
def test_an_upload_over_the_limit_is_refused_before_it_is_stored(server, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    from pneumo.io.image import MAX_BYTES

    huge = just_over_the_limit(tmp_path)
    with open(huge, "rb") as f:  # what any HTTP client can send: Gradio stops reading at the limit
        response = httpx.post(f"{server[0]}gradio_api/upload", files={"files": ("huge.jpg", f, "image/jpeg")},
                              timeout=120)
    assert response.status_code == 413 and f"maximum allowed size of {MAX_BYTES} bytes" in response.text
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {MAX_BYTES} bytes"):
        Client(server[0], verbose=False).predict(handle_file(str(huge)), api_name="/predict")  # refused before sending
    assert big_files(server[1]) == [], "nothing of the upload is left in the app's cache"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_the_page_refuses_an_upload_over_the_limit_in_one_sentence(server, tmp_path):
    from playwright.sync_api import sync_playwright

    huge = just_over_the_limit(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server[0])
        page.locator("#upload input[type=file]").set_input_files(str(huge))  # a real file chooser
        page.get_by_text('File(s) exceed the maximum allowed size of 200.0 Mb: "huge.jpg"').wait_for(timeout=30_000)
        browser.close()
    assert big_files(server[1]) == []


@pytest.mark.server
def test_two_apps_on_one_machine_keep_their_own_files(spread_bundle, tmp_path, monkeypatch):
    """Each app keeps its cache in a folder of its own: neither's sweeper deletes the other's example images."""
    import httpx

    from tools.appserver import running_app

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # the default folders, as two `python app.py` would use
    env = {"PNEUMO_MODEL": str(spread_bundle), "PNEUMO_DELETE_AFTER_S": "1"}

    def example_urls(url: str) -> list[str]:
        components = httpx.get(url + "config", timeout=30).json()["components"]
        gallery = next(c for c in components if c.get("props", {}).get("elem_id") == "examples")
        return [item["image"]["url"] for item in gallery["props"]["value"]]

    with running_app(env, tmp_path / "a.log") as first, running_app(env, tmp_path / "b.log") as second:
        urls = {app.url: example_urls(app.url) for app in (first, second)}
        folders = {Path(u.split("file=")[1]).parent.parent for found in urls.values() for u in found}
        assert len(folders) == 2, "one cache folder per app"
        time.sleep(5)  # several sweeps of both apps
        for found in urls.values():
            assert [httpx.get(u, timeout=30).status_code for u in found] == [200] * len(found)
