"""train.py end to end on a tiny synthetic tree: bundle contents, cache reuse, atomic writes, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import train
from pneumo.io.folders import file_hash
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


@pytest.mark.slow
def test_second_run_reuses_cached_features(tiny_config_factory, tmp_path):
    # Its own cache: the session's shared one may already hold every image, depending on which tests ran first.
    first = run(tiny_config_factory(tmp_path / "a", cache_dir=tmp_path / "cache"), log=lambda *_: None)
    assert backbone_passes(first) > 0
    second = run(tiny_config_factory(tmp_path / "b", cache_dir=tmp_path / "cache"), log=lambda *_: None)
    assert backbone_passes(second) == 0, "the first run extracted every image; nothing is recomputed"


@pytest.mark.slow
def test_changed_image_is_recomputed(tiny_config_factory, tiny_data, tmp_path):
    import shutil

    import synth
    from PIL import Image

    from pneumo.model.build import backbone_fingerprint
    from pneumo.preprocess import AugmentConfig

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    target = sorted((data / "test" / "NORMAL").iterdir())[0]
    Image.fromarray(synth.xray(999)).save(target, quality=90)
    cfg = tiny_config_factory(tmp_path / "b", data_dir=data)
    run(cfg, log=lambda *_: None)
    cache = features.FeatureCache(cfg.cache_dir, backbone_fingerprint("random"), 0, AugmentConfig(), 32)
    assert file_hash(target) in cache.rows


@pytest.mark.slow
def test_interrupted_write_keeps_previous_bundle(tiny_bundle, tiny_config_factory, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = (out / "config.json").read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pneumo.model.plots.save_confusion", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config_factory(out), log=lambda *_: None)
    assert (out / "config.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"], "no partial folder left behind"


@pytest.mark.slow
def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tiny_config_factory, tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a model bundle"):
        run(tiny_config_factory(tmp_path), log=lambda *_: None)
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.mark.slow
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


def test_the_shipped_recipe_is_the_default_and_its_command_names_only_data_folders(tmp_path):
    from pneumo.train.options import TrainConfig

    config = TrainConfig(data_dir=tmp_path, output=tmp_path / "out", adult_dirs=(tmp_path,), lung_masks=tmp_path,
                         not_chest_dirs=(tmp_path,), report_dirs={"shift_dev": tmp_path})
    assert config.command() == ("python train.py --data-dir DATA --adult-dir ADULTS --not-chest OTHERS "
                                "--lung-masks MASKS --report shift_dev=DIR --output OUT")
    assert config.precision == "int8"
    shipped = json.loads((ROOT / "weights" / "config.json").read_text())
    assert json.loads(json.dumps(config.recipe())) == shipped["recipe"], "the defaults are what made weights/"
    assert shipped["command"] == config.command()
    assert config.recipe()["head"] == {"pooling": "lung-zones", "weight_decay": 0.01}
    assert (config.heads, config.views) == (5, 1)


@pytest.mark.slow
def test_views_cost_one_pass_per_fit_film_and_are_cached(tiny_config_factory, tmp_path):
    lines = []
    first = run(tiny_config_factory(tmp_path / "a", cache_dir=tmp_path / "cache", views=1), log=lines.append)
    config = json.loads((first / "config.json").read_text())
    fit = sum(config["data_counts"]["fit"].values())
    assert config["backbone_passes_this_run"] == 24 + 4 + 8 + fit  # train/, val/, test/, then one view per fit film
    assert any(line.startswith(f"fit: {2 * fit} rows from {fit} images") for line in lines)
    again = run(tiny_config_factory(tmp_path / "b", cache_dir=tmp_path / "cache", views=1), log=lambda *_: None)
    assert backbone_passes(again) == 0


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "/nonexistent"], "--data-dir must be an existing folder"),
    (["--val-fraction", "0.9"], "--val-fraction must be in (0, 0.5), got 0.9"),
    (["--output", "out"], "the shipped recipe needs --lung-masks DIR and --adult-dir DIR"),
    (["--output", "out", "--lung-masks", "."], "the shipped recipe needs --adult-dir DIR (the lung-field head"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--push-to-hub", "not a repo"], "--push-to-hub must be a Hub repository USER/REPO (e.g. alice/pneumo-vgg16), "
                                      "got 'not a repo'"),
    (["--report", "shift_dev"], "--report expects NAME=DIR"),
])
def test_cli_rejects_bad_arguments_before_work(tiny_data, argv, message, capsys):
    if argv[0] != "--data-dir":
        argv = ["--data-dir", str(tiny_data), "--backbone-weights", "random"] + argv
    if "--output" not in argv:
        argv += ["--output", "out"]
    assert train.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_trains_then_pushes_what_it_wrote(tiny_data, tiny_bundle, tmp_path, monkeypatch, capsys):
    """train.py's own wiring: the parsed options reach the training run, and --push-to-hub / --private the upload of
    the folder it wrote (the run and the upload stubbed; both are tested on their own)."""
    runs, pushes = [], []
    monkeypatch.setattr("pneumo.train.loop.run", lambda config: runs.append(config) or tiny_bundle)
    monkeypatch.setattr("pneumo.hub.push", lambda folder, repo, private: pushes.append((folder, repo, private))
                        or f"https://huggingface.co/{repo}")
    argv = ["--data-dir", str(tiny_data), "--backbone-weights", "random", "--pooling", "gap", "--heads", "2",
            "--output", str(tmp_path / "out"), "--push-to-hub", "alice/pneumo-test", "--private"]
    assert train.main(argv) == 0
    assert [(c.heads, c.pooling, c.output, c.push_to_hub, c.private) for c in runs] == [
        (2, "gap", tmp_path / "out", "alice/pneumo-test", True)]
    assert pushes == [(tiny_bundle, "alice/pneumo-test", True)]
    assert "pushed to https://huggingface.co/alice/pneumo-test" in capsys.readouterr().out


def test_a_missing_output_is_refused_by_name(tiny_data, capsys):
    with pytest.raises(SystemExit) as stopped:
        train.main(["--data-dir", str(tiny_data), "--backbone-weights", "random", "--pooling", "gap"])
    assert stopped.value.code == 2 and "the following arguments are required: --output" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    from dataclasses import fields

    from pneumo.train.options import TrainConfig, _flag

    with pytest.raises(SystemExit) as stopped:
        train.main(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert all(_flag(f) in shown for f in fields(TrainConfig) if f.metadata["cli"])
    required, recipe = shown.split("\nrequired:\n")[1], shown.split("\nrequired by the shipped recipe")[1]
    assert "--data-dir" in required.split("\n\n")[0] and "--output" in required.split("\n\n")[0]
    assert "--adult-dir" in recipe.split("\n\n")[0] and "--lung-masks" in recipe.split("\n\n")[0]


def test_empty_class_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    (tmp_path / "train" / "PNEUMONIA").mkdir(parents=True)
    argv = ["--data-dir", str(tmp_path), "--backbone-weights", "random", "--pooling", "gap",
            "--output", str(tmp_path / "b")]
    assert train.main(argv) == 2
    assert "holds no images" in capsys.readouterr().err


def test_loaded_bundle_reproduces_training_predictions(tiny_bundle, tiny_predictor, tiny_data):
    from pneumo.io import read_image
    from pneumo.io.folders import scan_class_folder
    from pneumo.preprocess import to_model_input
    from pneumo.stats.metrics import binary_metrics

    samples = scan_class_folder(tiny_data / "test")
    x = np.stack([to_model_input(read_image(s.path), 32) for s in samples])
    probs, _ = tiny_predictor.predict_inputs(x)
    stored = json.loads((tiny_bundle / "config.json").read_text())["metrics"]["test"]
    measured = binary_metrics([s.label for s in samples], probs, tiny_predictor.threshold)
    assert measured["auc"] == pytest.approx(stored["auc"])
    assert bundles.load_bundle(tiny_bundle).threshold == tiny_predictor.threshold


@pytest.mark.slow
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


@pytest.mark.slow
def test_refit_checks_keeps_everything_but_the_checks(tiny_bundle, tiny_config_factory, tmp_path):
    """`train.py --refit-checks`: new checks from this run's folders; heads, threshold and the rest byte for byte."""
    import synth

    from pneumo.train.refit import refit_checks

    (tmp_path / "adults").mkdir()
    adults = synth.adult_folder(tmp_path / "adults")
    not_chest = tmp_path / "knees"
    not_chest.mkdir()
    for k in range(3):
        Image.fromarray(synth.knee(k, (160, 120))).save(not_chest / f"knee{k}.png")
    config = tiny_config_factory(tmp_path / "refit", adult_dirs=(adults,), not_chest_dirs=(not_chest,),
                                 refit_checks=tiny_bundle, seed=7, val_fraction=0.2)  # the bundle's own split wins
    out = refit_checks(config, log=lambda *_: None)
    before, after = (json.loads((b / "config.json").read_text()) for b in (tiny_bundle, out))
    for name in ("head.weights.h5", "roc.png", "confusion.png"):
        assert (out / name).read_bytes() == (tiny_bundle / name).read_bytes()
    assert (out / "population.npz").is_file() and not (tiny_bundle / "population.npz").exists()
    assert after["threshold"] == before["threshold"] and after["metrics"] == before["metrics"]
    assert after["chest_check"]["fit_films"]["adult folders"] > 0 and after["population"]["adult_fit_images"] > 0
    assert after["chest_check"]["not_chest_caught_by_score"]["films"] == 3
    assert after["checks_refit"]["command"] == ("python train.py --refit-checks BUNDLE --data-dir DATA --adult-dir "
                                                "ADULTS --not-chest OTHERS --output OUT")
    assert after["chest_check"]["held_out_flagged"]["pediatric validation patients"]["films"] == sum(
        before["data_counts"]["validation"].values()), "the bundle's own validation patients set the cut-off"
    assert "Both checks were refit on" in (out / "README.md").read_text()
    # Without --adult-dir the bundle's population check stays, its file with its figures.
    again = refit_checks(tiny_config_factory(tmp_path / "again", refit_checks=out), log=lambda *_: None)
    assert (again / "population.npz").read_bytes() == (out / "population.npz").read_bytes()
    assert json.loads((again / "config.json").read_text())["population"] == after["population"]


def test_refit_checks_refuses_a_folder_that_is_not_a_bundle(tiny_data, tmp_path, capsys):
    argv = ["--data-dir", str(tiny_data), "--backbone-weights", "random", "--pooling", "gap", "--refit-checks",
            str(tmp_path), "--output", str(tmp_path / "out")]
    assert train.main(argv) == 2
    assert "--refit-checks must be a model bundle folder (with config.json)" in capsys.readouterr().err


def test_validate_checks_without_changing_the_config(tiny_data, tmp_path, monkeypatch):
    """One message lists every problem, a missing backbone file among them; the config is left as it was given."""
    from pneumo.train.options import TrainConfig

    monkeypatch.delenv("PNEUMO_BACKBONE_WEIGHTS", raising=False)
    config = TrainConfig(data_dir=tiny_data, output=tmp_path / "out", pooling="gap", epochs=0,
                         backbone_weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match=r"--epochs must be >= 1, got 0; Backbone weights file '.*missing"):
        config.validate()
    good = TrainConfig(data_dir=tiny_data, output=tmp_path / "out", pooling="gap")
    good.validate()
    assert good.backbone_weights is None and good.backbone == "imagenet"
