"""Model bundles: a folder with config.json, the head's weights, the checks' statistics, plots and a model card.

The backbone is not in the bundle (it is Keras' ImageNet VGG16, ~59 MB), so a bundle is small enough for
git and the Hub. A bundle is written into a temporary sibling folder and swapped in at the end: an
interrupted run leaves either the previous bundle or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import MODEL_ENV, PREPROCESSING_VERSION
from . import build
from .int8 import INT8_FILE, PRECISIONS, Int8Ranges
from .lung_decoder import LUNGS_FILE, load_decoder
from .pooling import LUNG_ZONES

# 2: the head is always log1p -> BN -> Dense and the recipe's "head" is {pooling, weight_decay}.
FORMAT = "pneumo-bundle-2"
CONFIG, HEAD_WEIGHTS = "config.json", "head.weights.h5"


@dataclass
class Bundle:
    path: Path
    config: dict

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def threshold_source(self) -> str:
        """"validation", or "calibrated: <folder>, <n> films" for a bundle made by `pneumo calibrate`."""
        block = self.config.get("calibration")
        if not block:
            return "validation"
        return f"calibrated: {block['folder']}, {sum(block['films'].values())} films"

    @property
    def precision(self) -> str:
        """"fp32" or "int8": which trunk the heads were fitted on, so which one serves (bundles before it: fp32)."""
        return self.config.get("precision", "fp32")

    def optional_file(self, name: str) -> Path | None:
        """A file of the bundle that older bundles may lack (the checks' statistics), or None."""
        path = self.path / name
        return path if path.is_file() else None


def write(output: str | os.PathLike, fill) -> Path:
    """Call `fill(folder)` on a new temporary folder, then swap it in as `output` atomically."""
    output = Path(output)
    _check_replaceable(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        fill(tmp)
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


def load_bundle(folder: str | os.PathLike) -> Bundle:
    """Read and check a local bundle's config (`pneumo.hub.resolve_source` turns hf://, the environment and the
    default into a folder)."""
    path = Path(folder)
    if not (path / CONFIG).is_file():
        raise ValueError(f"'{folder}' is not a model bundle: expected a folder with {CONFIG} and {HEAD_WEIGHTS} "
                         f"(train one with `python train.py`), or hf://USER/REPO (from --model or {MODEL_ENV}).")
    config = json.loads((path / CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"'{path}' has format {config.get('format')!r}; this package reads {FORMAT!r}.")
    if config.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ValueError(f"'{path}' was trained with preprocessing {config.get('preprocessing_version')!r} but "
                         f"this package uses {PREPROCESSING_VERSION!r}; retrain or install the matching version.")
    if not (path / HEAD_WEIGHTS).is_file():
        raise ValueError(f"'{path}' has no {HEAD_WEIGHTS}; the bundle is incomplete.")
    return Bundle(path, config)


def load_int8_ranges(bundle: Bundle) -> Int8Ranges | None:
    """The int8 trunk's activation ranges of an int8 bundle, else None."""
    if bundle.precision == "fp32":
        return None
    if bundle.precision != "int8":
        raise ValueError(f"'{bundle.path}' has precision {bundle.precision!r}; this package knows {PRECISIONS}.")
    path = bundle.optional_file(INT8_FILE)
    if path is None:
        raise ValueError(f"'{bundle.path}' is an int8 bundle without {INT8_FILE}; the bundle is incomplete.")
    return Int8Ranges.load(path)


def load_lung_decoder(bundle: Bundle):
    """The bundle's lung-field decoder, or None for bundles without one."""
    path = bundle.optional_file(LUNGS_FILE)
    return load_decoder(path) if path else None


def load_full_model(bundle: Bundle, backbone_weights: str | None = None, decoder=None):
    """The flat image model: VGG16 + the bundle's head. A head that pools over the lung zones is built on
    `decoder` (default: the bundle's own)."""
    if bundle.config.get("backbone_weights") == build.RANDOM:  # test bundles pair only with the test backbone
        setting = build.RANDOM
    else:
        setting = build.backbone_weights_setting(backbone_weights)
    config = build.HeadConfig(**bundle.config["recipe"]["head"])
    head = build.build_head_model(config)
    head.load_weights(bundle.path / HEAD_WEIGHTS)
    if config.pooling != LUNG_ZONES:
        decoder = None  # a gap model's verdict reads no lung map, even where the bundle has a lung head
    else:
        decoder = decoder if decoder is not None else load_lung_decoder(bundle)
        if decoder is None:
            raise ValueError(f"'{bundle.path}' pools over the lung zones but has no {LUNGS_FILE}; the bundle is "
                             "incomplete.")
    return build.build_full_model(setting, head, bundle.config["input_size"], decoder)
