"""Training: cached backbone features -> head -> threshold -> metrics -> bundle.

The recipe, end to end:
1. scan the Kaggle folders; split train/ by patient (seeded) into fit and validation;
2. extract pooled VGG16 features once per image (and per augmented view), cached;
3. train the head on the fit patients' features with balanced class weights,
   keeping the epoch with the best validation loss;
4. choose the decision threshold on validation with the configured rule;
5. with --adult-dir: fit the "is this a child's film?" check (population.py) on pediatric fit patients
   against adult films, cut-off on the pediatric validation patients, measured on held-out adult patients;
6. measure every split, draw the plots, write the bundle atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, bundle, data, evaluation, features, finetune, model, ood, population
from .augment import AugmentConfig
from .constants import BACKBONE, CLASS_NAMES, FEATURE_LAYER, IMG_SIZE, PREPROCESSING_VERSION

SPLIT_NAMES = ("train", "val", "test", "validation", "kaggle_val")  # reserved
REPORT_NAMES = {"val": "kaggle_val"}  # Kaggle's val/ is 16 images, not our validation split


@dataclass
class TrainConfig:
    data_dir: Path
    output: Path = Path("weights")
    cache_dir: Path = field(default_factory=features.default_cache_dir)
    backbone_weights: str | None = None  # None: env PNEUMO_BACKBONE_WEIGHTS, else "imagenet"
    val_fraction: float = 0.15
    seed: int = 0
    epochs: int = 60
    patience: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) feature mixup strength; 0 = off
    views: int = 0  # augmented feature views per training image, on top of the plain one
    augment_classes: tuple[str, ...] = CLASS_NAMES  # which classes get the augmented views
    threshold_rule: str = "sensitivity95"  # see docs/experiments.md: robust to the shift to new patients
    fine_tune: int = 0  # epochs of block5 fine-tuning on cached block4_pool maps; 0 = frozen VGG16 (default)
    fine_tune_lr: float = 1e-5
    input_size: int = IMG_SIZE  # smaller only in tests
    # Extra folders (NORMAL/, PNEUMONIA/) only measured and reported, never fitted on: {name: folder}
    report_dirs: dict[str, Path] = field(default_factory=dict)
    # Adult chest films for the population check (any layout); a share of their patients is held out to measure it.
    adult_dirs: tuple[Path, ...] = ()
    adult_holdout: float = 0.5
    population_views: int = 2  # augmented views per adult film, so the check learns anatomy, not one archive's look
    head: model.HeadConfig = field(default_factory=model.HeadConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        """Every argument checked before any work starts."""
        checks = [
            (Path(self.data_dir).is_dir(), f"--data-dir must be an existing folder, got '{self.data_dir}'"),
            (0 < self.val_fraction < 0.5, f"--val-fraction must be in (0, 0.5), got {self.val_fraction}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (0 <= self.label_smoothing < 0.5, f"--label-smoothing must be in [0, 0.5), got {self.label_smoothing}"),
            (self.mixup >= 0, f"--mixup must be >= 0, got {self.mixup}"),
            (0 <= self.views <= 16, f"--views must be between 0 and 16, got {self.views}"),
            (bool(self.augment_classes) and set(self.augment_classes) <= set(CLASS_NAMES),
             f"--augment-classes must be among {CLASS_NAMES}, got {self.augment_classes}"),
            (0 <= self.head.dropout < 1, f"--dropout must be in [0, 1), got {self.head.dropout}"),
            (32 <= self.input_size <= 512, f"input_size must be in [32, 512], got {self.input_size}"),
            (self.head.units >= 1, f"--units must be >= 1, got {self.head.units}"),
            (0 <= self.fine_tune <= 50, f"--fine-tune must be between 0 and 50 epochs, got {self.fine_tune}"),
            (self.fine_tune_lr > 0, f"--fine-tune-lr must be > 0, got {self.fine_tune_lr}"),
            (all(Path(d).is_dir() for d in self.adult_dirs), f"--adult-dir must be existing folders, got "
                                                                f"{[str(d) for d in self.adult_dirs]}"),
            (0 <= self.adult_holdout < 1, f"--adult-holdout must be in [0, 1), got {self.adult_holdout}"),
            (0 <= self.population_views <= 8, f"--population-views must be between 0 and 8, got {self.population_views}"),
            (self.threshold_rule in evaluation.THRESHOLD_RULES,
             f"--threshold-rule must be one of {evaluation.THRESHOLD_RULES}, got '{self.threshold_rule}'"),
        ]
        checks += [(Path(folder).is_dir() and name.isidentifier() and name not in SPLIT_NAMES,
                    f"--report NAME=DIR needs a new split name and a folder, got {name}={folder}")
                   for name, folder in self.report_dirs.items()]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("; ".join(errors) + ".")
        self.backbone_weights = model.backbone_weights_setting(self.backbone_weights)

    def command(self) -> str:
        """The train.py command line that reproduces this recipe (non-default options only)."""
        default = TrainConfig(data_dir=self.data_dir)
        flags = []
        for key in ("val_fraction", "seed", "epochs", "patience", "batch_size", "learning_rate",
                    "label_smoothing", "mixup", "views", "threshold_rule", "fine_tune", "fine_tune_lr",
                    "adult_holdout", "population_views"):
            if getattr(self, key) != getattr(default, key) and (key != "fine_tune_lr" or self.fine_tune):
                flags.append(f"--{key.replace('_', '-')} {getattr(self, key)}")
        for key in ("units", "dropout", "weight_decay"):
            if getattr(self.head, key) != getattr(default.head, key):
                flags.append(f"--{key.replace('_', '-')} {getattr(self.head, key)}")
        if self.augment_classes != default.augment_classes:
            flags.append("--augment-classes " + " ".join(self.augment_classes))
        flags += [f"--report {name}=DIR" for name in self.report_dirs]
        flags += ["--adult-dir ADULTS"] * len(self.adult_dirs)
        return " ".join(["python train.py --data-dir DATA", *flags])

    def recipe(self) -> dict:
        """What is needed to reproduce the head (paths excluded)."""
        keep = ("val_fraction", "seed", "epochs", "patience", "batch_size", "learning_rate",
                "label_smoothing", "mixup", "views", "augment_classes", "threshold_rule", "fine_tune", "fine_tune_lr",
                "adult_holdout", "population_views")
        out = {key: getattr(self, key) for key in keep}
        out["augment_classes"] = list(self.augment_classes)
        out.update(head=self.head.to_dict(), augment=self.augment.to_dict() if self.views else None)
        return out


@dataclass
class Labelled:
    """Features of the readable files of a split, with their labels."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    failed: list[tuple[Path, str]]
    computed: int = 0

    def subset(self, samples: list[data.Sample]) -> tuple[np.ndarray, np.ndarray]:
        wanted = {s.path for s in samples}
        rows = [i for i, p in enumerate(self.paths) if p in wanted]
        return self.x[rows], self.y[rows]


