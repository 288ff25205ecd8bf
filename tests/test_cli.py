"""`python -m pneumo predict|evaluate` as a user runs them: real files, a real subprocess, JSON out."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import synth
from conftest import ROOT
from PIL import Image

pytestmark = pytest.mark.slow  # each test runs `python -m pneumo` in a subprocess that imports TensorFlow


def pneumo(*args, env_extra=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pneumo", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    good = folder / "good.png"
    Image.fromarray(synth.xray(5, pneumonia=True)).save(good)
    sixteen = folder / "sixteen.png"
    Image.fromarray(synth.xray(6).astype(np.uint16) * 257).save(sixteen)
    dicom = folder / "scan.dcm"
    dicom.write_bytes(synth.dicom_bytes(synth.xray(7).astype(np.uint16) * 16))
    buffer = io.BytesIO()
    Image.fromarray(synth.xray(8)).save(buffer, format="JPEG")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[:400])
    text = folder / "notes.jpg"
    text.write_text("hello")
    return [good, truncated, sixteen, text, dicom]


def test_predict_prints_one_json_line_per_file_and_fails_softly(tiny_bundle, tiny_predictor, mixed_files):
    result = pneumo("predict", *map(str, mixed_files), "--model", str(tiny_bundle))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == list(map(str, mixed_files))
    ok = [line for line in lines if "error" not in line]
    assert [line["file"].rsplit("/", 1)[1] for line in ok] == ["good.png", "sixteen.png", "scan.dcm"]
    for line in ok:  # what the library says of the same file, in this process
        expected = tiny_predictor.predict_file(line["file"])
        assert {**line, "heat_in_lungs": None} == {**expected, "heat_in_lungs": None}
    errors = {line["file"].rsplit("/", 1)[1]: line["error"] for line in lines if "error" in line}
    assert "damaged or incomplete" in errors["truncated.jpg"] and "text file" in errors["notes.jpg"]


def test_predict_exit_code_zero_when_all_files_read(tiny_bundle, mixed_files):
    result = pneumo("predict", str(mixed_files[0]), "--model", str(tiny_bundle))
    assert result.returncode == 0 and json.loads(result.stdout)["file"].endswith("good.png")


def test_evaluate_prints_metrics_for_a_kaggle_root(tiny_bundle, tiny_predictor, tiny_data):
    result = pneumo("evaluate", str(tiny_data), "--model", str(tiny_bundle))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 8 and sum(map(sum, report["confusion"])) == 8
    # The same films scored in-process, the metrics written out by hand.
    files = sorted((tiny_data / "test").rglob("*.jpeg"))
    truth = np.array([f.parent.name == "PNEUMONIA" for f in files])
    scores = np.array([tiny_predictor.predict_file(f)["probability"] for f in files])
    called = scores >= tiny_predictor.threshold
    assert report["accuracy"] == pytest.approx(np.mean(called == truth), abs=1e-6)
    assert report["sensitivity"] == pytest.approx(called[truth].mean(), abs=1e-6)
    assert report["specificity"] == pytest.approx((~called[~truth]).mean(), abs=1e-6)
    pairs = [(p > n) + 0.5 * (p == n) for p in scores[truth] for n in scores[~truth]]
    assert report["auc"] == pytest.approx(np.mean(pairs), abs=1e-5)
    assessed = [tiny_predictor.predict_file(f)["assessed"] for f in files]
    assert report["outside_population"] == 0, "the tiny bundle has no population check"
    assert report["not_assessed"] == report["not_chest_xray"] == assessed.count(False)
    low, high = tiny_predictor.band
    inside = int(((scores >= low) & (scores <= high)).sum())
    assert report["borderline"]["n"] == 8 and report["borderline"]["inside"] == inside
    bound = report["bound_at_sensitivity95"]  # the threshold fitted on these labels: never below the real one's
    assert bound["sensitivity"] >= 0.95
    if report["sensitivity"] >= 0.95:
        assert bound["specificity"] >= report["specificity"]
    stored = json.loads((tiny_bundle / "config.json").read_text())["metrics"]["test"]
    assert report["auc"] == pytest.approx(stored["auc"], abs=1e-6) and report["confusion"] == stored["confusion"]


def test_console_script_runs_the_same_cli(tiny_bundle, mixed_files):
    """`pip install -e .` puts a `pneumo` command next to the interpreter; it gives the same JSON as -m."""
    script = os.path.join(os.path.dirname(sys.executable), "pneumo")
    if not os.path.exists(script):
        pytest.skip("the package is not installed (pip install -e .), so there is no `pneumo` command")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([script, "predict", str(mixed_files[0]), "--model", str(tiny_bundle)], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    via_module = json.loads(pneumo("predict", str(mixed_files[0]), "--model", str(tiny_bundle)).stdout)
    assert json.loads(result.stdout) == via_module


def test_missing_model_is_a_clear_error(tmp_path):
    result = pneumo("predict", "x.png", "--model", str(tmp_path))
    assert result.returncode == 2 and "is not a model bundle" in result.stderr and "Traceback" not in result.stderr


def test_predict_writes_16_bit_heatmaps_at_each_files_size(tiny_bundle, mixed_files, tmp_path):
    """--heatmaps: one 16-bit PNG per assessed file, at its own size, equal to the heatmap the app overlays; none (and
    null) for a file the model's answer does not apply to (the synthetic DICOM is unlike the tiny bundle's films)."""
    import cv2

    from pneumo.infer.gradcam import heat_in_image_frame
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image

    out = tmp_path / "heat"
    result = pneumo("predict", *map(str, mixed_files), "--model", str(tiny_bundle), "--heatmaps", str(out))
    assert result.returncode == 1, result.stderr  # two unreadable files: no heatmap for them
    lines = {json.loads(line)["file"].rsplit("/", 1)[1]: json.loads(line) for line in result.stdout.splitlines()}
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "sixteen.png"]
    assert "heatmap" not in lines["notes.jpg"]
    assert not lines["scan.dcm"]["assessed"] and lines["scan.dcm"]["heatmap"] is None
    predictor = Predictor.load(tiny_bundle)
    for name in ("good.png", "sixteen.png"):
        stored = cv2.imread(lines[name]["heatmap"], cv2.IMREAD_UNCHANGED)
        image = read_image(next(p for p in mixed_files if p.name == name))
        assert stored.dtype == np.uint16 and stored.shape == image.gray.shape
        expected = heat_in_image_frame(predictor.analyze(image).heatmap, *image.gray.shape)
        assert np.abs(stored / 65535.0 - expected).max() < 1e-3


def test_heatmaps_refuse_two_inputs_with_one_name(tiny_bundle, mixed_files, tmp_path):
    twin = tmp_path / "good.jpeg"
    Image.open(mixed_files[0]).convert("L").save(twin)
    result = pneumo("predict", str(mixed_files[0]), str(twin), "--model", str(tiny_bundle), "--heatmaps",
                    str(tmp_path / "heat"))
    assert result.returncode == 2 and "for more than one input file" in result.stderr and result.stdout == ""


def test_calibrate_refuses_a_small_folder_in_one_sentence(tmp_path):
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "site" / label).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(synth.xray(k + 50 * (label == "NORMAL"))).save(tmp_path / "site" / label / f"IM-{k}.png")
    result = pneumo("calibrate", str(tmp_path / "site"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: calibration needs at least 59 PNEUMONIA films") and \
        result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_calibrate_then_predict_names_the_threshold_source(tiny_bundle, tmp_path):
    from test_calibrate import site_folder

    folder = site_folder(tmp_path / "clinic")
    result = pneumo("calibrate", str(folder), "--model", str(tiny_bundle), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "on new patients of this site" in result.stdout and "wrote" in result.stdout
    predicted = pneumo("predict", str(next((folder / "NORMAL").iterdir())), "--model", str(tmp_path / "out"))
    assert json.loads(predicted.stdout)["threshold_source"].startswith("calibrated: clinic, ")


def test_predict_scores_every_image_in_a_folder_in_order(tiny_predictor, tiny_data, tmp_path, capsys):
    from pneumo.ui.cli import main, run_predict

    assert run_predict(tiny_predictor, [tiny_data / "test"]) == 0
    printed = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert printed == sorted(str(p) for p in (tiny_data / "test").rglob("*.jpeg")) and len(printed) == 8
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(tiny_predictor.bundle.path), str(tmp_path / "empty")]) == 2
    assert f"error: '{tmp_path / 'empty'}' holds no images" in capsys.readouterr().err
