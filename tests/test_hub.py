"""Hub push/download against a recording stand-in for HfApi (no network in tests)."""

from __future__ import annotations

import pytest

from pneumo import hub
from pneumo.model import bundle as bundles


class RecordingApi:
    calls: list = []

    def __init__(self, token=None):
        RecordingApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        RecordingApi.calls.append(("upload_folder", kwargs))


def test_push_creates_repo_and_uploads_the_bundle(tiny_bundle, monkeypatch, capsys):

    RecordingApi.calls = []
    monkeypatch.setattr("pneumo.hub.HfApi", RecordingApi)  # the name hub.py calls
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    url = hub.push(tiny_bundle, "alice/pneumo-test", private=True)
    assert url == "https://huggingface.co/alice/pneumo-test"
    kinds = [c[0] for c in RecordingApi.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert RecordingApi.calls[1][2] == {"repo_type": "model", "private": True, "exist_ok": True}
    assert RecordingApi.calls[2][1]["folder_path"] == str(tiny_bundle)
    assert "hf_secret_value" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["alice", "a/b/c", "", "alice/ repo"])
def test_repo_id_is_checked(bad):
    with pytest.raises(ValueError, match="USER/REPO"):
        hub.check_repo_id(bad)


def test_hf_source_downloads_then_loads(tiny_bundle, monkeypatch):

    seen = {}

    def fake_snapshot(repo_id, revision=None, repo_type=None):
        seen.update(repo_id=repo_id, revision=revision)
        return str(tiny_bundle)

    monkeypatch.setattr("pneumo.hub.snapshot_download", fake_snapshot)
    loaded = bundles.load_bundle(hub.resolve_source("hf://alice/pneumo-test@v1"))
    assert seen == {"repo_id": "alice/pneumo-test", "revision": "v1"} and loaded.path == tiny_bundle


def test_bundle_from_other_preprocessing_is_refused(tiny_bundle, tmp_path):
    import json
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(tiny_bundle, copy)
    config = json.loads((copy / "config.json").read_text())
    config["preprocessing_version"] = "something-else"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained with preprocessing 'something-else'"):
        bundles.load_bundle(copy)
