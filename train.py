"""Train the pneumonia model on a Kaggle-layout folder and write (or push) a model bundle.

The shipped model (weights/), its lung-field head and its adult-film check:
    python train.py --data-dir DATA --adult-dir ADULTS --lung-masks MASKS --output bundle
The design's plain form (frozen VGG16, global average pooling, BatchNorm head), a baseline:
    python train.py --data-dir DATA --pooling gap --output baseline
Refit only the two checks of a bundle (heads, lung head and threshold kept):
    python train.py --refit-checks weights --data-dir DATA --adult-dir ADULTS --lung-masks MASKS --output bundle
Publish:  python train.py ... --output bundle --push-to-hub alice/pneumo-vgg16

Every training option is declared once, in pneumo/train/options.py; the recipe: docs/training.md.
"""

from __future__ import annotations

import argparse
import sys

from pneumo.train.options import add_arguments, from_arguments


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = from_arguments(args)
        config.validate()  # every argument (the Hub repository's name too), before ten minutes of work
        from pneumo import import_tensorflow_quietly

        import_tensorflow_quietly()
        if config.refit_checks:
            from pneumo.train.refit import refit_checks

            out = refit_checks(config)
        else:
            from pneumo.train.loop import run

            out = run(config)
        print(f"bundle written to {out}")
        if config.push_to_hub:
            from pneumo.hub import push

            print(f"pushed to {push(out, config.push_to_hub, private=config.private)}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
