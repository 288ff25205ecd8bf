"""Every training option, declared once: a dataclass field with its help text and its check.

train.py's argparse flags, `TrainConfig.validate()`'s messages, the reproducing `command()` and the
`recipe()` stored in the bundle are all derived from these fields, so an option cannot be half-added.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ..config import IMG_SIZE, feature_cache_dir
from ..hub import REPO_ID
from ..model.build import HeadConfig, backbone_weights_setting
from ..model.int8 import PRECISIONS
from ..model.pooling import GAP, LUNG_ZONES, POOLINGS
from ..preprocess import AugmentConfig
from ..stats.metrics import THRESHOLD_RULES

SPLIT_NAMES = ("train", "val", "test", "validation", "kaggle_val")  # reserved: --report cannot use them
HEAD_KEYS = ("pooling", "weight_decay")  # stored in the recipe as its "head" entry (HeadConfig)


def option(default=MISSING, *, help: str, check=None, expect: str = "", recipe: bool = True, cli: bool = True,
           default_factory=MISSING, **argparse_kwargs):
    """A TrainConfig field. `check(value) -> bool` with `expect` ("must be ...") makes validate()'s message;
    `recipe`: stored in the bundle (what reproduces the model); `cli`: a train.py flag; the rest goes to argparse."""
    metadata = {"help": help, "check": check, "expect": expect, "recipe": recipe, "cli": cli,
                "argparse": argparse_kwargs}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _report_dirs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep:
            raise ValueError(f"--report expects NAME=DIR, got '{item}'.")
        out[name] = Path(folder)
    return out


@dataclass
class TrainConfig:
    data_dir: Path = option(help="folder with train/ (and optional val/, test/)", recipe=False,
                            check=lambda v: Path(v).is_dir(), expect="must be an existing folder", type=Path,
                            required=True)
    output: Path | None = option(None, help="bundle folder to write (replacing weights/ is always asked for by name)",
                                 recipe=False, type=Path, check=lambda v: v is not None,
                                 expect="must name the bundle folder to write (e.g. --output bundle)", required=True)
    adult_dirs: tuple[Path, ...] = option(
        (), recipe=False, help="adult chest films (any layout, repeatable; a metadata.csv with ages keeps patients "
        "under 18 off the adult side): trains the population check, and with chest films of every age the chest X-ray "
        "check (e.g. ../shared/data/adult_dev)", flag="--adult-dir",
        action="append", type=Path, metavar="DIR", check=lambda v: all(Path(d).is_dir() for d in v),
        expect="must be existing folders")
    lung_masks: Path | None = option(
        None, recipe=False, help="folder with images/ and masks/ (same names): trains the lung-field head the "
        "verdict pools over, cached; its images join the chest X-ray check (e.g. ../shared/data/lung_masks)",
        type=Path, metavar="DIR", check=lambda v: v is None or Path(v).is_dir(), expect="must be an existing folder")
    not_chest_dirs: tuple[Path, ...] = option(
        (), recipe=False, help="radiographs of other body parts (any layout, repeatable): only measured, how many the "
        "chest X-ray check's score catches (e.g. ../shared/data/not_chest_dev)", flag="--not-chest", action="append",
        type=Path, metavar="DIR", check=lambda v: all(Path(d).is_dir() for d in v), expect="must be existing folders")
    refit_checks: Path | None = option(
        None, recipe=False, help="refit only the two checks of the bundle BUNDLE (with this run's data folders) and "
        "write it to --output; its heads, lung-field head, threshold and calibration stay as they are", type=Path,
        metavar="BUNDLE", check=lambda v: v is None or (Path(v) / "config.json").is_file(),
        expect="must be a model bundle folder (with config.json)")
    push_to_hub: str | None = option(None, recipe=False, help="upload the bundle to the Hub", metavar="USER/REPO",
                                     check=lambda v: v is None or bool(REPO_ID.match(v)),
                                     expect="must be a Hub repository USER/REPO (e.g. alice/pneumo-vgg16)")
    private: bool = option(False, recipe=False, help="create the Hub repo as private", action="store_true")
    report_dirs: dict[str, Path] = option(
        default_factory=dict, recipe=False, help="also measure on DIR (NORMAL/, PNEUMONIA/) as split NAME; never "
        "fitted on (repeatable)", check=lambda v: all(Path(d).is_dir() and n.isidentifier() and n not in SPLIT_NAMES
                                                      for n, d in v.items()),
        expect="needs new split names and existing folders (NAME=DIR)", flag="--report", action="append",
        metavar="NAME=DIR")
    pooling: str = option(LUNG_ZONES, help="'lung-zones' (block5_conv3 averaged over each lung's upper and lower "
                          "half: the shipped model) or 'gap' (global average: the design's plain form, a baseline)",
                          choices=POOLINGS, check=lambda v: v in POOLINGS, expect=f"must be one of {POOLINGS}")
    precision: str = option("int8", help="the trunk the heads are fitted on and that serves: 'int8' (quantized, "
                            "calibrated on fit films: ~2x faster on CPUs with VNNI, the shipped model) or 'fp32' (the "
                            "TensorFlow reference)", choices=PRECISIONS,
                            check=lambda v: v in PRECISIONS, expect=f"must be one of {PRECISIONS}")
    cache_dir: Path = option(default_factory=feature_cache_dir, help="backbone feature cache", recipe=False,
                             type=Path)
    backbone_weights: str | None = option(None, recipe=False, help="VGG16 no-top weights: 'imagenet' or a "
                                          ".weights.h5 file (default: env PNEUMO_BACKBONE_WEIGHTS, else imagenet)")
    val_fraction: float = option(0.15, help="share of train/ patients held out for validation", type=float,
                                 check=lambda v: 0 < v < 0.5, expect="must be in (0, 0.5)")
    seed: int = option(0, help="seeds the patient split, the views' order and the heads' initialisation", type=int)
    epochs: int = option(60, help="maximum epochs (the best validation-loss epoch is kept)", type=int,
                         check=lambda v: v >= 1, expect="must be >= 1")
    patience: int = option(10, help="epochs without a better validation loss before stopping", type=int,
                           check=lambda v: v >= 1, expect="must be >= 1")
    batch_size: int = option(64, help="head training batch size", type=int, check=lambda v: v >= 2,
                             expect="must be >= 2")
    learning_rate: float = option(1e-3, help="Adam learning rate of the head", type=float, check=lambda v: v > 0,
                                  expect="must be > 0")
    weight_decay: float = option(0.01, help="L2 on the head's Dense kernel", type=float, check=lambda v: v >= 0,
                                 expect="must be >= 0")
    heads: int = option(5, help="heads fitted (seeds seed, seed+1, ...); the bundle's head is their mean logit, "
                        "folded into one log1p -> BN -> Dense", type=int, check=lambda v: 1 <= v <= 16,
                        expect="must be between 1 and 16")
    views: int = option(1, help="augmented views (zoom, rotation, shift, contrast) per fit image, on top of the "
                        "plain one", type=int, check=lambda v: 0 <= v <= 16, expect="must be between 0 and 16")
    threshold_rule: str = option("sensitivity95", help="how the decision threshold is chosen on validation "
                                 "(docs/training.md)", choices=THRESHOLD_RULES,
                                 check=lambda v: v in THRESHOLD_RULES, expect=f"must be one of {THRESHOLD_RULES}")
    adult_holdout: float = option(0.5, help="share of adult patients held out to measure the population check "
                                  "(0: fit on all)", type=float, check=lambda v: 0 <= v < 1, expect="must be in [0, 1)")
    population_views: int = option(2, help="augmented views per adult film for the population check, so it learns "
                                   "anatomy, not one archive's look", type=int, check=lambda v: 0 <= v <= 8,
                                   expect="must be between 0 and 8")
    lung_views: int = option(8, help="augmented views per lung-mask film", type=int, check=lambda v: 1 <= v <= 32,
                             expect="must be between 1 and 32")
    lung_epochs: int = option(25, help="epochs of the lung-field decoder", type=int, check=lambda v: v >= 1,
                              expect="must be >= 1")
    input_size: int = option(IMG_SIZE, help="model input size (smaller only in tests)", cli=False,
                             check=lambda v: 32 <= v <= 512, expect="must be in [32, 512]")
    augment: AugmentConfig = option(default_factory=AugmentConfig, help="augmentation of the views", cli=False)

    @property
    def head(self) -> HeadConfig:
        return HeadConfig(**{key: getattr(self, key) for key in HEAD_KEYS})

    def validate(self) -> None:
        """Every argument checked before any work starts; one message lists every problem."""
        errors = [f"{_flag(f)} {f.metadata['expect']}, got {_shown(getattr(self, f.name))}"
                  for f in fields(self) if f.metadata["check"] and not f.metadata["check"](getattr(self, f.name))]
        missing = [flag for flag, given in (("--lung-masks DIR", self.lung_masks), ("--adult-dir DIR", self.adult_dirs))
                   if not given]
        if self.pooling != GAP and missing:  # a bundle without its checks is not the shipped model
            errors.append(f"the shipped recipe needs {' and '.join(missing)} (the lung-field head the verdict pools "
                          f"over, the check that flags adult films); for the plain design without them, --pooling gap")
        try:
            backbone_weights_setting(self.backbone_weights)
        except ValueError as err:
            errors.append(str(err).rstrip("."))
        if errors:
            raise ValueError("; ".join(errors) + ".")

    @property
    def backbone(self) -> str:
        """The VGG16 weights this run uses: --backbone-weights, else env PNEUMO_BACKBONE_WEIGHTS, else imagenet."""
        return backbone_weights_setting(self.backbone_weights)

    def command(self) -> str:
        """The train.py command line that reproduces this run (non-default recipe options; paths as placeholders);
        with --refit-checks, the refit's (the recipe is the bundle's)."""
        sources = ["--adult-dir ADULTS"] * len(self.adult_dirs) + ["--not-chest OTHERS"] * len(self.not_chest_dirs)
        sources += ["--lung-masks MASKS"] if self.lung_masks else []
        if self.refit_checks:
            return " ".join(["python train.py --refit-checks BUNDLE --data-dir DATA", *sources, "--output OUT"])
        default = TrainConfig(data_dir=self.data_dir)
        flags = [f"{_flag(f)} {getattr(self, f.name)}" for f in fields(self)
                 if f.metadata["recipe"] and f.metadata["cli"] and getattr(self, f.name) != getattr(default, f.name)]
        flags += sources + [f"--report {name}=DIR" for name in self.report_dirs]
        return " ".join(["python train.py --data-dir DATA", *flags, "--output OUT"])

    def recipe(self) -> dict:
        """What is needed to reproduce the model (paths excluded), as stored in the bundle's config."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.metadata["recipe"] and f.metadata["cli"] and f.name not in HEAD_KEYS}
        out.update(head=self.head.to_dict(), augment=self.augment.to_dict() if self.views else None)
        return out


