"""Training: films -> cached backbone features -> head and checks -> threshold and metrics -> bundle.

The recipe, end to end:
1. find every film once (data.py): train/ split by patient (seeded) into fit and validation, the other
   hospitals' films into the checks' fit and held-out halves;
2. with --precision int8, the int8 trunk's ranges; with --lung-masks, the lung-field head (fit_lungs.py);
3. extract pooled VGG16 features once per image (and per augmented view), cached;
4. train the head on the fit patients' features with balanced class weights,
   keeping the epoch with the best validation loss;
5. fit the "is this a chest X-ray?" check and, with --adult-dir, the "is this a child's film?" check (checks.py),
   both on chest films of several hospitals, with cut-offs on films they were not fitted on;
6. choose the decision threshold on validation with the configured rule, measure every split;
7. draw the plots, write the bundle atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import CAM_LAYER
from ..infer.chest_check import CHEST_FILE
from ..infer.population import POPULATION_FILE
from ..io import folders, read_image
from ..model import build, card, plots
from ..model import bundle as bundles
from ..model.heads import fold_into
from ..model.int8 import CALIBRATION_IMAGES, INT8_FILE, Int8Ranges
from ..model.lung_decoder import LUNGS_FILE, decoder_fingerprint, save_decoder
from ..model.onnx_graph import activation_ranges
from ..model.pooling import GAP, LUNG_ZONES, ZONES
from ..preprocess import to_model_input
from ..stats import metrics
from . import features
from .checks import fit_checks
from .data import find_data
from .fit_lungs import fit_lung_head
from .options import TrainConfig

# Keras/TensorFlow are imported where a model is built or fitted (4.5 s at import), after train.py quiets them.


@dataclass
class Labelled:
    """Features of the readable files of a split, with their labels: `x` what the head reads, `checks` what the
    two checks read (the same array, except for lung pooling: there the checks keep the global average), and with a
    lung head `signatures`, where the lungs lie (pneumo.model.pooling.lung_signature)."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    failed: list[tuple[Path, str]]
    checks: np.ndarray | None = None
    signatures: np.ndarray | None = None

    def __post_init__(self):
        if self.checks is None:
            self.checks = self.x

    @property
    def patients(self) -> list[str]:
        """Each row's patient id from its file name (folders.patient_id): the band resamples them."""
        return [folders.patient_id(p.name) for p in self.paths]

    def subset(self, samples: list[folders.Sample]) -> Labelled:
        wanted = {s.path for s in samples}
        rows = [i for i, p in enumerate(self.paths) if p in wanted]
        checks = None if self.checks is self.x else self.checks[rows]
        signatures = None if self.signatures is None else self.signatures[rows]
        return Labelled(self.x[rows], self.y[rows], [self.paths[i] for i in rows], [], checks, signatures)


class Extractor:
    """Feature extraction for this run: the run's trunk, one cache root, labels attached.

    With a lung decoder (--pooling lung-zones) every row holds the global average, the lung zones' averages and the
    lung signature, from one pass."""

    def __init__(self, config: TrainConfig, trunk, decoder=None, int8: Int8Ranges | None = None):
        self.config = config
        self.fingerprint = features.trunk_fingerprint(config.backbone, int8)
        self.network = features.FeatureExtractor(trunk, decoder=decoder, int8=int8)  # what computes the rows
        self.width = int(trunk.get_layer(CAM_LAYER).output.shape[-1])  # the global average's width: block5's channels
        # What the cache calls the rows: with a decoder they hold the zones too, and depend on the decoder.
        self.pooled = GAP if decoder is None else f"{LUNG_ZONES}-{decoder_fingerprint(decoder)}"
        self.computed = 0  # backbone passes in this run
        self.hashes: dict[Path, str] = {}  # each film's content key, read once per run whatever its views
        self.caches: dict[tuple, features.FeatureCache] = {}  # each cache folder loaded once per run

    def __call__(self, samples: list[folders.Sample], desc: str, view: int = 0, augment=None) -> Labelled:
        augment = augment or self.config.augment
        key = (view, augment.cache_key())
        if key not in self.caches:
            self.caches[key] = features.FeatureCache(self.config.cache_dir, self.fingerprint, view, augment,
                                                     self.config.input_size, self.pooled)
        cache = self.caches[key]
        fs = features.extract([s.path for s in samples], self.network, cache, view=view, augment_config=augment,
                              desc=desc, known=self.hashes)
        label_of = {s.path: s.label for s in samples}
        self.computed += fs.computed
        y = np.array([label_of[p] for p in fs.paths], np.float32)
        if self.pooled == GAP:
            return Labelled(fs.features, y, fs.paths, fs.failed)
        head_end = self.width * (1 + ZONES)  # [global average | lung zones' averages | lung signature]
        return Labelled(fs.features[:, self.width:head_end], y, fs.paths, fs.failed, fs.features[:, :self.width],
                        fs.features[:, head_end:])


