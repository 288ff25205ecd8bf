"""The Hugging Face model card (README.md) of a bundle, generated from its config."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..stats.site_rule import RULE as SITE_RULE
from .bundle import BundleConfig, Calibration, save_config
from .int8 import FP32
from .pooling import LUNG_ZONES

SITE_PLOT = "calibration.png"

SPLIT_NOTES = {
    "validation": "patients of train/ held out by patient id (used to pick the epoch and the threshold)",
    "kaggle_val": "the official 16-image val/ folder, full-resolution originals",
    "test": "the official test/ folder: patients never seen in training",
    "shift_dev": "161 images of official-test patients, for checking generalisation (a calibrated bundle's "
                 "threshold is set on them)",
}
RULES = {
    "youden": "maximise sensitivity + specificity (Youden's J) on validation",
    "balanced": "sensitivity = specificity on validation",
    "sensitivity95": "highest threshold with sensitivity >= 0.95 on validation",
    SITE_RULE: "set on a site's own films by `pneumo calibrate`",
}
DATASET = "Chest X-Ray Images (Pneumonia), Kermany et al. 2018"


def save(folder: Path, config: BundleConfig) -> None:
    """config.json and the model card (README.md) that presents it, together: how every bundle writer (training,
    a refit of the checks, calibration) stores them, so a card never describes another config."""
    save_config(folder, config)
    (folder / "README.md").write_text(model_card(config))


def spread(figure: dict) -> str:
    """A split estimate's figure as "median (p5-p95)"."""
    return f"{figure['median']:.3f} ({figure['p5']:.3f}-{figure['p95']:.3f})"


def model_card(config: BundleConfig) -> str:
    data = ModelCardData(
        library_name="keras", license="cc-by-4.0", pipeline_tag="image-classification", model_name="pneumo-vgg16",
        tags=["medical-imaging", "chest-x-ray", "pneumonia", "grad-cam", "vgg16", "pediatrics"],
        metrics=["accuracy", "recall", "specificity", "precision", "f1", "roc_auc"],
        eval_results=_eval_results(config.metrics))
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(config)}"))


def _eval_results(metrics: dict) -> list[EvalResult]:
    names = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity", "auc": "ROC AUC"}
    return [EvalResult(task_type="image-classification", task_name="Pneumonia vs normal", dataset_type="chest-xray",
                       dataset_name=DATASET, dataset_split=split, metric_type=key if key != "auc" else "roc_auc",
                       metric_name=label, metric_value=round(float(m[key]), 4))
            for split, m in metrics.items() for key, label in names.items() if m[key] == m[key]]


def _metrics_table(metrics: dict) -> str:
    rows = ["| split | images | accuracy | sensitivity | specificity | precision | F1 | ROC AUC | what it is |",
            "|---|---|---|---|---|---|---|---|---|"]
    for split, m in metrics.items():
        rows.append(f"| {split} | {m['n']} | {m['accuracy']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} "
                    f"| {m['precision']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} | {SPLIT_NOTES.get(split, '')} |")
    return "\n".join(rows)


def _counts_table(counts: dict) -> str:
    rows = ["| split | NORMAL | PNEUMONIA |", "|---|---|---|"]
    rows += [f"| {split} | {c['NORMAL']} | {c['PNEUMONIA']} |" for split, c in counts.items()]
    return "\n".join(rows)


def _head_text(head: dict) -> str:
    pooling = ("averages of block5_conv3 (14x14 positions) over each lung's upper and lower half, which the lung "
               "head finds" if head["pooling"] == LUNG_ZONES else "GlobalAveragePooling")
    decay = f", L2 {head['weight_decay']}" if head.get("weight_decay") else ""
    return f"{pooling} -> log1p -> BatchNorm -> Dense(1, sigmoid{decay})"


def _precision_text(config: BundleConfig) -> str:
    """Which trunk the heads were fitted on; an int8 trunk is served by ONNX Runtime from the stored ranges."""
    if config.trunk_precision == FP32:
        return "The trunk runs in float32.\n"
    block = config.int8
    return (f"The trunk runs in int8 (`{block['file']}`: activation ranges from {block['calibration_images']} fit "
            "films; 7-bit weights from the ImageNet ones), and every head was fitted on its features. On CPUs with "
            "VNNI (Intel since Cascade Lake, AMD since Zen 4) it takes under half the float32 time (0.45x for predict "
            "+ Grad-CAM + overlay on a 2-core AMD EPYC with AVX-512 VNNI, `python -m tools.bench`); without VNNI, "
            "about the same time.\n")


