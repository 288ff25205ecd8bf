"""Everything that talks to the Hugging Face Hub: push a bundle, download one, deploy the demo as a Space.

The token comes from `token`, else HF_TOKEN, else the saved `hf auth login` (huggingface_hub resolves it); this
module never reads, prints or logs it.

Why the Space is deployed over HTTP, not `git push`: this repository's history holds the bundle's .h5/.npz as
plain git blobs, and the Hub's pre-receive hook refuses binaries not stored with Xet/LFS. Uploading through the
HTTP API lets the Hub store the binaries itself, and only the files the Space needs are sent, in one commit.
The Space gets a short card of its own (`space_card`), not this repository's README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from .config import DEFAULT_MODEL, ROOT, model_source_env
from .model.bundle import CONFIG, HEAD_WEIGHTS, load_bundle

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or ""):
        raise ValueError(f"expected a Hub repository as USER/REPO (e.g. alice/pneumo-vgg16), got '{repo_id}'.")
    return repo_id


def push(bundle_dir: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the bundle folder to a model repo (created if needed); returns the repo URL."""
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


def resolve_source(source: str | os.PathLike | None = None) -> Path:
    """Local folder for a bundle: `source`, else env PNEUMO_MODEL, else weights/; hf://USER/REPO[@REVISION] is
    downloaded once (cached by huggingface_hub)."""
    source = str(source or model_source_env() or DEFAULT_MODEL)
    return download(source[len("hf://"):]) if source.startswith("hf://") else Path(source)


def download(spec: str) -> Path:
    """Local snapshot of USER/REPO[@REVISION] (cached by huggingface_hub)."""
    repo_id, _, revision = spec.partition("@")
    check_repo_id(repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, repo_type="model"))
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise ValueError(f"could not download model 'hf://{spec}' ({type(err).__name__}); check the name, "
                         "your network, and HF_TOKEN for private repos.") from None


def space_card(repo_id: str) -> str:
    """The Space's README.md: the YAML front matter the Space is configured by, and a few lines with links."""
    return f"""---
title: Pneumonia Chest X-ray Demo
emoji: 🫁
colorFrom: blue
colorTo: red
sdk: gradio
sdk_version: {locked_version("gradio")}
python_version: "3.11"
app_file: app.py
pinned: false
license: cc-by-4.0
short_description: Pediatric pneumonia on chest X-rays, with Grad-CAM
---

# Pneumonia on pediatric chest X-rays

Drop a frontal chest X-ray of a child (JPEG, PNG or DICOM) and get NORMAL / PNEUMONIA, the score against the
operating threshold, and a Grad-CAM heatmap of what drove it. Adult films and images that are not frontal
chest X-rays get **Not assessed** instead of a verdict.

**Research demo, not a medical device.** Trained on children aged 1-5 from one hospital (Kermany et al.
2018); it does not diagnose and must not guide care.

- Model: a frozen ImageNet VGG16 with a small head that reads the lung fields only (`weights/`).
- What it scores and how it was trained: [the model card](weights/README.md), [training](docs/training.md).
- What it refuses and why, measured: [safety and limits](docs/safety.md).
- The `/predict` API and its JSON fields: [usage](docs/usage.md).
- Deployed as `{repo_id}` with `python -m pneumo deploy-space`.
"""


# {path in the Space: file of the checkout}: the Space installs requirements.txt, so it gets the lock, the versions
# CI tested; plus the Space's own README.md (space_card()).
TOP_LEVEL = {"app.py": "app.py", "requirements.txt": "requirements.lock"}
LOCK = "requirements.lock"


def locked_version(package: str, lock: Path | None = None) -> str:
    """The version requirements.lock pins for `package` (what CI tested and the Space installs)."""
    lock = lock or ROOT / LOCK
    match = re.search(rf"^{re.escape(package)}==([^\s;]+)", lock.read_text() if lock.is_file() else "", re.MULTILINE)
    if not match:
        raise ValueError(f"'{lock}' pins no version of {package}; regenerate it (README: \"Updating the lock\").")
    return match.group(1)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm")  # what pneumo/ui/web.py offers as examples
# Stored with LFS in the Space, so a later `git clone` + push of the Space is accepted by the Hub.
LFS_PATTERNS = ("*.h5", "*.keras", "*.npz", "*.npy", "*.onnx", "*.pkl", "*.bin", "*.safetensors",
                "*.png", "*.jpg", "*.jpeg", "*.webp", "*.dcm", "*.zip", "*.gz")
