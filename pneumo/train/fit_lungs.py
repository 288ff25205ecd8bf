"""Training the lung-field head (pneumo.model.lung_decoder) on X-rays with lung masks, and measuring it (Dice).

Only 83 adult films have masks, and children's chests have other proportions, so each pair is seen in many
augmented views (independent x/y scale, rotation, shift, contrast, brightness and gamma; the same geometry for
image and mask). Each view goes through the frozen backbone once and its activations are kept in memory; the
decoder then trains on them in seconds per epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..config import IMG_SIZE
from ..io import read_image
from ..model.lung_decoder import (
    LUNGS_FILE,
    LUNGS_VERSION,
    build_decoder,
    feature_function,
    load_decoder,
    save_decoder,
)
from ..preprocess import crop_box, normalize
from .features import trunk_fingerprint

# Keras/TensorFlow are imported where the decoder is fitted (4.5 s at import), after train.py quiets them.


@dataclass(frozen=True)
class LungAugment:
    scale: tuple[float, float] = (0.8, 1.2)  # per axis, drawn independently: aspect changes too
    rotation_deg: float = 10.0
    shift: float = 0.08
    contrast: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)


def load_pairs(folder: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, gray image, 0/1 mask) for every images/NAME with a masks/NAME of the same size."""
    folder = Path(folder)
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise ValueError(f"'{folder}' must hold images/ and masks/ with the same file names.")
    pairs = []
    for path in sorted(images.iterdir()):
        mask_path = masks / path.name
        if not mask_path.is_file():
            raise ValueError(f"'{path.name}' has no mask in '{masks}'.")
        gray, mask = read_image(path).gray, read_image(mask_path).gray > 127
        if gray.shape != mask.shape:
            raise ValueError(f"'{path.name}': image {gray.shape} and mask {mask.shape} differ in size.")
        pairs.append((path.name, gray, mask.astype(np.uint8)))
    if not pairs:
        raise ValueError(f"'{images}' holds no images.")
    return pairs


def model_view_pair(gray: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None,
                    config: LungAugment = LungAugment(), size: int = IMG_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask as the model sees them (whole film to size x size, outer margin cut, back to size),
    randomly transformed alike when `rng` is given."""
    image = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
    target = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    if rng is not None:
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-1, 1) * config.rotation_deg, 1.0)
        matrix[:, :2] *= rng.uniform(*config.scale, size=2)[:, None]  # x and y scaled apart: aspect changes
        centre = np.array([size / 2, size / 2])
        matrix[:, 2] = centre - matrix[:, :2] @ centre + rng.uniform(-1, 1, size=2) * config.shift * size
        image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
        target = cv2.warpAffine(target, matrix, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        unit = (image.astype(np.float32) / 255.0) ** rng.uniform(*config.gamma)
        unit = (unit - unit.mean()) * rng.uniform(1 - config.contrast, 1 + config.contrast) + unit.mean()
        image = np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)
    low, high = crop_box(size)
    image = cv2.resize(image[low:high, low:high], (size, size), interpolation=cv2.INTER_CUBIC)
    target = cv2.resize(target[low:high, low:high], (size, size), interpolation=cv2.INTER_NEAREST)
    return image, target


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (predicted & truth).sum() / total)


def views(pairs, features, n_views: int, seed: int, config: LungAugment = LungAugment(), size: int = IMG_SIZE):
    """Backbone activations (three float16 arrays) and masks at 1/4 resolution for the plain view and n_views
    augmented ones.

    `features`: images -> [block3, block4, block5] activations (pneumo.model.lung_decoder.feature_function). The arrays
    are filled in place: 666 views hold ~1.7 GB of activations, and a list of batches joined at the end would
    need twice that."""
    rng = np.random.default_rng(seed)
    feats, targets = None, []
    jobs = [(gray, mask, None if v == 0 else rng) for _, gray, mask in pairs for v in range(n_views + 1)]
    for start in tqdm(range(0, len(jobs), 16), desc="lung views", unit="batch"):
        batch = [model_view_pair(gray, mask, r, config, size) for gray, mask, r in jobs[start:start + 16]]
        outputs = [np.asarray(out) for out in features(np.stack([normalize(image) for image, _ in batch]))]
        if feats is None:
            feats = [np.empty((len(jobs), *out.shape[1:]), np.float16) for out in outputs]
        for store, out in zip(feats, outputs):
            store[start:start + len(batch)] = out
        quarter = size // 4
        targets += [cv2.resize(t, (quarter, quarter), interpolation=cv2.INTER_AREA) for _, t in batch]
    return feats, np.stack(targets).astype(np.float32)[..., None]


def _batches(feats, targets, batch_size: int, seed: int):
    """The views in a new order each epoch, cast to float32 one batch at a time. Handing Keras the float32 arrays
    took training to 13.5 GiB (a float32 copy of every view's ~1.7 GB of float16 activations, and Keras' own
    copies); this keeps float16 copies only: under 6 GiB."""
    import tensorflow as tf

    # variables, not constants: a constant captured by the map function is copied into its graph
    stored = [tf.Variable(f, trainable=False) for f in feats]
    masks = tf.Variable(targets, trainable=False)

    def gather(rows):
        return tuple(tf.cast(tf.gather(f, rows), tf.float32) for f in stored), tf.gather(masks, rows)

    order = tf.data.Dataset.range(len(targets)).shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
    return order.batch(batch_size).map(gather).prefetch(1)


def fit_decoder(decoder, feats, targets, epochs: int = 30, seed: int = 0, batch_size: int = 16):
    """Adam on binary cross-entropy plus soft Dice; returns the decoder."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)

    def loss(y, p):
        overlap = tf.reduce_sum(y * p, axis=(1, 2, 3))
        soft_dice = (2 * overlap + 1) / (tf.reduce_sum(y + p, axis=(1, 2, 3)) + 1)
        return tf.reduce_mean(keras.losses.binary_crossentropy(y, p)) + tf.reduce_mean(1 - soft_dice)

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=epochs, desc="lung head", unit="epoch")

        def on_epoch_end(self, epoch, logs=None):
            self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")
            self.bar.update()

        def on_train_end(self, logs=None):
            self.bar.close()

    decoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    decoder.fit(_batches(feats, targets, batch_size, seed), epochs=epochs, verbose=0, callbacks=[Progress()])
    return decoder


