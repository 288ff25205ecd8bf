"""The sweeper that deletes uploads and rendered images from the app's Gradio cache."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from pneumo.ui.cache import Sweeper, cache_image, files_written_since


def touch(path) -> None:
    """A file written now. Its ctime cannot be set back, so the tests move the sweeper's clock instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_sweep_deletes_old_files_keeps_young_and_kept_ones_and_folders(tmp_path):
    upload, example, fresh = tmp_path / "abc" / "child.jpeg", tmp_path / "def" / "example.jpeg", tmp_path / "new.png"
    for path in (upload, example):
        touch(path)
    sweeper = Sweeper(tmp_path, age=60, keep={example})
    later = time.time() + 61
    assert sweeper.sweep(now=later - 30) == 0, "nothing is 60 s old yet"
    fresh.write_bytes(b"y")
    assert sweeper.sweep(now=later) == 2  # the upload and the file written just now, seen 61 s later
    assert not upload.exists() and not fresh.exists()
    assert example.exists(), "the demo's own cached images stay"
    assert upload.parent.is_dir(), "folders stay: Gradio renames uploads into them"


def test_files_written_since_leaves_out_what_an_earlier_run_left(tmp_path):
    stale = tmp_path / "h1" / "left-by-a-killed-run.jpeg"
    touch(stale)
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    fresh = tmp_path / "h2" / "example.jpeg"
    touch(fresh)
    assert files_written_since(tmp_path, since) == {fresh}


def test_sweeper_keeps_running_after_a_failed_sweep(tmp_path, monkeypatch, caplog):
    sweeper = Sweeper(tmp_path, age=0)
    calls = []
    real = sweeper.sweep

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Set changed size during iteration")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweeper, "sweep", flaky)
    sweeper.start()
    target = tmp_path / "upload.jpeg"
    target.write_bytes(b"x")
    deadline = time.time() + 10
    while target.exists() and time.time() < deadline:
        time.sleep(0.1)
    sweeper._stop.set()
    assert not target.exists(), "the second sweep ran and deleted the upload"
    assert "sweeping the upload cache failed" in caplog.text


def test_stop_deletes_everything_but_the_kept_files(tmp_path):
    kept, upload = tmp_path / "a" / "roc.png", tmp_path / "b" / "child.jpeg"
    for path in (kept, upload):
        touch(path)
    Sweeper(tmp_path, age=3600, keep={kept}).stop()
    assert kept.exists() and not upload.exists()


def test_negative_age_is_refused(tmp_path):
    with pytest.raises(ValueError, match="0 or more seconds, got -1"):
        Sweeper(tmp_path, age=-1)


def test_cache_image_writes_a_new_file_per_call(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    first, second = cache_image(rgb, tmp_path, ".png"), cache_image(rgb, tmp_path, ".png")
    assert first != second and Image.open(first).size == (30, 20) == Image.open(second).size
    assert cache_image(None, tmp_path, ".png") is None


def test_folders_of_app_processes_that_are_gone_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from pneumo.ui.cache import PREFIX, default_folder, remove_stale_folders

    assert default_folder().name == f"{PREFIX}{os.getpid()}", "one folder per running app"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folders = {name: tmp_path / f"{PREFIX}{pid}" for name, pid in
               (("gone", gone.stdout.strip()), ("parent", os.getppid()), ("mine", os.getpid()))}
    for folder in folders.values():
        (folder / "hash").mkdir(parents=True)
        (folder / "hash" / "upload.png").write_bytes(b"x")
    (tmp_path / "someone-else").mkdir()
    assert remove_stale_folders(tmp_path) == 1
    assert not folders["gone"].exists() and folders["parent"].exists() and folders["mine"].exists()
    assert (tmp_path / "someone-else").exists()
