"""The bad-input corpus through the library, `python -m pneumo predict`, and the running app.

Every case gets a prediction or a one-sentence message; never a traceback; the bomb is never decoded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from corpus import cases, expected_gray

from pneumo.io import read_image

CASES = cases()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, data, _ in CASES:
        (folder / name).write_bytes(data)
    return folder


def one_sentence(message: str) -> bool:
    """For a clinician: no traceback, one line, and no Python exception names ("ValueError", "EOFError")."""
    return ("Traceback" not in message and "\n" not in message and len(message) < 400
            and not re.search(r"[A-Za-z]+(Error|Exception)\b", message))


@pytest.mark.parametrize("name, data, expected", CASES, ids=[c[0] for c in CASES])
def test_library(tiny_predictor, name, data, expected):
    if expected == "predict":
        image = read_image(data, name)
        twin, tolerance = expected_gray(name)
        assert image.gray.shape == twin.shape and np.abs(image.gray.astype(float) - twin).mean() <= tolerance, \
            "the pixels as stored, the right way round and never a negative"
        assert tiny_predictor.analyze(image).heatmap is not None
    else:
        with pytest.raises(ValueError, match=re.escape(expected)) as info:
            read_image(data, name)
        assert one_sentence(str(info.value)) and name in str(info.value)


def test_monochrome1_predicts_like_its_monochrome2_twin(tiny_predictor):
    data = {name: blob for name, blob, _ in CASES}
    m1 = tiny_predictor.analyze(read_image(data["monochrome1.dcm"], "m1.dcm")).probability
    m2 = tiny_predictor.analyze(read_image(data["monochrome2.dcm"], "m2.dcm")).probability
    assert abs(m1 - m2) < 1e-3


@pytest.mark.slow
def test_cli(tiny_bundle, corpus_dir):
    files = [str(corpus_dir / name) for name, _, _ in CASES]
    result = subprocess.run([sys.executable, "-m", "pneumo", "predict", *files, "--model", str(tiny_bundle)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == len(CASES)
    for line, (name, _, expected) in zip(lines, CASES):
        assert line["file"].endswith(name)
        if expected == "predict":
            assert "probability" in line and isinstance(line["looks_like_chest_xray"], bool), line
        else:
            assert expected in line["error"] and one_sentence(line["error"]), line


def test_bomb_is_refused_without_allocating_it(tmp_path):
    """Decoding 100000x100000 would take 10 GB; the refusal must cost next to nothing."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(dict((n, d) for n, d, _ in CASES)["bomb.png"])
    code = ("import resource, sys; from pneumo.io import read_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try: read_image(sys.argv[1])\nexcept ValueError: pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    grown_kb = int(subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True,
                                  cwd=ROOT, check=True).stdout)
    assert grown_kb < 50_000


@pytest.mark.server
@pytest.mark.slow
def test_running_app(server_url, corpus_dir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server_url, verbose=False)
    for name, _, expected in CASES:
        if expected == "predict":
            result, _ = client.predict(handle_file(str(corpus_dir / name)), api_name="/predict")
            assert (result["width"], result["height"]) == expected_gray(name)[0].shape[::-1], name
        else:
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(corpus_dir / name)), api_name="/predict")
            assert expected in str(info.value) and one_sentence(str(info.value)), name