# Remote files under these folders that we no longer ship are deleted; files elsewhere in the Space
# (say, added in its web editor) are left alone. Top-level files we ship are always overwritten.
MANAGED_DIRS = ("pneumo/", "weights/", "examples/", "docs/")
FIRST_START_NOTE = ("On its first start, before it answers, the Space installs requirements.txt and downloads "
                    "Keras' ImageNet VGG16 weights (~59 MB; the bundle holds only the head).")


def gitattributes() -> str:
    return "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)


def space_files(root: Path, bundle_dir: Path) -> dict[str, Path]:
    """{path in the Space: local file}: the app, the package's .py files, the bundle as weights/, examples."""
    files = {}
    for name, local in TOP_LEVEL.items():
        if not (root / local).is_file():
            raise ValueError(f"expected {local} in '{root}' (the project checkout), found none.")
        files[name] = root / local
    files.update(_tree(root / "pneumo", "pneumo", lambda p: p.suffix == ".py"))
    files.update(_tree(bundle_dir, "weights", lambda p: True))
    files.update(_tree(root / "docs", "docs", lambda p: p.suffix in (".md", ".png", ".jpg")))  # the card's links
    examples = root / "examples"
    files.update({f"examples/{p.name}": p for p in sorted(examples.glob("*"))
                  if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.name == "README.md")})
    return files


def _tree(folder: Path, prefix: str, keep) -> dict[str, Path]:
    """Files under `folder` as prefix/relative path; hidden files and caches are never shipped."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and keep(path) and not any(p.startswith(".") or p == "__pycache__" for p in relative.parts):
            found[f"{prefix}/{relative.as_posix()}"] = path
    return found


def _check_bundle(bundle_dir: str | Path) -> Path:
    """A local bundle folder; hf:// is refused here because it would mean a download before deploying."""
    if str(bundle_dir).startswith("hf://"):
        raise ValueError(f"expected a local bundle folder for deploy-space, got '{bundle_dir}'; to serve a Hub "
                         "model, deploy with weights/ and set the Space variable PNEUMO_MODEL=hf://USER/REPO.")
    if not (Path(bundle_dir) / CONFIG).is_file():
        raise ValueError(f"expected a model bundle folder (with {CONFIG} and {HEAD_WEIGHTS}) to ship as "
                         f"weights/, got '{bundle_dir}'.")
    return load_bundle(Path(bundle_dir)).path  # format, preprocessing version, head weights


def deploy(repo_id: str, bundle_dir: str | Path, private: bool = False, token: str | None = None) -> str:
    """Create the Space if needed and upload the app with `bundle_dir` as weights/ in one commit; returns its URL."""
    check_repo_id(repo_id)
    files = space_files(ROOT, _check_bundle(bundle_dir))  # all local checks before any network call
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        stale = [name for name in api.list_repo_files(repo_id, repo_type="space")
                 if name.startswith(MANAGED_DIRS) and name not in files]
        operations = [CommitOperationDelete(path_in_repo=name) for name in stale]
        operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        operations.append(CommitOperationAdd(path_in_repo=".gitattributes", path_or_fileobj=gitattributes().encode()))
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=space_card(repo_id).encode()))
        # create_commit, not upload_folder: with hf_xet installed upload_folder may split into several commits,
        # and a Space restarting between them would run a half-updated app.
        api.create_commit(repo_id, operations, commit_message="Deploy pneumo demo", repo_type="space")
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", "?")
        raise ValueError(f"deploying to Space '{repo_id}' failed (HTTP {status}); check that HF_TOKEN or "
                         "`hf auth login` gives write access to that namespace.") from None
    except (ConnectionError, TimeoutError, HfHubHTTPError.__mro__[1]) as err:  # [1]: the HTTP client's own error
        raise ValueError(f"could not reach the Hugging Face Hub to deploy '{repo_id}' ({type(err).__name__}); "
                         "check your network.") from None
    return str(url)


def run_deploy(args) -> int:
    """CLI entry: default bundle is the shipped weights/ (not PNEUMO_MODEL, which is for serving)."""
    url = deploy(args.repo_id, args.model or ROOT / "weights", private=args.private)
    print(f"Deployed: {url}")
    print(FIRST_START_NOTE)
    return 0
