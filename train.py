"""Train the pneumonia head on a Kaggle-layout folder and write (or push) a model bundle.

    python train.py --data-dir ../shared/data/chest_xray --output weights
    python train.py --data-dir DATA --push-to-hub alice/pneumo-vgg16

See README.md for the recipe and what each option does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumo.augment import AugmentConfig
from pneumo.evaluation import THRESHOLD_RULES
from pneumo.model import HeadConfig
from pneumo.training import TrainConfig


def parse_args(argv=None) -> argparse.Namespace:
    d, h = TrainConfig, HeadConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="folder with train/ (and optional val/, test/)")
    p.add_argument("--output", type=Path, default=d.output, help="bundle folder to write (default: weights)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: ~/.cache/pneumo/features)")
    p.add_argument("--backbone-weights", default=None,
                   help="VGG16 no-top weights: 'imagenet' or a .weights.h5 file (default: env PNEUMO_BACKBONE_WEIGHTS)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of patients held out")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs (best validation loss is kept)")
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--units", type=int, default=h.units, help="head Dense width")
    p.add_argument("--dropout", type=float, default=h.dropout)
    p.add_argument("--weight-decay", type=float, default=h.weight_decay, help="L2 on the head's Dense kernels")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--mixup", type=float, default=d.mixup, help="feature mixup Beta(a, a); 0 = off")
    p.add_argument("--views", type=int, default=d.views, help="augmented feature views per training image")
    p.add_argument("--augment-classes", nargs="+", default=list(d.augment_classes), metavar="CLASS",
                   help="classes whose images get augmented views (default: both)")
    p.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default=d.threshold_rule)
    p.add_argument("--fine-tune", type=int, default=d.fine_tune, metavar="EPOCHS",
                   help="also fine-tune VGG16's block5 for up to EPOCHS epochs on cached block4_pool maps "
                        "(default 0: frozen backbone; see docs/experiments.md)")
    p.add_argument("--fine-tune-lr", type=float, default=d.fine_tune_lr, help="Adam learning rate for --fine-tune")
    p.add_argument("--report", action="append", default=[], metavar="NAME=DIR",
                   help="also measure on DIR (NORMAL/, PNEUMONIA/) as split NAME; never fitted on")
    p.add_argument("--adult-dir", action="append", default=[], type=Path, metavar="DIR",
                   help="adult chest films (any layout, repeatable): trains the 'outside the pediatric population' "
                        "check stored in the bundle (e.g. ../shared/data/adult_dev)")
    p.add_argument("--adult-holdout", type=float, default=d.adult_holdout,
                   help="share of adult patients held out to measure that check (0: use all)")
    p.add_argument("--population-views", type=int, default=d.population_views,
                   help="augmented views per adult film for that check")
    p.add_argument("--push-to-hub", metavar="USER/REPO", default=None, help="upload the bundle to the Hub")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p.parse_args(argv)


def to_config(args: argparse.Namespace) -> TrainConfig:
    reports = {}
    for item in args.report:
        name, sep, folder = item.partition("=")
        if not sep:
            raise ValueError(f"--report expects NAME=DIR, got '{item}'.")
        reports[name] = Path(folder)
    config = TrainConfig(
        data_dir=args.data_dir, output=args.output, backbone_weights=args.backbone_weights,
        val_fraction=args.val_fraction, seed=args.seed, epochs=args.epochs, patience=args.patience,
        batch_size=args.batch_size, learning_rate=args.learning_rate, label_smoothing=args.label_smoothing,
        mixup=args.mixup, views=args.views, augment_classes=tuple(args.augment_classes),
        threshold_rule=args.threshold_rule, report_dirs=reports, fine_tune=args.fine_tune,
        fine_tune_lr=args.fine_tune_lr, adult_dirs=tuple(args.adult_dir), adult_holdout=args.adult_holdout,
        population_views=args.population_views,
        head=HeadConfig(units=args.units, dropout=args.dropout, weight_decay=args.weight_decay),
        augment=AugmentConfig())
    if args.cache_dir is not None:
        config.cache_dir = args.cache_dir
    return config


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = to_config(args)
        if args.push_to_hub:
            from pneumo.hub import check_repo_id

            check_repo_id(args.push_to_hub)  # fail before ten minutes of work, not after
        config.validate()
        from pneumo import import_tensorflow_quietly
        from pneumo.training import run

        import_tensorflow_quietly()

        out = run(config)
        print(f"bundle written to {out}")
        if args.push_to_hub:
            from pneumo.hub import push

            print(f"pushed to {push(out, args.push_to_hub, private=args.private)}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