class _Extractor:
    """Feature extraction for this run: one backbone, one cache root, labels attached."""

    def __init__(self, config: TrainConfig):
        self.config = config
        from .predictor import default_backend

        # Fine-tuning needs block4_pool maps (block5 is retrained); the frozen recipe, pooled features.
        self.layer = finetune.MAP_LAYER if config.fine_tune else features.POOLED
        self.network = features.FeatureExtractor(
            model.build_feature_extractor(config.backbone_weights, config.input_size), default_backend(),
            self.layer)
        self.fingerprint = model.backbone_fingerprint(config.backbone_weights)
        self.computed = 0  # backbone passes in this run

    def __call__(self, samples: list[data.Sample], desc: str, view: int = 0, augment=None) -> Labelled:
        augment = augment or self.config.augment
        cache = features.FeatureCache(self.config.cache_dir, self.fingerprint, view, augment,
                                      self.config.input_size, self.layer)
        fs = features.extract([s.path for s in samples], self.network, cache, view=view,
                              augment_config=augment, desc=desc)
        label_of = {s.path: s.label for s in samples}
        self.computed += fs.computed
        return Labelled(fs.features, np.array([label_of[p] for p in fs.paths], np.float32), fs.paths, fs.failed)


def run(config: TrainConfig, log=print) -> Path:
    """Train, evaluate and write a bundle; returns the bundle folder."""
    config.validate()
    started = time.time()
    splits = data.kaggle_splits(config.data_dir)
    splits.update({name: data.scan_class_folder(folder) for name, folder in config.report_dirs.items()})
    fit_samples, val_samples = data.split_by_patient(splits["train"], config.val_fraction, config.seed)
    extract = _Extractor(config)
    train = extract(splits["train"], "train")
    to_augment = [s for s in fit_samples if CLASS_NAMES[s.label] in config.augment_classes]
    views = [extract(to_augment, f"train view {view}", view) for view in range(1, config.views + 1)]
    others = {name: extract(samples, name) for name, samples in splits.items() if name != "train"}
    failed = train.failed + [f for split in others.values() for f in split.failed]
    (fit_x, fit_y), (val_x, val_y) = train.subset(fit_samples), train.subset(val_samples)
    fit_x, fit_y = np.concatenate([fit_x, *(v.x for v in views)]), np.concatenate([fit_y, *(v.y for v in views)])
    log(f"fit: {len(fit_y)} rows from {len(fit_samples)} images; validation: {len(val_y)} images "
        f"of {len({s.patient for s in val_samples})} patients, none of them in fit")

    import keras

    keras.utils.set_random_seed(config.seed)
    head = model.build_head_model(config.head)
    full = model.build_full_model(config.backbone_weights, head, config.input_size) if config.fine_tune else None
    pooled = (lambda x: finetune.pooled_from_maps(full, x)) if full is not None else (lambda x: x)
    fit_head(head, pooled(fit_x), fit_y, pooled(val_x), val_y, config)
    if full is not None:
        finetune.fine_tune(full, fit_x, fit_y, val_x, val_y, config.fine_tune, config.fine_tune_lr,
                           seed=config.seed, log=log)
    del fit_x  # maps: up to a few GB
    val_pooled = pooled(val_x)  # through the fine-tuned block5 when there is one: computed once
    gaussian = ood.FeatureGaussian.fit(pooled(train.subset(fit_samples)[0]), val_pooled)  # plain views only
    predictions = {"validation": (val_y, predict_head(head, val_pooled))}
    threshold = evaluation.choose_threshold(*predictions["validation"], config.threshold_rule)
    for name, split in others.items():  # official val/ is 16 full-resolution images
        predictions[REPORT_NAMES.get(name, name)] = (split.y, predict_head(head, pooled(split.x)))
    metrics = {name: evaluation.binary_metrics(y, p, threshold) for name, (y, p) in predictions.items()}
    counts = _counts(splits, fit_samples, val_samples)
    cfg = bundle_config(config, threshold, metrics, counts, time.time() - started)
    cfg["borderline"] = evaluation.borderline_band(*predictions["validation"], threshold)
    cfg["borderline_validation"] = evaluation.band_stats(*predictions["validation"], threshold, cfg["borderline"])
    cfg["backbone_passes_this_run"] = extract.computed
    cfg["skipped_files"] = [{"file": str(p), "error": e} for p, e in failed]
    cfg["ood"] = {"cutoff": gaussian.cutoff, "percentile": gaussian.percentile, "file": ood.OOD_FILE}
    check = None
    if config.adult_dirs:
        children = [train.subset(fit_samples)[0], *(v.x for v in views)]
        check, cfg["population"] = fit_population(config, extract, pooled, children, fit_samples, val_pooled)
        log(f"population check: {cfg['population']['summary']}")
    out = bundle.write_bundle(config.output, cfg, head, predictions, gaussian, full, check)
    report(metrics, threshold, config.threshold_rule, failed, log)
    return out


