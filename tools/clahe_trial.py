"""Does contrast equalisation (CLAHE) before VGG16 help the verdict on new children? train.py, run as given, with every
model view (plain, augmented, the lung head's, the population check's) equalised by OpenCV's CLAHE just before VGG16's
normalisation; nothing else changes.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.clahe_trial \
        [--clip 2.0] [--tiles 8] -- <train.py arguments, with --cache-dir and --output of their own>

Why: on the official test split, CLAHE moved pooled-feature heads' specificity up by a few points (shared/notes/
measured-levers.md), and the shipped model's false positives include washed-out normal films. The cache key does
not know about the equalisation, so give the run an empty --cache-dir of its own (a cold run, ~21 minutes here).
To keep the lung head of another run instead, copy that run's lungs-*.npz into the new cache first: its decoder
then reads equalised views it was not trained on. Results: docs/experiments.md, "Contrast equalisation".
"""

from __future__ import annotations

import argparse
import sys

import cv2


def equalising(normalize, clip: float, tiles: int):
    """`pneumo.preprocess.normalize` with CLAHE applied to the (size, size) uint8 view first."""
    clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles, tiles))
    return lambda view: normalize(clahe.apply(view))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=float, default=2.0, help="CLAHE clip limit (default: 2.0)")
    parser.add_argument("--tiles", type=int, default=8, help="CLAHE tiles per side (default: 8)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's arguments")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if "--cache-dir" not in train_args or "--output" not in train_args:
        parser.error("give train.py a --cache-dir and an --output of their own: cached features and bundles made "
                     f"without equalisation must not be mixed with these; got: {' '.join(train_args) or 'none'}")

    import pneumo.preprocess
    import pneumo.train.lungs
    import train

    patched = equalising(pneumo.preprocess.normalize, args.clip, args.tiles)
    pneumo.preprocess.normalize = patched  # to_model_input and the augmented views call it through the module
    pneumo.train.lungs.normalize = patched  # the lung head's views (imported by name there)
    return train.main(train_args)


if __name__ == "__main__":
    sys.exit(main())