def predict_masks(decoder, feats, size: int = IMG_SIZE, batch_size: int = 32) -> np.ndarray:
    """Lung probability at size x size (the model's view) for cached activations."""
    out = [decoder.predict_on_batch([f[i:i + batch_size].astype(np.float32) for f in feats])
           for i in range(0, len(feats[0]), batch_size)]
    quarter = np.concatenate(out)[..., 0]
    return np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in quarter])


PROCEDURE = 2  # bump when how the decoder is trained changes, so cached decoders are retrained (2: float16)
HOLDOUT_EVERY = 10  # every 10th pair (by name) is held out of the shipped decoder to measure it


def fit_lung_head(config, trunk, log=print, int8=None):
    """The bundle's lung-field decoder and its stats, from `config.lung_masks`; cached by everything it depends on.
    `trunk`: the run's float VGG16 (build.build_backbone); `int8` (Int8Ranges): fitted on, and measured with, the
    int8 trunk's activations."""
    pairs = load_pairs(config.lung_masks)
    key = _cache_key(pairs, trunk_fingerprint(config.backbone, int8), config, LUNGS_VERSION)
    cached = Path(config.cache_dir) / f"lungs-{key}.npz"
    held = pairs[::HOLDOUT_EVERY]
    fit = [p for i, p in enumerate(pairs) if i % HOLDOUT_EVERY]
    features = feature_function(trunk, int8)
    if cached.is_file():
        decoder = load_decoder(cached)
        log(f"lung head: reused {cached.name} (same masks, backbone and settings)")
    else:
        feats, targets = views(fit, features, config.lung_views, config.seed, size=config.input_size)
        decoder = fit_decoder(build_decoder(), feats, targets, epochs=config.lung_epochs, seed=config.seed)
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_decoder(decoder, cached)
        decoder = load_decoder(cached)  # measure what ships: the float16 weights
    plain, _ = views(held, features, 0, config.seed, size=config.input_size)
    predicted = predict_masks(decoder, plain, size=config.input_size)
    scores = [dice(p >= 0.5, model_view_pair(gray, mask, None, size=config.input_size)[1])
              for (_, gray, mask), p in zip(held, predicted)]
    stats = {"file": LUNGS_FILE, "version": LUNGS_VERSION, "fit_pairs": len(fit),
             "heldout_pairs": len(held), "heldout_dice_mean": float(np.mean(scores)),
             "heldout_dice_min": float(np.min(scores)), "views": config.lung_views, "epochs": config.lung_epochs}
    log(f"lung head: Dice on {len(held)} held-out films mean {stats['heldout_dice_mean']:.3f}, "
        f"min {stats['heldout_dice_min']:.3f}")
    return decoder, stats


def _cache_key(pairs, backbone: str, config, version: int) -> str:
    digest = hashlib.sha256(repr((backbone, config.lung_views, config.lung_epochs, config.seed, config.input_size,
                                  LungAugment(), version, PROCEDURE)).encode())
    for name, gray, mask in pairs:
        digest.update(name.encode() + gray.tobytes() + mask.tobytes())
    return digest.hexdigest()[:16]