def fit_population(config: TrainConfig, extract, pooled, children: list, child_samples: list, children_val):
    """The pediatric-vs-adult check: fitted on adult patients' films and views, measured on held-out adult patients.

    Both sides also get FormConfig views (random sharpness and JPEG compression), so the film's texture
    tells nothing and anatomy has to; for the children a 1-in-8 sample of the fit films is enough.
    """
    from .augment import FormConfig

    adults = [s for folder in config.adult_dirs for s in data.scan_images(folder)]
    fit, held_out = data.split_by_patient(adults, config.adult_holdout, config.seed) if config.adult_holdout \
        else (adults, [])
    form = FormConfig(**config.augment.to_dict())
    views = range(1, config.population_views + 1)
    adult_x = [pooled(extract(fit, "adult films", 0).x)]
    adult_x += [pooled(extract(fit, f"adult form {v}", v, form).x) for v in views]
    sample = child_samples[::8]
    child_forms = [pooled(extract(sample, f"child form {v}", v, form).x) for v in views]
    plain = pooled(extract(sample, "child sample", 0).x)  # cached: the same films' plain features
    pairs = [(plain, x) for x in child_forms] + [(adult_x[0], x) for x in adult_x[1:]]
    directions = population.form_directions(pairs) if pairs else None
    check = population.PopulationCheck.fit(np.concatenate([pooled(np.concatenate(children)), *child_forms]),
                                           np.concatenate(adult_x), children_val, directions)
    children_flagged = float(check.flags(children_val).mean())
    stats = {"file": population.POPULATION_FILE, "version": population.VERSION, "cutoff": check.cutoff,
             "percentile": check.percentile, "form_dims": len(check.form), "adult_fit_images": len(fit), "adult_holdout_images": len(held_out), "form_views": form.to_dict(),
             "validation_children_flagged": children_flagged}
    summary = f"{children_flagged:.1%} of {len(children_val)} pediatric validation films flagged"
    if held_out:
        flagged = float(check.flags(pooled(extract(held_out, "held-out adults").x)).mean())
        stats["holdout_adults_flagged"] = flagged
        summary += f"; {flagged:.1%} of {len(held_out)} held-out adult films flagged"
    stats["summary"] = summary
    return check, stats


