"""The preprocessing contract (the one thing training and serving must share) and training-time augmentation.

`to_model_input` turns any decoded image into the network input. Training, evaluation, prediction and the
app all go through it, so a full-resolution upload reaches the model exactly as the 224x224 training images
were made (the whole image resized bicubically, aspect not kept), then loses the same outer margin.
Augmented views (training only) start from the same `model_view` and are a deterministic function of
(image content, view index), so a cached view never changes from run to run.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

from .config import CROP_MARGIN, IMG_SIZE, VGG_MEAN_BGR
from .io.image import DecodedImage


def to_model_input(image: DecodedImage | np.ndarray, size: int = IMG_SIZE) -> np.ndarray:
    """The preprocessing contract: any decoded image -> float32 (size, size, 3).

    `model_view` (grayscale; bicubic resize of the whole image to size x size, aspect not kept, exactly
    how the shared training images were made; outer margin cut; resized back), then `normalize`.
    """
    gray = image.gray if isinstance(image, DecodedImage) else np.asarray(image)
    if gray.ndim == 3 and gray.shape[2] in (3, 4):
        gray = np.asarray(Image.fromarray(gray[..., :3].astype(np.uint8)).convert("L"))
    return normalize(model_view(gray, size))


def model_view(gray: np.ndarray, size: int = IMG_SIZE) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8: what the network sees (also what augmentation starts from)."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got shape {gray.shape} and dtype {gray.dtype}")
    whole = gray if gray.shape == (size, size) else _bicubic(gray, size)
    low, high = crop_box(size)
    return _bicubic(np.ascontiguousarray(whole[low:high, low:high]), size)


def crop_box(size: int = IMG_SIZE) -> tuple[int, int]:
    """First and last+1 pixel kept along each axis of the size x size resize."""
    margin = int(round(size * CROP_MARGIN))
    return margin, size - margin


def normalize(view: np.ndarray) -> np.ndarray:
    """(size, size) uint8 -> float32 (size, size, 3): gray in all channels, VGG16's caffe normalisation."""
    x = np.empty((*view.shape, 3), np.float32)
    for channel, mean in enumerate(VGG_MEAN_BGR):  # gray, so BGR == RGB
        x[..., channel] = view - np.float32(mean)
    return x


def _bicubic(gray: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.BICUBIC))


# --- Augmented views, for training only ---------------------------------------------------------------------

def model_input_for_view(image: DecodedImage, content_hash: str, view: int, config: AugmentConfig,
                         size: int = IMG_SIZE) -> np.ndarray:
    """View 0 is the plain preprocessing contract; views >= 1 are seeded augmentations of it."""
    if view == 0:
        return to_model_input(image, size)
    return normalize(augment(model_view(image.gray, size), view_rng(content_hash, view), config))


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 10.0
    # Magnification only (crop, no black borders). Train NORMAL images show neck and shoulders while
    # PNEUMONIA ones are framed tightly on the chest, so framing is a shortcut; tight crops of normal
    # chests take it away (see docs/decisions.md).
    zoom_min: float = 1.0
    zoom_max: float = 1.45
    shift: float = 0.08  # fraction of the side
    contrast: float = 0.25
    brightness: float = 0.15  # fraction of the 0..255 range

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_key(self) -> str:
        """Identifies the views in the feature cache: the class and every parameter."""
        return repr(self)


def view_rng(content_hash: str, view: int) -> np.random.Generator:
    """A generator seeded by the image's content hash and the view index."""
    return np.random.default_rng([int(content_hash[:15], 16), view])


def augment(gray: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Random rotation/zoom/shift, then contrast/brightness, of an (H, W) uint8 image."""
    height, width = gray.shape
    angle = rng.uniform(-config.rotation_deg, config.rotation_deg)
    scale = rng.uniform(config.zoom_min, config.zoom_max)
    dx, dy = rng.uniform(-config.shift, config.shift, size=2) * (width, height)
    contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
    brightness = rng.uniform(-1, 1) * config.brightness * 255
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    # Black borders where rotation/shift uncover them: radiograph surroundings are dark.
    moved = cv2.warpAffine(gray, matrix, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = moved.astype(np.float32)
    out = (out - out.mean()) * contrast + out.mean() + brightness
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return change_form(out, rng, config) if isinstance(config, FormConfig) else out


@dataclass(frozen=True)
class FormConfig(AugmentConfig):
    """Views for the population check: AugmentConfig plus a random "form" of the film.

    The pediatric training films are 224 px JPEGs (quality 75: sharp, blocky), adult films arrive large and
    smooth; a check trained on them as they are learns that texture instead of anatomy, and flags full-size
    pediatric originals (measured: up to half of val/). Randomising sharpness and compression on both sides
    leaves anatomy as the only difference.
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
