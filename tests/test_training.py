"""train.py end to end on a tiny synthetic tree: bundle contents, cache reuse, atomic writes, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import train
from pneumo.model import bundle as bundles
from pneumo.train import features
from pneumo.train.loop import run


def test_bundle_has_everything_a_user_needs(tiny_bundle):
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"config.json", "head.weights.h5", "roc.png", "confusion.png", "README.md"} <= names
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert 0.0 < config["threshold"] < 1.0
    assert set(config["metrics"]) == {"validation", "kaggle_val", "test"}
    for split in config["metrics"].values():
        assert {"accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "confusion"} <= set(split)
    assert config["data_counts"]["test"] == {"NORMAL": 4, "PNEUMONIA": 4}
    card = (tiny_bundle / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: keras" in card and "not for diagnosis" in card.lower()
    assert "model-index" in card


def test_validation_patients_never_fitted(tiny_bundle):
    counts = json.loads((tiny_bundle / "config.json").read_text())["data_counts"]
    total = sum(counts["fit"].values()) + sum(counts["validation"].values())
    assert total == 24  # 6 patients x 2 images x 2 classes, each in exactly one side


def backbone_passes(bundle) -> int:
    """The bundle's own count of images that went through the backbone in the run that wrote it."""
    return json.loads((bundle / "config.json").read_text())["backbone_passes_this_run"]


def test_second_run_reuses_cached_features(tiny_config_factory, tmp_path):
    # Its own cache: the session's shared one may already hold every image, depending on which tests ran first.
    first = run(tiny_config_factory(tmp_path / "a", cache_dir=tmp_path / "cache"), log=lambda *_: None)
    assert backbone_passes(first) > 0
    second = run(tiny_config_factory(tmp_path / "b", cache_dir=tmp_path / "cache"), log=lambda *_: None)
    assert backbone_passes(second) == 0, "the first run extracted every image; nothing is recomputed"


def test_changed_image_is_recomputed(tiny_config_factory, tiny_data, tmp_path):
    import shutil

    import synth
    from PIL import Image

    from pneumo.preprocess import AugmentConfig
    from pneumo.model.build import backbone_fingerprint

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    target = sorted((data / "test" / "NORMAL").iterdir())[0]
    Image.fromarray(synth.xray(999)).save(target, quality=90)
    cfg = tiny_config_factory(tmp_path / "b", data_dir=data)
    run(cfg, log=lambda *_: None)
    cache = features.FeatureCache(cfg.cache_dir, backbone_fingerprint("random"), 0, AugmentConfig(), 32)
    assert features.file_hash(target) in cache.rows


