"""Every training option, declared once: a dataclass field with its help text and its check.

train.py's argparse flags, `TrainConfig.validate()`'s messages, the reproducing `command()` and the
`recipe()` stored in the bundle are all derived from these fields, so an option cannot be half-added.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from ..config import CLASS_NAMES, IMG_SIZE, feature_cache_dir
from ..model.build import HEAD_KINDS, POOLINGS, HeadConfig, backbone_weights_setting
from ..model.pooling import ZONES
from ..preprocess import AugmentConfig
from .metrics import THRESHOLD_RULES

SPLIT_NAMES = ("train", "val", "test", "validation", "kaggle_val")  # reserved: --report cannot use them
HEAD_KEYS = {"units": "units", "dropout": "dropout", "weight_decay": "weight_decay", "head_kind": "kind",
             "pooling": "pooling"}  # TrainConfig field -> HeadConfig field: stored in the recipe as its "head" entry


def option(default=MISSING, *, help: str, check=None, expect: str = "", recipe: bool = True, cli: bool = True,
           default_factory=MISSING, **argparse_kwargs):
    """A TrainConfig field. `check(value) -> bool` with `expect` ("must be ...") makes validate()'s message;
    `recipe`: stored in the bundle (what reproduces the model); `cli`: a train.py flag; the rest goes to argparse."""
    metadata = {"help": help, "check": check, "expect": expect, "recipe": recipe, "cli": cli, "argparse": argparse_kwargs}
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
    output: Path = option(Path("weights"), help="bundle folder to write", recipe=False, type=Path)
    cache_dir: Path = option(default_factory=feature_cache_dir, help="backbone feature cache", recipe=False,
                             type=Path)
    backbone_weights: str | None = option(None, recipe=False, help="VGG16 no-top weights: 'imagenet' or a "
                                          ".weights.h5 file (default: env PNEUMO_BACKBONE_WEIGHTS, else imagenet)")
    val_fraction: float = option(0.15, help="share of train/ patients held out for validation", type=float,
                                 check=lambda v: 0 < v < 0.5, expect="must be in (0, 0.5)")
    balance: bool = option(False, help="fit on every film of the smaller class and as many, drawn at random "
                           "(seeded), of the larger: on Kaggle's data about 40 percent fewer VGG16 passes; the same AUC on "
                           "new patients, less heat on the lungs (docs/experiments.md)", action="store_true")
    seed: int = option(0, help="seeds the patient split, the views' order and the head's initialisation", type=int)
    epochs: int = option(60, help="maximum epochs (the best validation-loss epoch is kept)", type=int,
                         check=lambda v: v >= 1, expect="must be >= 1")
    patience: int = option(10, help="epochs without a better validation loss before stopping", type=int,
                           check=lambda v: v >= 1, expect="must be >= 1")
    batch_size: int = option(64, help="head training batch size", type=int, check=lambda v: v >= 2,
                             expect="must be >= 2")
    learning_rate: float = option(1e-3, help="Adam learning rate of the head", type=float, check=lambda v: v > 0,
                                  expect="must be > 0")
    label_smoothing: float = option(0.0, help="binary cross-entropy label smoothing", type=float,
                                    check=lambda v: 0 <= v < 0.5, expect="must be in [0, 0.5)")
    mixup: float = option(0.0, help="feature mixup strength a of Beta(a, a); 0 = off", type=float,
                          check=lambda v: v >= 0, expect="must be >= 0")
    heads: int = option(1, help="linear heads fitted (seeds seed, seed+1, ...); the bundle's head is their mean "
                        "logit, folded into one BN -> Dense", type=int, check=lambda v: 1 <= v <= 16,
                        expect="must be between 1 and 16")
    views: int = option(0, help="augmented feature views per training image, on top of the plain one", type=int,
                        check=lambda v: 0 <= v <= 16, expect="must be between 0 and 16")
    augment_classes: tuple[str, ...] = option(CLASS_NAMES, help="classes whose images get the augmented views",
                                              check=lambda v: bool(v) and set(v) <= set(CLASS_NAMES),
                                              expect=f"must be among {CLASS_NAMES}", nargs="+", metavar="CLASS")
    balance_views: bool = option(False, help="give views to every fit film of the smaller class and as many, drawn "
                                 "at random (seeded), of the larger: on Kaggle's data about half the view passes, "
                                 "a little lower specificity on new patients (docs/experiments.md)",
                                 action="store_true")
    threshold_rule: str = option("sensitivity95", help="how the decision threshold is chosen on validation "
                                 "(see docs/experiments.md)", choices=THRESHOLD_RULES,
                                 check=lambda v: v in THRESHOLD_RULES, expect=f"must be one of {THRESHOLD_RULES}")
    fine_tune: int = option(0, help="also fine-tune VGG16's block5 for up to EPOCHS epochs on cached block4_pool "
                            "maps (0: frozen backbone; see docs/experiments.md)", type=int, metavar="EPOCHS",
                            check=lambda v: 0 <= v <= 50, expect="must be between 0 and 50 epochs")
    fine_tune_lr: float = option(1e-5, help="Adam learning rate for --fine-tune", type=float,
                                 check=lambda v: v > 0, expect="must be > 0")
    adult_holdout: float = option(0.5, help="share of adult patients held out to measure the population check "
                                  "(0: fit on all)", type=float, check=lambda v: 0 <= v < 1, expect="must be in [0, 1)")
    population_views: int = option(2, help="augmented views per adult film for the population check, so it learns "
                                   "anatomy, not one archive's look", type=int, check=lambda v: 0 <= v <= 8,
                                   expect="must be between 0 and 8")
    units: int = option(256, help="width of the head's Dense layer", type=int, check=lambda v: v >= 1,
                        expect="must be >= 1")
    dropout: float = option(0.5, help="dropout after the head's Dense layer", type=float,
                            check=lambda v: 0 <= v < 1, expect="must be in [0, 1)")
    weight_decay: float = option(0.0, help="L2 on the head's Dense kernels", type=float, check=lambda v: v >= 0,
                                 expect="must be >= 0")
    head_kind: str = option("mlp", help="the head: 'mlp' (BN, Dense+ReLU, Dropout, BN, Dense) or 'linear' (log1p, BN, "
                            "Dense)", flag="--head", choices=HEAD_KINDS, check=lambda v: v in HEAD_KINDS,
                            expect=f"must be one of {HEAD_KINDS}")
    pooling: str = option("gap", help="how block5 is pooled: 'gap' (global average), 'lungs' (average over the "
                          "lung fields only), 'lung-zones' (each lung's upper and lower half of block5_pool averaged "
                          "apart) or 'lung-zones-14' (the same zones over block5_conv3's 14x14 positions); all but "
                          "'gap' need --lung-masks", choices=POOLINGS, check=lambda v: v in POOLINGS,
                          expect=f"must be one of {POOLINGS}")
    report_dirs: dict[str, Path] = option(
        default_factory=dict, recipe=False, help="also measure on DIR (NORMAL/, PNEUMONIA/) as split NAME; never "
        "fitted on (repeatable)", check=lambda v: all(Path(d).is_dir() and n.isidentifier() and n not in SPLIT_NAMES
                                                      for n, d in v.items()),
        expect="needs new split names and existing folders (NAME=DIR)", flag="--report", action="append",
        metavar="NAME=DIR")
    adult_dirs: tuple[Path, ...] = option(
        (), recipe=False, help="adult chest films (any layout, repeatable): trains the 'outside the pediatric "
        "population' check stored in the bundle (e.g. ../shared/data/adult_dev)", flag="--adult-dir",
        action="append", type=Path, metavar="DIR", check=lambda v: all(Path(d).is_dir() for d in v),
        expect="must be existing folders")
    view_stretch: float = option(1.0, help="the views' random stretch of one axis, up to this factor (1 = off): older "
                                 "children's chests have other proportions (docs/experiments.md)", type=float,
                                 check=lambda v: 1 <= v <= 2, expect="must be between 1 and 2")
    lung_masks: Path | None = option(
        None, recipe=False, help="folder with images/ and masks/ (same names): trains the lung-field head stored in "
        "the bundle (e.g. ../shared/data/lung_masks); cached, so changing only the pneumonia head reuses it",
        type=Path, metavar="DIR", check=lambda v: v is None or Path(v).is_dir(), expect="must be an existing folder")
    lung_views: int = option(8, help="augmented views per lung-mask film", type=int, check=lambda v: 1 <= v <= 32,
                             expect="must be between 1 and 32")
    lung_epochs: int = option(25, help="epochs of the lung-field decoder", type=int, check=lambda v: v >= 1,
                              expect="must be >= 1")
    input_size: int = option(IMG_SIZE, help="model input size (smaller only in tests)", cli=False,
                             check=lambda v: 32 <= v <= 512, expect="must be in [32, 512]")
    augment: AugmentConfig = option(default_factory=AugmentConfig, help="augmentation of the views", cli=False)

    @property
    def view_augment(self) -> AugmentConfig:
        """How the classifier's views are drawn (the population check's form views keep `augment` as it is)."""
        return replace(self.augment, stretch_max=self.view_stretch)

    @property
    def head(self) -> HeadConfig:
        return HeadConfig(**{name: getattr(self, key) for key, name in HEAD_KEYS.items()})

    def validate(self) -> None:
        """Every argument checked before any work starts; one message lists every problem."""
        errors = [f"{_flag(f)} {f.metadata['expect']}, got {_shown(getattr(self, f.name))}"
                  for f in fields(self) if f.metadata["check"] and not f.metadata["check"](getattr(self, f.name))]
        if self.heads > 1 and (self.head_kind != "linear" or self.fine_tune):
            errors.append(f"--heads {self.heads} needs --head linear and no --fine-tune, got --head {self.head_kind}"
                          f" and --fine-tune {self.fine_tune}")
        if self.pooling in ZONES and not self.lung_masks:
            errors.append(f"--pooling {self.pooling} needs --lung-masks DIR (the lung-field head), got none")
        if self.pooling in ZONES and self.fine_tune:
            errors.append(f"--pooling {self.pooling} does not combine with --fine-tune, got --fine-tune "
                          f"{self.fine_tune}")
        if self.balance_views and (not self.views or len(self.augment_classes) < len(CLASS_NAMES)):
            errors.append(f"--balance-views needs --views N and views of every class, got --views {self.views} and "
                          f"--augment-classes {' '.join(self.augment_classes)}")
        if self.view_stretch > 1 and not self.views:
            errors.append(f"--view-stretch {self.view_stretch} stretches the views and needs --views N, got --views 0")
        if errors:
            raise ValueError("; ".join(errors) + ".")
        self.backbone_weights = backbone_weights_setting(self.backbone_weights)

    def command(self) -> str:
        """The train.py command line that reproduces this recipe (non-default options; paths as placeholders)."""
        default = TrainConfig(data_dir=self.data_dir)
        flags = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["recipe"] or value == getattr(default, f.name) or not f.metadata["cli"]:
                continue
            if f.name == "fine_tune_lr" and not self.fine_tune:
                continue  # unused without fine-tuning
            if isinstance(value, bool):
                flags.append(_flag(f))  # a switch: on when given
                continue
            flags.append(f"{_flag(f)} {' '.join(value) if isinstance(value, tuple) else value}")
        flags += [f"--report {name}=DIR" for name in self.report_dirs]
        flags += ["--adult-dir ADULTS"] * len(self.adult_dirs)
        flags += ["--lung-masks MASKS"] if self.lung_masks else []
        return " ".join(["python train.py --data-dir DATA", *flags])

    def recipe(self) -> dict:
        """What is needed to reproduce the model (paths excluded), as stored in the bundle's config."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.metadata["recipe"] and f.metadata["cli"] and f.name not in HEAD_KEYS}
        out["augment_classes"] = list(self.augment_classes)
        out.update(head=self.head.to_dict(), augment=self.view_augment.to_dict() if self.views else None)
        return out


def _flag(f) -> str:
    return f.metadata["argparse"].get("flag") or "--" + f.name.replace("_", "-")


def _shown(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return str([str(v) for v in value]) if value and isinstance(value[0], Path) else str(tuple(value))
    return f"'{value}'" if isinstance(value, (str, Path)) else str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per CLI option of TrainConfig, with its default and help."""
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            continue
        kwargs = {k: v for k, v in f.metadata["argparse"].items() if k != "flag"}
        if kwargs.get("action") == "append":
            kwargs["default"] = []
        elif not kwargs.get("required"):
            default = f.default_factory() if f.default is MISSING else f.default
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
            if default is not None:
                kwargs["help"] = f"{f.metadata['help']} (default: {kwargs['default']})"
        kwargs.setdefault("help", f.metadata["help"])
        parser.add_argument(_flag(f), dest=f.name, **kwargs)


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments (converted, not yet validated)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.metadata["cli"]}
    values["augment_classes"] = tuple(values["augment_classes"])
    values["adult_dirs"] = tuple(values["adult_dirs"])
    values["report_dirs"] = _report_dirs(values["report_dirs"])
    return TrainConfig(**values)
