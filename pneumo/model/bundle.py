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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from .. import __version__
from ..config import BACKBONE, CLASS_NAMES, MODEL_ENV, PREPROCESSING_VERSION
from . import build
from .int8 import FP32, INT8_FILE, PRECISIONS, Int8Ranges
from .lung_decoder import LUNGS_FILE, load_decoder
from .pooling import LUNG_ZONES

# 2: the head is always log1p -> BN -> Dense and the recipe's "head" is {pooling, weight_decay}.
FORMAT = "pneumo-bundle-2"
CONFIG, HEAD_WEIGHTS = "config.json", "head.weights.h5"


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """The block `pneumo calibrate` writes: the site's films, the rule, the threshold set on them and what to expect
    on its new patients (pneumo.ui.calibrate)."""

    folder: str  # the calibration folder's name
    films: dict[str, int]  # per class
    patients: dict[str, int]  # per class
    rule: str
    rule_text: str
    target_sensitivity: float
    resamples: int
    seed: int
    factory_threshold: float  # the validation threshold training chose: figures at it stay comparable
    factory_threshold_rule: str
    threshold: float
    resampled_thresholds: dict[str, float]  # p5, median, p95
    in_sample: dict
    factory_in_sample: dict
    split_estimate: dict
    site_checks: dict | None = None  # calibrated before the checks learned the site: absent
    extra: dict = field(default_factory=dict)  # keys this package does not model, written back as read
    key_order: tuple[str, ...] = ()  # as read, so a copy writes its keys where the source had them

    @property
    def film_count(self) -> int:
        return sum(self.films.values())

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True, kw_only=True)
class BundleConfig:
    """What config.json holds, checked once by `load_bundle`; the field order is the order training writes."""

    format: str
    package_version: str
    backbone: str
    backbone_weights: str  # "imagenet", or build.RANDOM for test bundles
    backbone_fingerprint: str
    precision: str | None = None  # the trunk the heads were fitted on; absent from bundles made before int8
    input_size: int
    class_names: list[str]
    preprocessing_version: str
    threshold: float
    threshold_rule: str
    recipe: dict  # TrainConfig.recipe(); recipe["head"] is build.HeadConfig's fields
    command: str
    data_counts: dict  # split: {class: films}
    metrics: dict  # split: metrics.binary_metrics at the validation threshold
    training_seconds: float
    created: str
    borderline: list[float]  # [low, high] around the threshold
    borderline_validation: dict | None = None  # the band's films on validation (dropped by calibration)
    skipped_files: list[dict]
    int8: dict | None = None  # the int8 trunk's ranges file and how they were measured
    chest_check: dict | None = None  # the chest X-ray check's measurements (bundles before it: "ood")
    population: dict | None = None  # the population check's, with --adult-dir
    lungs: dict | None = None  # the lung head's, with --lung-masks
    backbone_passes_this_run: int
    borderline_site: dict | None = None  # the band's films on the calibration site
    calibration: Calibration | None = None
    checks_refit: dict | None = None  # `train.py --refit-checks`: when and how
    extra: dict = field(default_factory=dict)  # keys this package does not model, written back as read
    key_order: tuple[str, ...] = ()  # as read, so a copy writes its keys where the source had them

    @property
    def trunk_precision(self) -> str:
        return self.precision or FP32

    @property
    def head(self) -> dict:
        """The recipe's head: {pooling, weight_decay}, build.HeadConfig's fields."""
        return self.recipe["head"]

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> BundleConfig:
        """Parse and check a config.json's content; ValueError naming `where` for anything missing or wrong."""
        found = _parse(cls, raw, where)
        if found.calibration is not None:
            found = replace(found, calibration=_parse(Calibration, found.calibration, f"{where}'s calibration"))
        _check(found, where)
        return found

    def to_dict(self) -> dict:
        return _to_dict(self)


