"""Optional stage beyond the frozen default: fine-tune VGG16's block5 (`train.py --fine-tune N`).

Why this shape:
- block4_pool maps are cached like the pooled features (one backbone pass per image and view),
  so an epoch costs only block5's three convolutions, forward and backward, not all of VGG16.
- The head trained on frozen features is the starting point ("linear probe, then fine-tune",
  Kumar et al. 2022): a random head would send large gradients into the pretrained block5 and
  distort the features that transfer to new patients.
- The head's BatchNormalization layers keep their statistics (inference mode): with the small
  batches a CPU affords, re-estimating them adds noise for no gain.
- The epoch kept is the one with the best validation loss (validation patients only).
"""

from __future__ import annotations

import math

import numpy as np

from ..model.build import split_after
from ..model.bundle import BLOCK5

MAP_LAYER = "block4_pool"
BLOCK5_FILE = "block5.npz"


def pooled_from_maps(full_model, maps: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pooled features (the head's input) of cached maps, through the model's current block5."""
    _, pooled = split_after(full_model, MAP_LAYER, outputs=("gap",))
    out = [np.asarray(pooled.predict_on_batch(maps[i:i + batch_size].astype(np.float32)))
           for i in range(0, len(maps), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, pooled.output.shape[-1]), np.float32)


def _map_batches(maps, labels, class_weights, batch_size, seed):
    """Shuffled (maps, label, class weight) batches from float16 arrays, cast per batch (no 2 GB copy)."""
    import keras  # imported here: Keras takes seconds to import and most users never fine-tune

    class MapBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(labels))

        def __len__(self):
            return math.ceil(len(labels) / batch_size)

        def __getitem__(self, index):
            rows = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
            y = labels[rows].astype(np.float32)
            w = np.array([class_weights[int(v)] for v in y], np.float32)
            return maps[rows].astype(np.float32), y[:, None], w

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(labels))

    return MapBatches()


def fine_tune(full_model, fit_maps, fit_y, val_maps, val_y, epochs: int, learning_rate: float,
              batch_size: int = 32, seed: int = 0, log=print) -> list[dict]:
    """Train block5 and the head's Dense layers of `full_model` in place; returns the per-epoch history."""
    import keras

    keras.utils.set_random_seed(seed)
    _, tail = split_after(full_model, MAP_LAYER)
    for layer in tail.layers:
        # block5 and the head's Dense layers learn; pooling/BN/dropout have nothing to learn here.
        layer.trainable = layer.name in BLOCK5 or layer.name in ("head_dense", "logit")
    tail.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.BinaryCrossentropy(),
                 metrics=[keras.metrics.AUC(name="auc")])
    counts = np.bincount(fit_y.astype(int), minlength=2)
    weights = {c: len(fit_y) / (2.0 * max(counts[c], 1)) for c in (0, 1)}
    best = keras.callbacks.EarlyStopping(monitor="val_loss", patience=epochs, restore_best_weights=True)
    history = tail.fit(_map_batches(fit_maps, fit_y, weights, batch_size, seed),
                       validation_data=(val_maps.astype(np.float32), val_y[:, None]), epochs=epochs,
                       callbacks=[best, _log_epochs(log)], verbose=0)
    round_block5_to_float16(full_model)  # what the bundle stores is what was measured
    return [dict(zip(history.history, values)) for values in zip(*history.history.values())]


def _log_epochs(log):
    import keras

    class LogEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            log(f"fine-tune epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, "
                f"validation loss {logs.get('val_loss', float('nan')):.4f}, validation AUC {logs.get('val_auc', float('nan')):.4f}")

    return LogEpoch()


def round_block5_to_float16(full_model) -> None:
    for name in BLOCK5:
        layer = full_model.get_layer(name)
        layer.set_weights([w.astype(np.float16).astype(np.float32) for w in layer.get_weights()])
