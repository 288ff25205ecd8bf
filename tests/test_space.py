"""`deploy-space` against a recording stand-in for HfApi (no network in tests).

The stand-in checks every call against the real HfApi method's signature, so a call the real
huggingface_hub would reject fails here too.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import huggingface_hub
import pytest
from conftest import ROOT
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import HfHubHTTPError

from pneumo import hub as space

REAL_API = huggingface_hub.HfApi
SECRET = "hf_secret_value_123"


class RecordingApi:
    calls: list = []
    remote_files: list = [".gitattributes", "README.md"]  # what a freshly created Space holds
    fail_with: Exception | None = None

    def __init__(self, token=None):
        RecordingApi.calls.append(("init", {"token": token}))

    def _record(self, name, *args, **kwargs):
        inspect.signature(getattr(REAL_API, name)).bind(self, *args, **kwargs)
        RecordingApi.calls.append((name, {**dict(enumerate(args)), **kwargs}))
        if RecordingApi.fail_with is not None:
            raise RecordingApi.fail_with

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", *args, **kwargs)
        return f"https://huggingface.co/spaces/{args[0]}"

    def list_repo_files(self, *args, **kwargs):
        self._record("list_repo_files", *args, **kwargs)
        return list(RecordingApi.remote_files)

    def create_commit(self, *args, **kwargs):
        self._record("create_commit", *args, **kwargs)


@pytest.fixture
def api(monkeypatch):
    RecordingApi.calls, RecordingApi.fail_with = [], None
    RecordingApi.remote_files = [".gitattributes", "README.md"]
    monkeypatch.setattr("pneumo.hub.HfApi", RecordingApi)  # the name hub.py calls
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return RecordingApi


def commit_operations(api) -> list:
    [(name, call)] = [c for c in api.calls if c[0] == "create_commit"]  # exactly one commit
    return call[1]


def added(api) -> dict:
    return {op.path_in_repo: op.path_or_fileobj for op in commit_operations(api) if isinstance(op, CommitOperationAdd)}


def test_deploy_creates_a_gradio_space_and_uploads_only_what_it_needs(api, capsys):
    url = space.deploy("alice/pneumo-demo", ROOT / "weights", private=True)
    assert url == "https://huggingface.co/spaces/alice/pneumo-demo"
    assert [c[0] for c in api.calls] == ["init", "create_repo", "list_repo_files", "create_commit"]
    assert api.calls[1][1] == {0: "alice/pneumo-demo", "repo_type": "space", "space_sdk": "gradio",
                               "private": True, "exist_ok": True}
    assert api.calls[3][1]["repo_type"] == "space"
    paths = set(added(api))
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pneumo").rglob("*.py") if "__pycache__" not in p.parts}
    bundle = {f"weights/{p.name}" for p in (ROOT / "weights").iterdir() if p.is_file()}
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").iterdir()
                if p.suffix.lower() in (".jpeg", ".jpg", ".png", ".dcm") or p.name == "README.md"}
    assert {"weights/head.weights.h5", "weights/ood.npz", "weights/config.json"} <= bundle
    docs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*") if p.suffix in (".md", ".png", ".jpg")}
    assert len(examples) >= 2 and {"pneumo/hub.py", "pneumo/io/decode.py"} <= package and docs
    assert paths == {"app.py", "requirements.txt", "README.md", ".gitattributes"} | package | bundle | examples | docs
    assert added(api)["requirements.txt"] == str(ROOT / "requirements.lock")  # the Space installs what CI tested
    for name in paths - {".gitattributes", "README.md", "requirements.txt"}:
        assert added(api)[name] == str(ROOT / name)  # the local file itself, not a copy elsewhere
    for banned in ("tests/", "tools/", ".venv/", ".git/", "train.py", "__pycache__", "shared"):
        assert not any(banned in p for p in paths), banned
    assert SECRET not in capsys.readouterr().out


def test_gitattributes_stores_binaries_with_lfs(api):
    text = space.gitattributes()
    for pattern in ("*.h5", "*.npz", "*.png", "*.jpg", "*.jpeg", "*.dcm", "*.onnx"):
        assert f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" in text
    space.deploy("alice/pneumo-demo", ROOT / "weights")
    assert added(api)[".gitattributes"] == text.encode()
    assert api.calls[1][1]["private"] is False


def test_chosen_bundle_replaces_weights_and_stale_files_are_deleted(api, tiny_bundle, tmp_path):
    shipped = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, shipped)
    (shipped / "__pycache__").mkdir()
    (shipped / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (shipped / ".DS_Store").write_bytes(b"\0")
    api.remote_files = [".gitattributes", "README.md", "notes.md", "pneumo/old_module.py",
                        "pneumo/__pycache__/cli.cpython-311.pyc", "weights/block5.weights.h5", "weights/config.json"]
    space.deploy("alice/pneumo-demo", shipped)
    weights = {p: f for p, f in added(api).items() if p.startswith("weights/")}
    assert weights == {f"weights/{p.name}": str(shipped / p.name) for p in tiny_bundle.iterdir() if p.is_file()}
    assert "weights/head.weights.h5" in weights  # the chosen bundle only: nothing from the shipped weights/
    deleted = {op.path_in_repo for op in commit_operations(api) if isinstance(op, CommitOperationDelete)}
    # Gone from the project -> gone from the Space; overwritten files and files outside our folders stay.
    assert deleted == {"pneumo/old_module.py", "pneumo/__pycache__/cli.cpython-311.pyc", "weights/block5.weights.h5"}


@pytest.mark.parametrize("repo_id", ["bad-id", "a/b/c", "", "alice/ x"])
def test_bad_repo_id_fails_before_any_api_call(api, repo_id):
    with pytest.raises(ValueError, match="USER/REPO"):
        space.deploy(repo_id, ROOT / "weights")
    assert api.calls == []


@pytest.mark.parametrize("folder", ["examples", "missing", "hf://alice/model"])
def test_non_bundle_folder_fails_before_any_api_call(api, folder):
    source = folder if folder.startswith("hf://") else ROOT / folder
    with pytest.raises(ValueError, match="expected a (model|local) bundle folder"):
        space.deploy("alice/pneumo-demo", source)
    assert api.calls == []


def test_the_space_gets_a_short_card_of_its_own(api):
    space.deploy("alice/pneumo-demo", ROOT / "weights")
    card = added(api)["README.md"].decode()
    header, body = card.split("\n---\n", 1)
    assert header.startswith("---\n") and "sdk: gradio" in header and "app_file: app.py" in header
    locked = space.locked_version("gradio")
    assert f"sdk_version: {locked}" in header, "the Space runs the gradio CI tested (requirements.lock)"
    assert f"\ngradio=={locked}\n" in (ROOT / "requirements.lock").read_text()
    assert "not a medical device" in body and len(card.splitlines()) < 40, "a card, not the repository README"
    for link in ("weights/README.md", "docs/safety.md", "docs/usage.md", "docs/training.md"):
        assert f"({link})" in body and link in added(api), f"{link}: linked and shipped"


@pytest.mark.parametrize("status", [401, 403])
def test_http_error_becomes_one_sentence_without_the_token(api, status):
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    api.fail_with = HfHubHTTPError(f"{status} Client Error for token {SECRET}", response=response)
    with pytest.raises(ValueError) as caught:
        space.deploy("alice/pneumo-demo", ROOT / "weights")
    message = str(caught.value)
    assert f"HTTP {status}" in message and "HF_TOKEN" in message and "hf auth login" in message
    assert SECRET not in message and caught.value.__cause__ is None and caught.value.__suppress_context__


def test_no_network_becomes_one_sentence(api):
    from huggingface_hub.errors import OfflineModeIsEnabled

    api.fail_with = OfflineModeIsEnabled(f"offline, token {SECRET}")
    with pytest.raises(ValueError, match="could not reach the Hugging Face Hub.*OfflineModeIsEnabled") as caught:
        space.deploy("alice/pneumo-demo", ROOT / "weights")
    assert SECRET not in str(caught.value)


def test_cli_prints_url_and_first_start_cost(api, capsys):
    from pneumo.ui.cli import main

    assert main(["deploy-space", "alice/pneumo-demo", "--private"]) == 0
    out = capsys.readouterr().out
    assert "https://huggingface.co/spaces/alice/pneumo-demo" in out and "59 MB" in out and "VGG16" in out
    assert api.calls[1][1]["private"] is True and SECRET not in out


def test_cli_bad_repo_id_exits_2_with_one_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # nothing may reach the network anyway
    result = subprocess.run([sys.executable, "-m", "pneumo", "deploy-space", "bad-id"], capture_output=True,
                            text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "USER/REPO" in result.stderr


def test_cli_help_does_not_import_tensorflow():
    code = ("import sys\nfrom pneumo.ui.cli import main\ntry:\n    main(['deploy-space', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TF' if 'tensorflow' in sys.modules else 'no TF')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "deploy-space" in result.stdout and result.stdout.endswith("no TF\n")
