"""ROC and confusion-matrix figures, written as PNGs for the bundle and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import CLASS_NAMES
from ..stats.metrics import roc_curve

# matplotlib is imported where a figure is drawn (0.5 s: `python -c 'import matplotlib.pyplot'`).

if TYPE_CHECKING:
    from .bundle import BundleConfig


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and Spaces
    import matplotlib.pyplot as plt

    return plt


def save_roc(predictions: dict[str, tuple[np.ndarray, np.ndarray]], metrics: dict[str, dict], path: Path) -> None:
    """One ROC curve per split, each with its operating point at the stored threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    for split, (y, p) in predictions.items():
        fpr, tpr, _ = roc_curve(y, p)
        m = metrics[split]
        line, = ax.plot(fpr, tpr, label=f"{split} (n={m['n']}, AUC {m['auc']:.3f})")
        ax.plot(1 - m["specificity"], m["sensitivity"], "o", color=line.get_color())
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="1 - specificity (normal called pneumonia)", ylabel="sensitivity",
           title="ROC; dots = operating threshold", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_confusion(metrics: dict[str, dict], path: Path) -> None:
    """Confusion matrices side by side, one per split, with counts and row percentages."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), dpi=110, squeeze=False)
    for ax, (split, m) in zip(axes[0], metrics.items()):
        matrix = np.array(m["confusion"], dtype=float)
        rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(matrix[i, j])}\n{rows[i, j]:.0%}", ha="center", va="center",
                        color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xticks([0, 1], CLASS_NAMES)
        ax.set_yticks([0, 1], CLASS_NAMES)
        ax.set(xlabel="predicted", ylabel="true", title=f"{split} (acc {m['accuracy']:.3f})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_site_scores(site, config: BundleConfig, path: Path) -> None:
    """The site's scores by class (log-odds axis: most films sit near 0 or 1), the validation threshold, the
    calibrated one and the spread of the resampled thresholds it was chosen from."""
    plt = _pyplot()
    block = config.calibration
    logit = np.log(np.clip(site.scores, 1e-6, 1 - 1e-6) / np.clip(1 - site.scores, 1e-6, 1))
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    bins = np.linspace(-14, 14, 57)
    for positive, colour in ((False, "#2b7bba"), (True, "#d7301f")):
        ax.hist(logit[site.labels == positive], bins=bins, alpha=0.6, color=colour,
                label=f"{CLASS_NAMES[int(positive)]} ({int((site.labels == positive).sum())} films)")
    spread = block.resampled_thresholds
    ax.axvspan(*(np.log(v / (1 - v)) for v in (spread["p5"], spread["p95"])), color="gray", alpha=0.15,
               label="plain-rule threshold over patient resamples, 5-95%")
    lines = ((block.factory_threshold, ":", "validation"), (config.threshold, "-", "calibrated"))
    for value, style, name in lines:
        ax.axvline(np.log(value / (1 - value)), color="black", linestyle=style, label=f"{name} {value:.3f}")
    ticks = np.array([0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
    ax.set_xticks(np.log(ticks / (1 - ticks)), [f"{t:g}" for t in ticks])
    ax.set(xlabel="pneumonia score", ylabel="films", title=f"Calibration films: {block.folder}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