def _body(config: BundleConfig) -> str:
    recipe = config.recipe
    return f"""# pneumo-vgg16: pneumonia on pediatric chest X-rays (research demo)

A frozen ImageNet VGG16 with a small trained head ({_head_text(recipe["head"])}) that labels a frontal pediatric
chest X-ray NORMAL or PNEUMONIA, with a Grad-CAM heatmap from `block5_conv3`. Only the trained heads' weights are
here; the backbone is Keras' ImageNet VGG16 (`keras.applications.VGG16(include_top=False, weights="imagenet")`).
{_precision_text(config)}
**Not a medical device. Not for diagnosis or treatment decisions.**

## Intended use
Demonstration and research on pediatric (1-5 years) anterior-posterior chest radiographs like those of the
training data. Not for adults, lateral views, other body parts, CT, or any clinical decision.

## Metrics
Decision threshold **{config.threshold:.3f}** on the probability of pneumonia
(rule: {RULES.get(config.threshold_rule, config.threshold_rule)}). At or above it, the model says PNEUMONIA.
{_calibration_text(config.calibration)}{_band_line(config)}
{_metrics_table(config.metrics)}

![ROC](roc.png) ![Confusion matrices](confusion.png)

Validation images come from the same group of patients as training (split by patient id), so validation
figures are optimistic: frozen-backbone models of this kind lose much of their specificity on the official
test patients (normal children called pneumonia). Trust `test`/`shift_dev` rows over `validation`.

## Training data
{DATASET}, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0 (the Kaggle dataset
`paultimothymooney/chest-xray-pneumonia`). Guangzhou Women and Children's Medical Center, children aged 1-5.

{_counts_table(config.data_counts)}

Reproduce: `{config.command}` (DATA = the Kaggle folder). Recipe: `{_recipe_line(recipe)}`;
preprocessing `{config.preprocessing_version}` (grayscale, bicubic resize of the whole image to
{config.input_size}x{config.input_size} without keeping aspect, outer 10% of each side cut off and the rest
resized back, VGG16 caffe normalisation); this run took {config.training_seconds:.0f} s with
{config.backbone_passes_this_run} images through the backbone (the lung head's views not counted; the
other features came from the on-disk cache), package version {config.package_version}.

## Limitations
- One hospital, one age group: expect worse results on other hospitals, devices and ages. On adult films its
  score means nothing (measured on NIH adults: docs/safety.md): never use it there.
  With `population.npz` in the bundle, each result says whether the film is from the intended population
  (`in_population`: by the patient's age where known, else by its pixels); outside it, the answer does not apply.
{_checks_line(config)}{_lungs_line(config)}- Trained on 224x224 downsized images: fine detail is not used.
- The heatmap shows which regions drove the score, not where the disease is; it can highlight markers,
  tubes or film edges (the outer 10% of the image is cut off for that reason, but not everything is there).
- Labels are the dataset's (graded by physicians), not confirmed diagnoses.

## Use
```python
from pneumo.infer.predictor import Predictor
p = Predictor.load("hf://USER/REPO")   # or a local folder
print(p.predict_file("xray.jpeg"))
```
"""


def _calibration_text(block: Calibration | None) -> str:
    if block is None:
        return ""
    est, films = block.split_estimate, block.films
    return (f"\n**Calibrated on `{block.folder}`**: {films['PNEUMONIA']} PNEUMONIA and {films['NORMAL']} NORMAL "
            f"films ({block.patients['PNEUMONIA']} and {block.patients['NORMAL']} patients); rule: "
            f"{block.rule_text} (target sensitivity {block.target_sensitivity}). The resampled thresholds "
            f"spread {block.resampled_thresholds['p5']:.3f}-{block.resampled_thresholds['p95']:.3f}. "
            f"Expected on new patients of that site (the rule set on half of its patients and checked on the "
            f"other half, {est['splits']} splits; median and 5-95%): sensitivity {spread(est['sensitivity'])}, "
            f"specificity {spread(est['specificity'])}. The validation threshold was {block.factory_threshold:.3f}; "
            f"the table below is measured at it.\n\n![Calibration films]({SITE_PLOT})\n"
            + _site_table(block.site_checks))


def _site_table(block: dict | None) -> str:
    """The site's films as the checks saw them, before and after they learned the site (markdown)."""
    if not block:
        return ""
    rows = ["| class | scored | left out (not a chest X-ray, cut) | unlike the training children: before | after |",
            "|---|---|---|---|---|"]
    rows += [f"| {cls} | {c['scored']} | {c['left_out']} | {c['unlike_before']} | {c['unlike_after']} |"
             for cls, c in block["per_class"].items()]
    notes = site_lines(block)[len(block["per_class"]) + 1:]
    return "\n" + "\n".join(rows) + "\n\n" + "".join(f"- {line}\n" for line in notes)