def run(config: TrainConfig, log=print) -> Path:
    """Train, evaluate and write a bundle from a validated config (`TrainConfig.validate`); returns the folder."""
    started = time.time()
    data = find_data(config)
    trunk = build.build_backbone(config.backbone, config.input_size)  # float VGG16: the int8 trunk is made from it
    int8 = calibrate_int8(config, trunk, data.fit, log) if config.precision == "int8" else None
    decoder = lung_stats = None
    if config.lung_masks:  # first: a head that pools over the lungs reads its maps (cached, seeded on its own)
        decoder, lung_stats = fit_lung_head(config, trunk, log, int8)
    extract = Extractor(config, trunk, decoder if config.pooling == LUNG_ZONES else None, int8)
    train = extract(data.train, "train")
    views = [extract(data.fit, f"train view {view}", view) for view in range(1, config.views + 1)]
    others = {name: extract(samples, name) for name, samples in data.measured.items()}
    failed = train.failed + [f for split in others.values() for f in split.failed]
    fit, val = train.subset(data.fit), train.subset(data.validation)
    fit_x, fit_y = np.concatenate([fit.x, *(v.x for v in views)]), np.concatenate([fit.y, *(v.y for v in views)])
    log(f"fit: {len(fit_y)} rows from {len(data.fit)} images; validation: {len(val.y)} images "
        f"of {len({s.patient for s in data.validation})} patients, none of them in fit")
    head = fit_heads(config, fit_x, fit_y, val.x, val.y, log)
    (chest, chest_stats), (population, population_stats) = fit_checks(config, extract, data, fit, val, log)
    # the head's scores: validation's set the threshold, the measured splits' only report (Kaggle's val/ is 16 films)
    predictions = {name: (split.y, head.predict(split.x, batch_size=1024, verbose=0).ravel().astype(np.float64))
                   for name, split in {"validation": val, **others}.items()}
    threshold = metrics.choose_threshold(*predictions["validation"], config.threshold_rule)
    scores = {name: metrics.binary_metrics(y, p, threshold) for name, (y, p) in predictions.items()}
    band = metrics.threshold_band(*predictions["validation"], val.patients,
                                  lambda y, p, _: metrics.choose_threshold(y, p, config.threshold_rule), threshold)
    cfg = bundles.BundleConfig(
        **bundles.identity(config.backbone, config.precision, config.input_size), threshold=threshold,
        threshold_rule=config.threshold_rule, recipe=config.recipe(), command=config.command(),
        data_counts=data.counts(), metrics=scores,
        # counted once the population check's films are through too (the lung head's views are not in it)
        training_seconds=round(time.time() - started, 1), backbone_passes_this_run=extract.computed,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), borderline=band,
        borderline_validation=metrics.band_stats(*predictions["validation"], threshold, band),
        skipped_files=[{"file": str(p), "error": e} for p, e in failed], int8=None if int8 is None else int8.record(),
        chest_check=chest_stats, population=population_stats, lungs=lung_stats or None)
    with bundles.writing(config.output) as folder:
        fill_bundle(folder, cfg, head, predictions, chest, population, decoder, int8)
    report(scores, threshold, config.threshold_rule, failed, log)
    return Path(config.output)


