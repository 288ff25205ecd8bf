"""The app's pictures and files in Gradio's cache: each picture drawn at display size (`display_film`) and encoded
into a file of its own, and a sweeper that deletes what requests left behind (uploads, previews, overlays) once
they are `age` seconds old.

Why not Gradio's own `delete_cache`: under concurrent requests it stopped deleting for good (seen in CI;
reproduced with 8 gradio_client users for 60 s against `delete_cache=(1, 1)`: 674 files still there 5 s
later). Its loop walks Gradio's sets of cached files in a worker thread while requests add to them, which
Python refuses ("Set changed size during iteration"), and one exception ends the loop. It also never deleted
the empty `tmp...` files that appear in the cache, one per upload. This sweeper walks the folder itself and
outlives a failed sweep (`python -m tools.load_test` counts what is left after its run).

Because it walks the whole folder, each running app keeps its cache in a folder of its own (`default_folder`: one
per process), not in the /tmp/gradio that other Gradio apps on the machine share: two copies of this app on one
machine would otherwise delete each other's example images. A folder whose process is gone (killed, crashed) is
deleted when the next copy starts (`remove_stale_folders`), so no upload outlives its app for long.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("pneumo.app")


PREFIX = "pneumonia-demo-"


def default_folder() -> Path:
    """Where this process keeps uploads and rendered images unless GRADIO_TEMP_DIR says otherwise."""
    return Path(tempfile.gettempdir()) / "gradio" / f"{PREFIX}{os.getpid()}"


def remove_stale_folders(root: Path) -> int:
    """Delete the default folders (below `root`) of app processes that no longer run; return how many."""
    removed = 0
    for folder in Path(root).glob(f"{PREFIX}*"):
        pid = folder.name[len(PREFIX):]
        if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# The long side of every picture the app sends: the page shows the film ~440 px high, and a full-size overlay cost
# more than the model (a 1776x1416 film: ~70 ms to draw, ~270 ms as PNG; docs/speed.md). The heatmap's values at the
# film's own size: `python -m pneumo predict --heatmaps`.
DISPLAY_MAX = 1024


def display_film(gray: np.ndarray, longest: int = DISPLAY_MAX) -> np.ndarray:
    """The film at most `longest` px on its long side, area-averaged (aspect kept; smaller films as they are)."""
    scale = longest / max(gray.shape)
    if scale >= 1:
        return gray
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def cache_image(rgb: np.ndarray | None, cache_dir: str | Path, ext: str) -> str | None:
    """Encode `rgb` (or a gray image) into a new, uniquely named file inside Gradio's cache; return its path.

    Gradio would name the image by a hash of its bytes and rewrite that file in place, so two
    users who get the same overlay at once share one file and a download can read it half
    rewritten (the load test saw truncated bodies). A file of our own per request cannot be
    touched by another request; being inside the cache, Gradio serves it as it is, and the sweeper deletes it.
    """
    if rgb is None:
        return None
    encoded = encode_image(rgb, ext)
    os.makedirs(cache_dir, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="overlay-", suffix=ext, dir=cache_dir)
    with os.fdopen(fd, "wb") as handle:
        handle.write(encoded)
    return path


def encode_image(rgb: np.ndarray, ext: str) -> bytes:
    """RGB (or gray) -> the bytes the app sends: JPEG at quality 92, or PNG at fast compression."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb, params)
    if not ok:
        raise ValueError(f"could not encode the image as {ext}")
    return encoded.tobytes()


def files_written_since(folder: Path, since: float) -> set[Path]:
    """Files (re)written at or after `since` (ctime): what building the demo put in the cache.

    Gradio touches a cached copy when it hands it out again, so example images cached by an earlier run
    count as written now, while an upload left by a killed earlier run does not and gets swept.
    """
    return {p for p in Path(folder).rglob("*") if p.is_file() and p.lstat().st_ctime >= since}


class Sweeper:
    """Deletes the files in `folder` older than `age` seconds, except `keep` (the demo's own images).

    Folders are left in place: Gradio creates one per uploaded file's hash and renames the upload into it,
    so removing an empty one could fail an upload arriving at that moment.
    """

    def __init__(self, folder: str | Path, age: int, keep: set[Path] = frozenset()):
        if age < 0:
            raise ValueError(f"the sweeper's age must be 0 or more seconds, got {age}")
        self.folder, self.age, self.keep = Path(folder), age, {Path(p) for p in keep}
        self._stop = threading.Event()

    def sweep(self, age: float | None = None, now: float | None = None) -> int:
        """Delete what is older than `age` (default: the sweeper's); return how many files went."""
        age = self.age if age is None else age
        cutoff = (time.time() if now is None else now) - age
        deleted = 0
        for path in list(self.folder.rglob("*")):
            if path in self.keep:
                continue
            try:
                if path.is_file() and path.lstat().st_ctime <= cutoff:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:  # deleted meanwhile (a second sweeper, or Gradio itself)
                continue
        return deleted

    def start(self) -> threading.Thread:
        """Sweep now (what a killed earlier run left), then every `age` seconds, and everything at exit."""
        thread = threading.Thread(target=self._run, name="cache-sweeper", daemon=True)
        thread.start()
        atexit.register(self.stop)
        return thread

    def stop(self) -> None:
        self._stop.set()
        self.sweep(age=0)  # at exit nothing of a request is needed any more

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception:  # reported, and the loop goes on: a sweeper that stops keeps patients' films
                log.exception("sweeping the upload cache failed; trying again in %s s", self.age)
            self._stop.wait(max(self.age, 1))
