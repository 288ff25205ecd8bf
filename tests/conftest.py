"""Shared fixtures: a tiny synthetic Kaggle tree and a bundle trained on it with a random 32 px backbone."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import synth`
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_VAL = SHARED / "data" / "chest_xray" / "val"
TINY = 32  # px: VGG16's five poolings leave 1x1; enough to exercise every code path in seconds


def real_backbone() -> str:
    """The shared ImageNet file from PNEUMO_BACKBONE_WEIGHTS, or skip the test saying why."""
    path = os.environ.get("PNEUMO_BACKBONE_WEIGHTS", "")
    if not path or not Path(path).is_file():
        pytest.skip("needs the real VGG16 weights: set PNEUMO_BACKBONE_WEIGHTS to "
                    "../shared/weights/vgg16_imagenet_notop.weights.h5")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    import synth

    return synth.kaggle_tree(tmp_path_factory.mktemp("data"), {"train": 6, "val": 1, "test": 2})


@pytest.fixture(scope="session")
def tiny_config_factory(tiny_data, tmp_path_factory):
    from pneumo.training import TrainConfig

    cache = tmp_path_factory.mktemp("cache")

    def make(output: Path, **overrides) -> TrainConfig:
        settings = dict(data_dir=tiny_data, output=output, cache_dir=cache, backbone_weights="random",
                        input_size=TINY, epochs=4, patience=4, batch_size=8, val_fraction=0.34)
        settings.update(overrides)
        return TrainConfig(**settings)

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tiny_config_factory, tmp_path_factory) -> Path:
    from pneumo.training import run

    return run(tiny_config_factory(tmp_path_factory.mktemp("bundles") / "tiny"), log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_bundle):
    from pneumo.predictor import Predictor

    return Predictor.load(tiny_bundle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(bundle: Path, temp_dir: Path, extra_env: dict | None = None):
    port = free_port()
    env = {**os.environ, "PNEUMO_MODEL": str(bundle), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_TEMP_DIR": str(temp_dir), "TF_CPP_MIN_LOG_LEVEL": "3", **(extra_env or {})}
    log = open(temp_dir.parent / f"app-{port}.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = Path(log.name)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("app.py did not start within 120 s")


@pytest.fixture(scope="session")
def server(tiny_bundle, tmp_path_factory):
    """A real `python app.py` serving the tiny bundle: (url, Gradio temp dir, log file, pid)."""
    temp_dir = tmp_path_factory.mktemp("app") / "gradio-tmp"
    temp_dir.mkdir()
    process, url = start_app(tiny_bundle, temp_dir, {"PNEUMO_DELETE_AFTER_S": "3"})
    yield url, temp_dir, process.log_path, process.pid
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def server_url(server) -> str:
    return server[0]


@pytest.fixture(scope="session")
def shipped_server(tmp_path_factory):
    """A real `python app.py` serving the shipped weights/ with the real backbone: (url, log file)."""
    weights = real_backbone()
    temp_dir = tmp_path_factory.mktemp("shipped-app") / "gradio-tmp"
    temp_dir.mkdir()
    process, url = start_app(ROOT / "weights", temp_dir, {"PNEUMO_BACKBONE_WEIGHTS": weights})
    yield url, process.log_path
    process.terminate()
    process.wait(timeout=30)


def drop_file(page, selector: str, path: Path, mime: str) -> None:
    """A real drop event carrying the file, as when a user drags it from the desktop."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""", [data, path.name, mime])
    target = page.locator(f"{selector} button.upload-container")  # the drop zone
    if not target.count():  # a file is shown: clear it first, as a user would with the x
        page.locator(f"{selector} button[aria-label='Clear']").first.click()
        target.wait_for(timeout=10_000)
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": transfer})
