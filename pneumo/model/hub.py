"""Hugging Face Hub: push a bundle, download one. The token is never printed or logged."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or ""):
        raise ValueError(f"expected a Hub repository as USER/REPO (e.g. alice/pneumo-vgg16), got '{repo_id}'.")
    return repo_id


def push(bundle_dir: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the bundle folder to a model repo (created if needed); returns the repo URL.

    The token comes from `token`, else HF_TOKEN, else the saved `hf auth login`
    (huggingface_hub resolves it); we never touch or print it ourselves.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(bundle_dir), repo_id=repo_id, repo_type="model",
                          commit_message="Upload pneumo bundle")
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", "?")
        raise ValueError(f"pushing to '{repo_id}' failed (HTTP {status}); check that HF_TOKEN or "
                         "`hf auth login` gives write access to that namespace.") from None
    return str(url)


def download(spec: str) -> Path:
    """Local snapshot of USER/REPO[@REVISION] (cached by huggingface_hub)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = spec.partition("@")
    check_repo_id(repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, repo_type="model"))
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise ValueError(f"could not download model 'hf://{spec}' ({type(err).__name__}); check the name, "
                         "your network, and HF_TOKEN for private repos.") from None