def test_interrupted_write_keeps_previous_bundle(tiny_bundle, tiny_config_factory, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = (out / "config.json").read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pneumo.train.plots.save_confusion", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config_factory(out), log=lambda *_: None)
    assert (out / "config.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no partial folder left behind"


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tiny_config_factory, tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a model bundle"):
        run(tiny_config_factory(tmp_path), log=lambda *_: None)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_unreadable_training_file_is_skipped_and_listed(tiny_config_factory, tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "NORMAL" / "IM-9999-0001.jpeg").write_text("not an image")
    lines = []
    out = run(tiny_config_factory(tmp_path / "out", data_dir=data), log=lines.append)
    skipped = json.loads((out / "config.json").read_text())["skipped_files"]
    assert [s["file"].endswith("IM-9999-0001.jpeg") for s in skipped] == [True]
    assert any("skipped 1 unreadable" in line for line in lines)


@pytest.fixture
def unbalanced_data(tiny_data, tmp_path) -> Path:
    """tiny_data with 3 more pneumonia patients: 18 pneumonia films against 12 normal ones."""
    import shutil

    import synth
    from PIL import Image

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for k in range(6):
        Image.fromarray(synth.xray(500 + k, pneumonia=True)).save(
            data / "train" / "PNEUMONIA" / f"person{900 + k // 2}_bacteria_{k}.jpeg", quality=95)
    return data


def test_balance_leaves_extra_films_unread(tiny_config_factory, unbalanced_data, tmp_path):
    config = tiny_config_factory(tmp_path / "b", data_dir=unbalanced_data, cache_dir=tmp_path / "cache", balance=True)
    lines = []
    bundle_config = json.loads((run(config, log=lines.append) / "config.json").read_text())
    fit, validation = bundle_config["data_counts"]["fit"], bundle_config["data_counts"]["validation"]
    assert fit["NORMAL"] == fit["PNEUMONIA"] == 8 and validation == {"NORMAL": 4, "PNEUMONIA": 6}
    left_out = 18 - 8 - 6
    assert bundle_config["backbone_passes_this_run"] == 30 - left_out + 4 + 8  # + val/ and test/
    assert bundle_config["recipe"]["balance"] is True and "--balance" in bundle_config["command"].split()
    assert any(f"--balance: 16 of the {16 + left_out} fit images kept" in line for line in lines)


def test_balance_views_gives_views_to_as_many_films_of_each_class(tiny_config_factory, unbalanced_data, tmp_path):
    config = tiny_config_factory(tmp_path / "v", data_dir=unbalanced_data, cache_dir=tmp_path / "cache", views=1,
                                 balance_views=True)
    lines = []
    bundle_config = json.loads((run(config, log=lines.append) / "config.json").read_text())
    assert bundle_config["data_counts"]["fit"] == {"NORMAL": 8, "PNEUMONIA": 12}  # every fit film, plain
    assert bundle_config["backbone_passes_this_run"] == 30 + 4 + 8 + 2 * 8  # views of 8 films of each class
    assert any(line.startswith("fit: 36 rows from 20 images") for line in lines)
    assert "--balance-views" in bundle_config["command"].split()


def test_view_stretch_draws_its_own_views_and_is_in_the_recipe(tiny_config_factory, tmp_path):
    cache = tmp_path / "cache"
    plain = json.loads((run(tiny_config_factory(tmp_path / "a", cache_dir=cache, views=1)) / "config.json").read_text())
    stretched = json.loads((run(tiny_config_factory(tmp_path / "b", cache_dir=cache, views=1, view_stretch=1.3))
                            / "config.json").read_text())
    fit = sum(plain["data_counts"]["fit"].values())
    assert stretched["backbone_passes_this_run"] == fit, "new views, everything else from the cache"
    assert stretched["recipe"]["augment"]["stretch_max"] == 1.3 and plain["recipe"]["augment"]["stretch_max"] == 1.0
    assert "--view-stretch 1.3" in stretched["command"] and "--view-stretch" not in plain["command"]


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "/nonexistent"], "--data-dir must be an existing folder"),
    (["--val-fraction", "0.9"], "--val-fraction must be in (0, 0.5), got 0.9"),
    (["--balance-views"], "--balance-views needs --views N and views of every class, got --views 0"),
    (["--view-stretch", "1.2"], "--view-stretch 1.2 stretches the views and needs --views N, got --views 0"),
    (["--views", "1", "--view-stretch", "3"], "--view-stretch must be between 1 and 2, got 3.0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--push-to-hub", "not a repo"], "expected a Hub repository as USER/REPO"),
    (["--report", "shift_dev"], "--report expects NAME=DIR"),
])
def test_cli_rejects_bad_arguments_before_work(tiny_data, argv, message, capsys):
    if argv[0] != "--data-dir":
        argv = ["--data-dir", str(tiny_data), "--backbone-weights", "random"] + argv
    assert train.main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    from dataclasses import fields

    from pneumo.train.options import TrainConfig, _flag

    with pytest.raises(SystemExit) as stopped:
        train.main(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert all(_flag(f) in shown for f in fields(TrainConfig) if f.metadata["cli"])


def test_empty_class_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "train" / "PNEUMONIA").mkdir(parents=True)
    assert train.main(["--data-dir", str(tmp_path), "--backbone-weights", "random"]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_loaded_bundle_reproduces_training_predictions(tiny_bundle, tiny_predictor, tiny_data):
    from pneumo.io.folders import scan_class_folder
    from pneumo.train.metrics import binary_metrics
    from pneumo.io import read_image
    from pneumo.preprocess import to_model_input

    samples = scan_class_folder(tiny_data / "test")
    x = np.stack([to_model_input(read_image(s.path), 32) for s in samples])
    probs, _ = tiny_predictor.predict_inputs(x)
    stored = json.loads((tiny_bundle / "config.json").read_text())["metrics"]["test"]
    assert binary_metrics([s.label for s in samples], probs, tiny_predictor.threshold)["auc"] == pytest.approx(stored["auc"])
    assert bundles.load_bundle(tiny_bundle).threshold == tiny_predictor.threshold


def test_ctrl_c_during_extraction_keeps_the_cache_usable(tiny_config_factory, tiny_data, tmp_path, monkeypatch):
    """Interrupt after the first chunk: the chunk stays readable and the rerun computes only the rest."""
    cfg = tiny_config_factory(tmp_path / "out", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(features, "CHUNK_ROWS", 8)
    real_save = features.FeatureCache.save_chunk
    saves = []

    def save_then_interrupt(self, keys, feats):
        real_save(self, keys, feats)
        saves.append(len(keys))
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(features.FeatureCache, "save_chunk", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, log=lambda *_: None)
    assert not (tmp_path / "out").exists(), "no bundle from an interrupted run"
    monkeypatch.setattr(features.FeatureCache, "save_chunk", real_save)
    out = run(cfg, log=lambda *_: None)
    images = sum(1 for p in tiny_data.rglob("*") if p.is_file())
    assert backbone_passes(out) == images - saves[0], "the chunk saved before Ctrl-C was reused"


def test_fine_tuned_bundle_ships_block5_and_reproduces_its_metrics(tiny_config_factory, tiny_data, tmp_path):
    from pneumo.io.folders import scan_class_folder
    from pneumo.train.metrics import binary_metrics
    from pneumo.io import read_image
    from pneumo.preprocess import to_model_input
    from pneumo.model.build import build_backbone
    from pneumo.infer.predictor import Predictor

    out = run(tiny_config_factory(tmp_path / "ft", fine_tune=2, fine_tune_lr=1e-3), log=lambda *_: None)
    config = json.loads((out / "config.json").read_text())
    assert config["block5_weights"] == "block5.npz" and config["recipe"]["fine_tune"] == 2
    assert "--fine-tune 2" in config["command"]
    predictor = Predictor.load(out)
    random_conv = build_backbone("random", 32).get_layer("block5_conv3").get_weights()[0]
    assert not np.allclose(predictor.model.get_layer("block5_conv3").get_weights()[0], random_conv)
    samples = scan_class_folder(tiny_data / "test")
    inputs = np.stack([to_model_input(read_image(s.path), 32) for s in samples])
    probs, _ = predictor.predict_inputs(inputs)
    measured = binary_metrics([s.label for s in samples], probs, predictor.threshold)
    assert measured["confusion"] == config["metrics"]["test"]["confusion"], "the shipped block5 is what was measured"
    assert measured["auc"] == pytest.approx(config["metrics"]["test"]["auc"], abs=1e-6)