def fit_head(head, fit_x, fit_y, val_x, val_y, config: TrainConfig):
    """Train the head on pooled features; balanced class weights; best validation-loss epoch kept."""
    import keras

    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                 loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
                 metrics=[keras.metrics.AUC(name="auc")])
    counts = np.bincount(fit_y.astype(int), minlength=2)
    # Pneumonia outnumbers normal ~3:1 in train; weight each class to half the total.
    weights = {c: len(fit_y) / (2.0 * max(counts[c], 1)) for c in (0, 1)}
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    train_data = _batches(fit_x, fit_y, weights, config)
    head.fit(train_data, validation_data=(val_x, val_y), epochs=config.epochs, callbacks=[stop], verbose=0,
             shuffle=False)  # the dataset is already shuffled, with our seed
    return head


def _batches(x, y, class_weights, config: TrainConfig):
    """Shuffled batches with per-sample class weights, optionally mixed up (features and labels)."""
    import tensorflow as tf

    w = np.array([class_weights[int(label)] for label in y], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, y[:, None], w)).shuffle(len(y), seed=config.seed)
    ds = ds.batch(config.batch_size)
    if config.mixup > 0:
        alpha = config.mixup

        def mix(bx, by, bw):
            g1, g2 = (tf.random.gamma([tf.shape(bx)[0], 1], alpha) for _ in range(2))
            lam = g1 / (g1 + g2)  # Beta(alpha, alpha)
            perm = tf.random.shuffle(tf.range(tf.shape(bx)[0]), seed=config.seed)
            mixed = lambda a: lam * a + (1 - lam) * tf.gather(a, perm)
            return mixed(bx), mixed(by), tf.squeeze(mixed(bw[:, None]), 1)

        ds = ds.map(mix)
    return ds.prefetch(2)


def predict_head(head, x: np.ndarray) -> np.ndarray:
    return head.predict(x, batch_size=1024, verbose=0).ravel().astype(np.float64)


def _counts(splits, fit_samples, val_samples) -> dict:
    def by_class(samples):
        return {name: sum(s.label == i for s in samples) for i, name in enumerate(CLASS_NAMES)}

    out = {"fit": by_class(fit_samples), "validation": by_class(val_samples)}
    out.update({REPORT_NAMES.get(k, k): by_class(v) for k, v in splits.items() if k != "train"})
    return out


def bundle_config(config: TrainConfig, threshold: float, metrics: dict, counts: dict, seconds: float) -> dict:
    return {
        "format": "pneumo-bundle-1",
        "package_version": __version__,
        "backbone": BACKBONE,
        # What a user needs: a local weights file is only a copy of Keras' ImageNet weights.
        "backbone_weights": model.RANDOM if config.backbone_weights == model.RANDOM else "imagenet",
        "backbone_fingerprint": model.backbone_fingerprint(config.backbone_weights),
        "feature_layer": FEATURE_LAYER,
        "input_size": config.input_size,
        "class_names": list(CLASS_NAMES),
        "preprocessing_version": PREPROCESSING_VERSION,
        "threshold": threshold,
        "threshold_rule": config.threshold_rule,
        "recipe": config.recipe(),
        "command": config.command(),
        "data_counts": counts,
        "metrics": metrics,
        "training_seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def report(metrics: dict, threshold: float, rule: str, failed: list, log=print) -> None:
    log(f"threshold {threshold:.4f} (rule: {rule}, chosen on validation)")
    log(f"{'split':<12}{'n':>6}{'acc':>8}{'sens':>8}{'spec':>8}{'prec':>8}{'f1':>8}{'auc':>8}  confusion [[TN FP] [FN TP]]")
    for split, m in metrics.items():
        log(f"{split:<12}{m['n']:>6}{m['accuracy']:>8.4f}{m['sensitivity']:>8.4f}{m['specificity']:>8.4f}"
            f"{m['precision']:>8.4f}{m['f1']:>8.4f}{m['auc']:>8.4f}  {m['confusion']}")
    if failed:
        log(f"skipped {len(failed)} unreadable file(s):")
        for path, error in failed:
            log(f"  {path}: {error}")