def site_lines(block: dict | None) -> list[str]:
    """The per-class table of what the checks said of the site's films, before and after they learned the site."""
    if not block:
        return []
    rows = [f"{'':10s} {'scored':>7s} {'left out':>9s} {'unlike the training children: before':>38s} {'after':>6s}"]
    rows += [f"{cls:10s} {c['scored']:7d} {c['left_out']:9d} {c['unlike_before']:38d} {c['unlike_after']:6d}"
             for cls, c in block["per_class"].items()]
    population = block["population"]
    if population.get("extended"):
        adults = population["held_out_adults"]
        rows.append(f"the population check now takes this site's films as children (films unlike the training "
                    f"children are expected from a new site: the folder says they are its children); held-out adults "
                    f"flagged {adults['flagged_before']:.0%} before, {adults['flagged_after']:.0%} after "
                    f"({adults['films']} films)")
    elif population:
        why = population.get("why") or (f"with it only {population['held_out_adults']['flagged_after']:.0%} of the "
                                        "held-out adults would stay flagged")
        rows.append(f"the population check is kept as it was: {why}")
    if block["chest"]["films_added"]:
        rows.append(f"the chest X-ray check's reference: {block['chest']['reference_films']} films + "
                    f"{block['chest']['films_added']} of this site")
    return rows


def _recipe_line(recipe: dict) -> str:
    keys = ("views", "heads", "epochs", "learning_rate", "val_fraction", "seed")
    return ", ".join(f"{k}={recipe[k]}" for k in keys if k in recipe)


def _band_line(config: BundleConfig) -> str:
    stats = config.borderline_validation or config.borderline_site
    if not stats:
        return ""
    low, high = stats["band"]
    films = "validation patients" if config.borderline_validation is not None else "calibration patients"
    line = (f"\nBorderline band **{low:.3f}-{high:.3f}**, on both sides of the threshold: a threshold set the same "
            f"way on another sample of the {films} (5th-95th percentile over resamples) could put a score there on "
            f"the other side. It holds {stats['inside']} of {stats['n']} of their films; the decision is right for "
            f"{stats['accuracy_inside']:.0%} of those and {stats['accuracy_outside']:.0%} of the rest.")
    split = config.calibration.split_estimate.get("borderline") if config.calibration else None
    if split:
        line += (f" Set on half of the calibration patients and checked on the other half, it held "
                 f"{split['inside_share']:.0%} of the films, right {split['accuracy_inside']:.0%} inside against "
                 f"{split['accuracy_outside']:.0%} outside.")
    return line + "\n"


def _checks_line(config: BundleConfig) -> str:
    """The two checks' measurements on films they were not fitted on (train/checks.py)."""
    chest, people = config.chest_check, config.population
    lines = ""
    if chest:
        held = "; ".join(f"{name} {v['flagged']} of {v['films']}" for name, v in chest["held_out_flagged"].items())
        lines += (f"- The chest X-ray check (`{chest['file']}`) was fitted on chest films of several hospitals "
                  f"({', '.join(f'{n} {k}' for n, k in chest['fit_films'].items())}). Chest films it was not fitted "
                  f"on, flagged \"not a chest X-ray\": {held}.")
        caught = chest.get("not_chest_caught_by_score")
        if caught:
            lines += (f" Radiographs of other body parts caught by its score alone: {caught['flagged']} of "
                      f"{caught['films']}.")
        lines += "\n"
    if people:
        lines += f"- The population check: {people['summary']}.\n"
    if config.checks_refit:
        refit = config.checks_refit
        lines += f"- Both checks were refit on {refit['created'][:10]}: `{refit['command']}`.\n"
    return lines


def _lungs_line(config: BundleConfig) -> str:
    stats = config.lungs
    if not stats:
        return ""
    verdict = ("The pneumonia head reads only the lung fields it finds." if config.head["pooling"] == LUNG_ZONES
               else "It does not change the verdict.")
    return (f"- The lung-field head (`{stats['file']}`, a small decoder on the same VGG16 pass) was trained on "
            f"{stats['fit_pairs']} adult films with lung masks; Dice on {stats['heldout_pairs']} held-out films "
            f"{stats['heldout_dice_mean']:.2f} (min {stats['heldout_dice_min']:.2f}). Each result reports the share "
            f"of the heatmap inside the lungs (`heat_in_lungs`), and a film where no pair of lungs is found gets the "
            f"\"may not be a chest X-ray\" warning. {verdict}\n")
