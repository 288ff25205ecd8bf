"""Shared fixtures: a tiny synthetic Kaggle tree and a bundle trained on it with a random 32 px backbone."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_VAL = SHARED / "data" / "chest_xray" / "val"
TINY = 32  # px: VGG16's five poolings leave 1x1; enough to exercise every code path in seconds


# The fast lane (`pytest -m "not slow"`, < 90 s on 2 cores) leaves out the tests marked slow: what needs a real server,
# a browser, the real backbone, a subprocess that imports TensorFlow (~10 s each) or a training run of its own (8-25 s
# each; lung_bundle, adult_bundle and zones_bundle each train one). A new test of that kind carries
# @pytest.mark.slow itself. `pytest` alone still runs everything.


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
    from pneumo.train.options import TrainConfig

    cache = tmp_path_factory.mktemp("cache")

    def make(output: Path, **overrides) -> TrainConfig:
        # The design's plain form on the float trunk, one head, no views: the shipped recipe's parts (int8 among
        # them) are tested where they matter.
        settings = dict(data_dir=tiny_data, output=output, cache_dir=cache, backbone_weights="random", pooling="gap",
                        precision="fp32", heads=1, views=0,
                        input_size=TINY, epochs=4, patience=4, batch_size=8, val_fraction=0.34)
        settings.update(overrides)
        return TrainConfig(**settings)

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tiny_config_factory, tmp_path_factory) -> Path:
    from pneumo.train.loop import run

    return run(tiny_config_factory(tmp_path_factory.mktemp("bundles") / "tiny"), log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_bundle):
    from pneumo.infer.predictor import Predictor

    return Predictor.load(tiny_bundle)


@pytest.fixture(scope="session")
def spread_bundle(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with a hand-set lesion-detector head: scores on both sides of the threshold (spread.py)."""
    import spread

    return spread.make(tiny_bundle, tmp_path_factory.mktemp("bundles") / "spread")


@pytest.fixture(scope="session")
def spread_predictor(spread_bundle):
    from pneumo.infer.predictor import Predictor

    return Predictor.load(spread_bundle)


@pytest.fixture(scope="session")
def server(spread_bundle, tmp_path_factory):
    """A real `python app.py` serving the spread bundle (films with spread.with_lesion's opacity: PNEUMONIA, without:
    NORMAL): (url, Gradio temp dir, log file, pid)."""
    from tools.appserver import running_app

    temp_dir = tmp_path_factory.mktemp("app") / "gradio-tmp"
    temp_dir.mkdir()
    env = {"PNEUMO_MODEL": str(spread_bundle), "GRADIO_TEMP_DIR": str(temp_dir), "PNEUMO_DELETE_AFTER_S": "3"}
    with running_app(env, temp_dir.parent / "app.log") as app:
        yield app.url, temp_dir, app.log_path, app.process.pid


@pytest.fixture(scope="session")
def server_url(server) -> str:
    return server[0]


@pytest.fixture(scope="session")
def shipped_server(tmp_path_factory):
    """A real `python app.py` serving the shipped weights/ with the real backbone: (url, log file)."""
    from tools.appserver import running_app

    weights = real_backbone()
    temp_dir = tmp_path_factory.mktemp("shipped-app") / "gradio-tmp"
    temp_dir.mkdir()
    env = {"PNEUMO_MODEL": str(ROOT / "weights"), "GRADIO_TEMP_DIR": str(temp_dir), "PNEUMO_BACKBONE_WEIGHTS": weights}
    with running_app(env, temp_dir.parent / "app.log") as app:
        yield app.url, app.log_path


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
    # The page empties the box as soon as a film arrives (web.py), but the box re-renders meanwhile: wait for it
    # rather than clicking a x that may be detached under the click.
    target.wait_for(timeout=10_000)
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": transfer})
