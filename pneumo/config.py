"""What training, evaluation and serving share, defined once: constants and every PNEUMO_* setting."""

from __future__ import annotations

import os
from pathlib import Path

IMG_SIZE = 224  # VGG16's native input; the shared train images are 224x224.
CLASS_NAMES = ("NORMAL", "PNEUMONIA")  # index 1 is the positive class.

# Bump when preprocess.to_model_input() changes: it is part of the feature-cache key and of
# every bundle's config, so stale features or mismatched bundles are detected.
PREPROCESSING_VERSION = "gray-bicubic224-crop10-caffe-v2"

# The outer 10% of every side is cut off after the 224x224 resize: side markers ("R"), text, tubes and
# film edges live there, and the frozen features latch onto them (docs/decisions.md).
CROP_MARGIN = 0.10

# Keras' VGG16 was trained with "caffe" preprocessing: BGR order, ImageNet mean
# subtracted, no scaling. Kept here so preprocessing does not import Keras.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

BACKBONE = "vgg16"
FEATURE_DIM = 512  # VGG16's last block has 512 channels: the head's input after global average pooling
CAM_LAYER = "block5_conv3"
ROOT = Path(__file__).resolve().parent.parent  # the project checkout (app.py, weights/, examples/)
DEFAULT_MODEL = ROOT / "weights"

# --- Settings read from the environment (all of them, here) -------------------------------------------------
BACKBONE_ENV = "PNEUMO_BACKBONE_WEIGHTS"  # a VGG16 no-top .weights.h5 file; default: Keras' ImageNet download
MODEL_ENV = "PNEUMO_MODEL"  # the bundle to serve: a folder or hf://USER/REPO; default: weights/
BACKEND_ENV = "PNEUMO_BACKEND"  # "onnx" or "tf"; default: onnx when onnxruntime is installed
DELETE_AFTER_ENV = "PNEUMO_DELETE_AFTER_S"  # seconds the app keeps uploads and overlays; default 60


def backbone_weights_env() -> str | None:
    return os.environ.get(BACKBONE_ENV) or None


def model_source_env() -> str | None:
    return os.environ.get(MODEL_ENV) or None


def backend_env() -> str | None:
    return os.environ.get(BACKEND_ENV) or None


def delete_after_seconds() -> int:
    value = os.environ.get(DELETE_AFTER_ENV, "60")
    if not value.isdigit():
        raise ValueError(f"{DELETE_AFTER_ENV} must be a whole number of seconds, got '{value}'.")
    return int(value)


def feature_cache_dir() -> Path:
    """Where backbone features are cached: $XDG_CACHE_HOME/pneumo/features (default ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pneumo" / "features"
