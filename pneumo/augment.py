"""Image-level augmentation for cached feature views.

Each augmented view is a deterministic function of (image content, view index),
so a cached view never changes from run to run and the backbone runs a bounded
number of times (once per image per view).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 10.0
    # Magnification only (crop, no black borders). Train NORMAL images show neck and shoulders while
    # PNEUMONIA ones are framed tightly on the chest, so framing is a shortcut; tight crops of normal
    # chests take it away (see docs/experiments.md).
    zoom_min: float = 1.0
    zoom_max: float = 1.45
    shift: float = 0.08  # fraction of the side
    contrast: float = 0.25
    brightness: float = 0.15  # fraction of the 0..255 range
    noise_std: float = 0.0  # gray levels

    def to_dict(self) -> dict:
        return asdict(self)


def view_rng(content_hash: str, view: int) -> np.random.Generator:
    """A generator seeded by the image's content hash and the view index."""
    return np.random.default_rng([int(content_hash[:15], 16), view])


def augment(gray: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Random rotation/zoom/shift, then contrast/brightness/noise, of an (H, W) uint8 image."""
    height, width = gray.shape
    angle = rng.uniform(-config.rotation_deg, config.rotation_deg)
    scale = rng.uniform(config.zoom_min, config.zoom_max)
    dx, dy = rng.uniform(-config.shift, config.shift, size=2) * (width, height)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    # Black borders where rotation/shift uncover them: radiograph surroundings are dark.
    moved = cv2.warpAffine(gray, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = moved.astype(np.float32)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    out = (out - out.mean()) * contrast + out.mean() + rng.uniform(-1, 1) * config.brightness * 255
    if config.noise_std:
        out += rng.normal(0, config.noise_std, out.shape)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return change_form(out, rng, config) if isinstance(config, FormConfig) else out


@dataclass(frozen=True)
class FormConfig(AugmentConfig):
    """Views for the population check: AugmentConfig plus a random "form" of the film.

    The pediatric training films are 224 px JPEGs (quality 75: sharp, blocky), adult films arrive large and
    smooth; a check trained on them as they are learns that texture instead of anatomy, and flags full-size
    pediatric originals (measured: up to half of val/). Randomising sharpness and compression on both sides
    leaves anatomy as the only difference. (A subclass, so the cache keys of AugmentConfig views stay as they are.)
    """

    blur_max: float = 1.2  # Gaussian sigma, px of the model view: a full-size film downscaled is this smooth
    sharpen_max: float = 1.0  # unsharp-mask amount: a sharp resize or an edge-enhanced export
    jpeg_min: int = 60  # lowest JPEG quality tried


def change_form(gray: np.ndarray, rng: np.random.Generator, config: FormConfig) -> np.ndarray:
    """Blur or sharpen (or neither), then maybe re-encode as JPEG: each with its own random strength."""
    kind = rng.integers(3)
    if kind == 1:
        gray = cv2.GaussianBlur(gray, (0, 0), rng.uniform(0.3, config.blur_max))
    elif kind == 2:
        amount = rng.uniform(0.2, config.sharpen_max)
        gray = cv2.addWeighted(gray, 1 + amount, cv2.GaussianBlur(gray, (0, 0), 1.0), -amount, 0)  # saturates
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, "JPEG", quality=int(rng.integers(config.jpeg_min, 96)))
        gray = np.asarray(Image.open(buffer).convert("L"))
    return gray