def _flag(f) -> str:
    return f.metadata["argparse"].get("flag") or "--" + f.name.replace("_", "-")


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return str([str(v) for v in value]) if value and isinstance(value[0], Path) else str(tuple(value))
    return f"'{value}'" if isinstance(value, (str, Path)) else str(value)


RECIPE_NEEDS = ("adult_dirs", "lung_masks")  # required unless --pooling gap (validate() says so)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per CLI option of TrainConfig, with its default and help; `--help` lists the required ones first."""
    groups = {"required": parser.add_argument_group("required"),
              "recipe": parser.add_argument_group("required by the shipped recipe (all but --pooling gap)"),
              "other": parser}
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            continue
        group = groups["required" if f.metadata["argparse"].get("required") else
                       "recipe" if f.name in RECIPE_NEEDS else "other"]
        kwargs = {k: v for k, v in f.metadata["argparse"].items() if k != "flag"}
        if kwargs.get("action") == "append":
            kwargs["default"] = []
        elif not kwargs.get("required"):
            default = f.default_factory() if f.default is MISSING else f.default
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
            if default is not None and kwargs.get("action") != "store_true":
                kwargs["help"] = f"{f.metadata['help']} (default: {kwargs['default']})"
        kwargs.setdefault("help", f.metadata["help"])
        group.add_argument(_flag(f), dest=f.name, **kwargs)


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments (converted, not yet validated)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.metadata["cli"]}
    values["adult_dirs"] = tuple(values["adult_dirs"])
    values["not_chest_dirs"] = tuple(values["not_chest_dirs"])
    values["report_dirs"] = _report_dirs(values["report_dirs"])
    return TrainConfig(**values)
