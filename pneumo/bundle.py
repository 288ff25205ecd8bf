"""Model bundles: a folder with config.json, the head's weights, plots and a model card.

The backbone is not in the bundle (it is Keras' ImageNet VGG16, ~59 MB), so a
bundle is small enough for git and the Hub. A bundle is written into a
temporary sibling folder and swapped in at the end: an interrupted run leaves
either the previous bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .constants import MODEL_ENV, PREPROCESSING_VERSION
from .ood import OOD_FILE, FeatureGaussian
from .population import POPULATION_FILE, PopulationCheck

FORMAT = "pneumo-bundle-1"
CONFIG, HEAD_WEIGHTS = "config.json", "head.weights.h5"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights"


@dataclass
class Bundle:
    path: Path
    config: dict

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    def feature_gaussian(self) -> FeatureGaussian | None:
        """Statistics for the "looks like a chest X-ray?" check (None for bundles made before it)."""
        path = self.path / OOD_FILE
        return FeatureGaussian.load(path) if path.is_file() else None

    def population_check(self) -> PopulationCheck | None:
        """The "is this a child's film?" classifier (None for bundles made before it)."""
        path = self.path / POPULATION_FILE
        return PopulationCheck.load(path) if path.is_file() else None


def write_bundle(output: Path, config: dict, head, predictions: dict, gaussian=None, fine_tuned=None,
                 population=None) -> Path:
    """Write config, head weights, plots, model card (and both checks' statistics); swap in atomically.

    `fine_tuned`: the full model whose block5 was fine-tuned; its block5 weights are stored too.
    """
    from . import card, finetune, plots

    if fine_tuned is not None:
        config = {**config, "block5_weights": finetune.BLOCK5_FILE}

    output = Path(output)
    _check_replaceable(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        head.save_weights(tmp / HEAD_WEIGHTS)
        if fine_tuned is not None:
            finetune.save_block5(fine_tuned, tmp / finetune.BLOCK5_FILE)
        if gaussian is not None:
            gaussian.save(tmp / OOD_FILE)
        if population is not None:
            population.save(tmp / POPULATION_FILE)
        plots.save_roc(predictions, config["metrics"], tmp / "roc.png")
        plots.save_confusion(config["metrics"], tmp / "confusion.png")
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "README.md").write_text(card.model_card(config))
        _swap_in(tmp, output)
    except BaseException:  # Ctrl-C included: remove our partial folder, keep the old bundle
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _check_replaceable(output: Path) -> None:
    """Never delete a folder that is not a bundle (say, `--output ~`)."""
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / CONFIG).is_file())):
        raise ValueError(f"--output '{output}' exists and is not a model bundle (no {CONFIG}); "
                         "choose a new or empty folder, or an existing bundle to replace.")


def _swap_in(tmp: Path, output: Path) -> None:
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    if not output.exists():
        os.replace(tmp, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, old / output.name)
    os.replace(tmp, output)
    shutil.rmtree(old, ignore_errors=True)


def resolve_source(source: str | os.PathLike | None = None) -> Path:
    """Local folder for `source`: a bundle folder, or hf://USER/REPO[@REVISION] (downloaded once)."""
    source = str(source or os.environ.get(MODEL_ENV) or DEFAULT_MODEL)
    if source.startswith("hf://"):
        from .hub import download

        return download(source[len("hf://"):])
    path = Path(source)
    if not (path / CONFIG).is_file():
        raise ValueError(f"'{source}' is not a model bundle: expected a folder with {CONFIG} and "
                         f"{HEAD_WEIGHTS} (train one with `python train.py`), or hf://USER/REPO.")
    return path


def load_bundle(source: str | os.PathLike | None = None) -> Bundle:
    """Read and check a bundle's config; see `resolve_source` for `source`."""
    path = resolve_source(source)
    config = json.loads((path / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"'{path}' has format {config.get('format')!r}; this package reads {FORMAT!r}.")
    if config.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ValueError(f"'{path}' was trained with preprocessing {config.get('preprocessing_version')!r} but "
                         f"this package uses {PREPROCESSING_VERSION!r}; retrain or install the matching version.")
    if not (path / HEAD_WEIGHTS).is_file():
        raise ValueError(f"'{path}' has no {HEAD_WEIGHTS}; the bundle is incomplete.")
    return Bundle(path, config)


def load_models(bundle: Bundle, backbone_weights: str | None = None):
    """(full image model, head model) with the bundle's head weights."""
    from . import model

    if bundle.config.get("backbone_weights") == model.RANDOM:  # test bundles pair only with the test backbone
        setting = model.RANDOM
    else:
        setting = model.backbone_weights_setting(backbone_weights)
    head_config = model.HeadConfig(**bundle.config["recipe"]["head"])
    head = model.build_head_model(head_config, bundle.config.get("feature_dim", 512))
    head.load_weights(bundle.path / HEAD_WEIGHTS)
    full = model.build_full_model(setting, head, bundle.config["input_size"])
    if bundle.config.get("block5_weights"):  # a fine-tuned bundle ships its own block5
        from .finetune import load_block5

        load_block5(full, bundle.path / bundle.config["block5_weights"])
    return full, head