def _parse(cls, raw, where: str):
    """`cls` from a dict: its fields by name, any other key kept in `extra`, the key order kept."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is not a JSON object; the bundle is damaged.")
    names = {f.name for f in fields(cls)} - _BOOKKEEPING
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - raw.keys())
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; the bundle is incomplete.")
    return cls(**{k: v for k, v in raw.items() if k in names},
               extra={k: v for k, v in raw.items() if k not in names}, key_order=tuple(raw))


def _check(config: BundleConfig, where: str) -> None:
    if config.trunk_precision not in PRECISIONS:
        raise ValueError(f"{where} has precision {config.precision!r}; this package knows {PRECISIONS}.")
    if not isinstance(config.threshold, (int, float)) or not 0 <= config.threshold <= 1:
        raise ValueError(f"{where} has threshold {config.threshold!r}; expected a probability between 0 and 1.")
    band = config.borderline
    if not isinstance(band, (list, tuple)) or len(band) != 2 or not band[0] <= band[1]:
        raise ValueError(f"{where} has borderline {band!r}; expected [low, high] with low <= high.")
    if not isinstance(config.recipe, dict) or not isinstance(config.recipe.get("head"), dict):
        raise ValueError(f"{where} has no recipe.head (the head's pooling and weight decay); the bundle is damaged.")


def _to_dict(block) -> dict:
    """The JSON object of a config block: present fields and `extra`, keys as read first, new ones after."""
    values = {f.name: getattr(block, f.name) for f in fields(block) if f.name not in _BOOKKEEPING}
    values = {k: v.to_dict() if isinstance(v, Calibration) else v for k, v in values.items() if v is not None}
    values.update(block.extra)
    order = [k for k in block.key_order if k in values] + [k for k in values if k not in block.key_order]
    return {k: values[k] for k in order}


_BOOKKEEPING = {"extra", "key_order"}


@dataclass
class Bundle:
    path: Path
    config: BundleConfig

    @property
    def threshold(self) -> float:
        return float(self.config.threshold)

    @property
    def threshold_source(self) -> str:
        """"validation", or "calibrated: <folder>, <n> films" for a bundle made by `pneumo calibrate`."""
        block = self.config.calibration
        if block is None:
            return "validation"
        return f"calibrated: {block.folder}, {block.film_count} films"

    @property
    def precision(self) -> str:
        """"fp32" or "int8": which trunk the heads were fitted on, so which one serves."""
        return self.config.trunk_precision

    def optional_file(self, name: str) -> Path | None:
        """A file only some bundles have, or None: population.npz (trained with --adult-dir), lungs.npz (with
        --lung-masks), int8.npz (int8 bundles)."""
        path = self.path / name
        return path if path.is_file() else None


def identity(backbone: str, precision: str, input_size: int) -> dict:
    """The config fields that say what a bundle is and what it pairs with (what `load_bundle` and the predictor
    check): format, package, backbone and trunk, input, classes, preprocessing."""
    return {"format": FORMAT, "package_version": __version__, "backbone": BACKBONE,
            # What a user needs: a local weights file is only a copy of Keras' ImageNet weights.
            "backbone_weights": build.RANDOM if backbone == build.RANDOM else "imagenet",
            "backbone_fingerprint": build.backbone_fingerprint(backbone),
            "precision": precision, "input_size": input_size, "class_names": list(CLASS_NAMES),
            "preprocessing_version": PREPROCESSING_VERSION}


def save_config(folder: Path, config: BundleConfig) -> None:
    """config.json, the one way it is written (card.save writes it with its model card)."""
    (folder / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


@contextmanager
def writing(output: str | os.PathLike) -> Iterator[Path]:
    """`with writing(output) as folder:` a new temporary folder to write a bundle into, swapped in as `output`
    atomically when the block ends; if the block raises, it is removed and the old bundle stays."""
    output = Path(output)
    _check_replaceable(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield tmp
        _swap_in(tmp, output)
    except BaseException:  # Ctrl-C included: remove our partial folder, keep the old bundle
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    raw = json.loads((path / CONFIG).read_text())
    found = raw.get("format") if isinstance(raw, dict) else None
    if found != FORMAT:
        raise ValueError(f"'{path}' has format {found!r}; this package reads {FORMAT!r}.")
    if raw.get("preprocessing_version") != PREPROCESSING_VERSION:
        raise ValueError(f"'{path}' was trained with preprocessing {raw.get('preprocessing_version')!r} but "
                         f"this package uses {PREPROCESSING_VERSION!r}; retrain or install the matching version.")
    if not (path / HEAD_WEIGHTS).is_file():
        raise ValueError(f"'{path}' has no {HEAD_WEIGHTS}; the bundle is incomplete.")
    return Bundle(path, BundleConfig.from_dict(raw, f"'{path / CONFIG}'"))


def load_int8_ranges(bundle: Bundle) -> Int8Ranges | None:
    """The int8 trunk's activation ranges of an int8 bundle, else None."""
    if bundle.precision == FP32:
        return None
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
    if bundle.config.backbone_weights == build.RANDOM:  # test bundles pair only with the test backbone
        setting = build.RANDOM
    else:
        setting = build.backbone_weights_setting(backbone_weights)
    config = build.HeadConfig(**bundle.config.head)
    head = build.build_head_model(config)
    head.load_weights(bundle.path / HEAD_WEIGHTS)
    if config.pooling != LUNG_ZONES:
        decoder = None  # a gap model's verdict reads no lung map, even where the bundle has a lung head
    else:
        decoder = decoder if decoder is not None else load_lung_decoder(bundle)
        if decoder is None:
            raise ValueError(f"'{bundle.path}' pools over the lung zones but has no {LUNGS_FILE}; the bundle is "
                             "incomplete.")
    return build.build_full_model(setting, head, bundle.config.input_size, decoder)
