"""Backbone features, extracted once and cached on disk.

A VGG16 pass over the 5,216 training images takes ~10 minutes; the head trains in seconds. So features are
cached, keyed by
  cache version + trunk fingerprint (weights, int8 ranges) + preprocessing version + view + pooled  (one folder)
  SHA-1 of the image file's bytes                                                                (one row)
so a changed image, preprocessing, backbone or lung decoder is recomputed, nothing else.
Rows are written in small chunks, each atomically: Ctrl-C loses at most one
chunk and the cache stays readable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import CAM_LAYER, IMG_SIZE, PREPROCESSING_VERSION
from ..io import read_image
from ..io.folders import file_hash
from ..model.backends import make_feature_function
from ..model.build import backbone_fingerprint
from ..model.pooling import GAP, ZONES
from ..preprocess import AugmentConfig, model_input_for_view

CHUNK_ROWS = 256
# Bump when what a cached row holds changes without its key saying so: every older cache is then rebuilt.
CACHE_VERSION = 4  # 4: lung-zone rows end with the lung signature


def trunk_fingerprint(backbone_weights: str, int8=None) -> str:
    """The backbone weights' fingerprint, and for the int8 trunk (Int8Ranges) its ranges': the caches' key."""
    base = backbone_fingerprint(backbone_weights)
    return base if int8 is None else f"{base}-int8-{int8.fingerprint()}"


class FeatureCache:
    """float32 rows of one kind of pooled features for one (backbone, preprocessing, view) combination.

    `pooled`: "gap" (the global average of block5_pool) or "lung-zones-<decoder fingerprint>" (that, then the
    lung zones' averages, from the same pass)."""

    def __init__(self, root: Path, fingerprint: str, view: int, augment_config: AugmentConfig,
                 size: int = IMG_SIZE, pooled: str = GAP):
        tag = f"v{CACHE_VERSION}-{fingerprint}-{PREPROCESSING_VERSION}-view{view}-{pooled}"
        if size != IMG_SIZE:  # small inputs are for tests
            tag += f"-{size}px"
        if view:  # augmentation parameters change the views, so they are part of the key
            tag += "-" + hashlib.sha1(augment_config.cache_key().encode()).hexdigest()[:8]
        self.folder = Path(root) / tag
        self.rows: dict[str, np.ndarray] = {}
        for chunk in sorted(self.folder.glob("chunk-*.npz")):
            with np.load(chunk) as arrays:
                self.rows.update(zip(arrays["keys"].tolist(), arrays["feats"]))

    def save_chunk(self, keys: list[str], feats: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, keys=np.array(keys), feats=feats.astype(np.float32))
        os.replace(tmp, self.folder / f"chunk-{time.time_ns()}.npz")  # atomic on POSIX
        self.rows.update(zip(keys, feats.astype(np.float32)))


class FeatureExtractor:
    """Pooled backbone features by the default backend: the global average of block5_pool (512 values), or with
    a lung `decoder` that, the lung zones' averages and the lung signature side by side (512 + ZONES * 512 + h * w;
    h x w: block5_conv3's grid).

    Any model holding VGG16's layers works: the training extractor or a full model. `int8` (Int8Ranges): from
    the int8 trunk."""

    def __init__(self, full_model, backend: str | None = None, decoder=None, int8=None):
        self.size = int(full_model.input_shape[1])
        _, h, w, channels = full_model.get_layer(CAM_LAYER).output.shape
        self.shape = ((1 + ZONES) * channels + h * w,) if decoder is not None else (channels,)
        self._run = make_feature_function(full_model, backend, decoder, int8)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(np.asarray(batch, np.float32)), np.float32)


@dataclass
class FeatureSet:
    features: np.ndarray  # (n, d) float32 pooled features, in the order of `paths`
    paths: list[Path]
    failed: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files, with the reason
    computed: int = 0  # images that went through the backbone in this call (the rest came from the cache)


def extract(paths: list[Path], extractor, cache: FeatureCache, view: int = 0,
            augment_config: AugmentConfig = AugmentConfig(), batch_size: int = 32,
            desc: str = "features", known: dict[Path, str] | None = None) -> FeatureSet:
    """Features for `paths` (from the cache where present); unreadable files are listed, not fatal. `known`:
    {path: content hash} of files hashed before, filled in here (a run reads the same films in several views)."""
    known = {} if known is None else known
    for path in tqdm([p for p in paths if p not in known], desc=f"hash {desc}", unit="img", leave=False):
        known[path] = file_hash(path)
    hashes = [known[p] for p in paths]
    todo = [(p, h) for p, h in zip(paths, hashes) if h not in cache.rows]
    failed = _compute_missing(todo, extractor, cache, view, augment_config, batch_size, desc)
    bad = {str(p) for p, _ in failed}
    kept = [(p, h) for p, h in zip(paths, hashes) if str(p) not in bad]
    feats = np.stack([cache.rows[h] for _, h in kept]) if kept else np.zeros((0, *extractor.shape), np.float32)
    return FeatureSet(feats, [p for p, _ in kept], failed, len(todo))


def _compute_missing(todo, extractor, cache, view, config, batch_size, desc) -> list[tuple[Path, str]]:
    size = extractor.size
    failed: list[tuple[Path, str]] = []
    keys: list[str] = []
    batch: list[np.ndarray] = []
    pending_keys, pending_feats = [], []
    for path, content_hash in tqdm(todo, desc=f"VGG16 {desc}", unit="img", disable=not todo):
        try:
            batch.append(model_input_for_view(read_image(path), content_hash, view, config, size))
            keys.append(content_hash)
        except ValueError as err:
            failed.append((path, str(err)))
        if len(batch) == batch_size:
            pending_feats.append(extractor(np.stack(batch)))
            pending_keys += keys
            batch, keys = [], []
        if len(pending_keys) >= CHUNK_ROWS:
            cache.save_chunk(pending_keys, np.concatenate(pending_feats))
            pending_keys, pending_feats = [], []
    if batch:
        pending_feats.append(extractor(np.stack(batch)))
        pending_keys += keys
    if pending_keys:
        cache.save_chunk(pending_keys, np.concatenate(pending_feats))
    return failed