def fill_bundle(folder: Path, config: bundles.BundleConfig, head, predictions: dict, chest, population=None,
                decoder=None, int8=None):
    """Config, head weights, both checks' statistics, the lung head, the int8 ranges, plots and model card."""
    head.save_weights(folder / bundles.HEAD_WEIGHTS)
    if int8 is not None:
        int8.save(folder / INT8_FILE)
    chest.save(folder / CHEST_FILE)
    if population is not None:
        population.save(folder / POPULATION_FILE)
    if decoder is not None:
        save_decoder(decoder, folder / LUNGS_FILE)
    plots.save_roc(predictions, config.metrics, folder / "roc.png")
    plots.save_confusion(config.metrics, folder / "confusion.png")
    card.save(folder, config)


def calibrate_int8(config: TrainConfig, trunk, fit_samples: list, log=print) -> Int8Ranges:
    """The int8 trunk's activation ranges, from the float trunk on a seeded choice of fit films (plain views)."""
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(len(fit_samples), min(CALIBRATION_IMAGES, len(fit_samples)), replace=False)
    images = np.stack([to_model_input(read_image(fit_samples[i].path), config.input_size) for i in sorted(chosen)])
    ranges = activation_ranges(trunk, images)
    log(f"int8 trunk: activation ranges from {len(images)} fit films (fingerprint {ranges.fingerprint()})")
    return ranges


def fit_heads(config: TrainConfig, fit_x, fit_y, val_x, val_y, log):
    """--heads K: K heads, seeds seed .. seed + K - 1, their mean logit folded into one head (the first one's
    layers). One head on 2,048 features moves with its seed; the mean of five does not (docs/decisions.md)."""
    import keras

    heads = []
    for k in range(config.heads):
        keras.utils.set_random_seed(config.seed + k)
        heads.append(fit_head(build.build_head_model(config.head), fit_x, fit_y, val_x, val_y, config))
    if config.heads == 1:
        return heads[0]
    log(f"--heads {config.heads}: the head is the mean logit of {config.heads} heads (seeds {config.seed}-"
        f"{config.seed + config.heads - 1}), folded into one")
    folded = build.build_head_model(config.head)  # uncompiled: the bundle's file holds no optimizer state
    fold_into(folded, heads)
    return folded


def fit_head(head, fit_x, fit_y, val_x, val_y, config: TrainConfig):
    """Train the head on pooled features; balanced class weights; best validation-loss epoch kept."""
    import keras

    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                 loss=keras.losses.BinaryCrossentropy(),
                 metrics=[keras.metrics.AUC(name="auc")],
                 steps_per_execution=32)  # the same updates in fewer calls: same weights, less time
    counts = np.bincount(fit_y.astype(int), minlength=2)
    # Pneumonia outnumbers normal ~3:1 in train; weight each class to half the total.
    weights = {c: len(fit_y) / (2.0 * max(counts[c], 1)) for c in (0, 1)}
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    train_data = _batches(fit_x, fit_y, weights, config)
    head.fit(train_data, validation_data=(val_x, val_y), epochs=config.epochs, callbacks=[stop], verbose=0,
             shuffle=False)  # the dataset is already shuffled, with our seed
    return head


def _batches(x, y, class_weights, config: TrainConfig):
    """Shuffled batches (with our seed) with per-sample class weights."""
    import tensorflow as tf

    w = np.array([class_weights[int(label)] for label in y], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None], w)).shuffle(len(y), seed=config.seed)
    return ds.batch(config.batch_size).prefetch(2)


def report(scores: dict, threshold: float, rule: str, failed: list, log=print) -> None:
    log(f"threshold {threshold:.4f} (rule: {rule}, chosen on validation)")
    columns = "".join(f"{name:>8}" for name in ("acc", "sens", "spec", "prec", "f1", "auc"))
    log(f"{'split':<12}{'n':>6}{columns}  confusion [[TN FP] [FN TP]]")
    for split, m in scores.items():
        log(f"{split:<12}{m['n']:>6}{m['accuracy']:>8.4f}{m['sensitivity']:>8.4f}{m['specificity']:>8.4f}"
            f"{m['precision']:>8.4f}{m['f1']:>8.4f}{m['auc']:>8.4f}  {m['confusion']}")
    if failed:
        log(f"skipped {len(failed)} unreadable file(s):")
        for path, error in failed:
            log(f"  {path}: {error}")
