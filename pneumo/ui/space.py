"""Deploy the demo to a Hugging Face Space over HTTP (`python -m pneumo deploy-space USER/NAME`).

Why not `git push`: this repository's history holds the bundle's .h5/.npz as plain git blobs, and the
Hub's pre-receive hook refuses binaries not stored with Xet/LFS. Uploading through the HTTP API lets
the Hub store the binaries itself, and only the files the Space needs are sent, in one commit.
The token comes from HF_TOKEN or `hf auth login` (huggingface_hub resolves it); it is never printed.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ROOT
from ..model.hub import check_repo_id

TOP_LEVEL = ("app.py", "requirements.txt", "README.md")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm")  # what pneumo/ui/web.py offers as examples
# Stored with LFS in the Space, so a later `git clone` + push of the Space is accepted by the Hub.
LFS_PATTERNS = ("*.h5", "*.keras", "*.npz", "*.npy", "*.onnx", "*.pkl", "*.bin", "*.safetensors",
                "*.png", "*.jpg", "*.jpeg", "*.webp", "*.dcm", "*.zip", "*.gz")
# Remote files under these folders that we no longer ship are deleted; files elsewhere in the Space
# (say, added in its web editor) are left alone. Top-level files we ship are always overwritten.
MANAGED_DIRS = ("pneumo/", "weights/", "examples/")
FIRST_START_NOTE = ("On its first start, before it answers, the Space installs requirements.txt and downloads "
                    "Keras' ImageNet VGG16 weights (~59 MB; the bundle holds only the head).")


def gitattributes() -> str:
    return "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)


def space_files(root: Path, bundle_dir: Path) -> dict[str, Path]:
    """{path in the Space: local file}: the app, the package's .py files, the bundle as weights/, examples."""
    files = {}
    for name in TOP_LEVEL:
        if not (root / name).is_file():
            raise ValueError(f"expected {name} in '{root}' (the project checkout), found none.")
        files[name] = root / name
    _check_front_matter(root / "README.md")
    files.update(_tree(root / "pneumo", "pneumo", lambda p: p.suffix == ".py"))
    files.update(_tree(bundle_dir, "weights", lambda p: True))
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


def _check_front_matter(readme: Path) -> None:
    """The Space reads its SDK and app file from README.md's YAML header; without it the Space breaks."""
    text = readme.read_text(encoding="utf-8")
    header = text.split("\n---", 1)[0] if text.startswith("---\n") else ""
    if "sdk: gradio" not in header:
        raise ValueError(f"expected '{readme}' to start with the Space's YAML front matter "
                         "(---, sdk: gradio, ..., ---); found none.")


def _check_bundle(bundle_dir: str | Path) -> Path:
    """A local bundle folder; hf:// is refused here because it would mean a download before deploying."""
    from ..model.bundle import CONFIG, HEAD_WEIGHTS, load_bundle

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
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        stale = [name for name in api.list_repo_files(repo_id, repo_type="space")
                 if name.startswith(MANAGED_DIRS) and name not in files]
        operations = [CommitOperationDelete(path_in_repo=name) for name in stale]
        operations += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        operations.append(CommitOperationAdd(path_in_repo=".gitattributes", path_or_fileobj=gitattributes().encode()))
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
