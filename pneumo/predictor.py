"""Inference: a bundle loaded once; prediction and Grad-CAM in one forward pass.

Used by `python -m pneumo predict/evaluate` and by the app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bundle as bundles
from . import gradcam
from .constants import CLASS_NAMES
from .images import DecodedImage, read_image, to_model_input


@dataclass
class Prediction:
    probability: float  # of pneumonia
    threshold: float
    heatmap: np.ndarray | None  # (h, w) in [0, 1] for the predicted class, or None
    pooled: np.ndarray  # backbone features (for the "is this a chest X-ray?" check)

    @property
    def label(self) -> str:
        return CLASS_NAMES[int(self.probability >= self.threshold)]

    @property
    def class_probabilities(self) -> dict[str, float]:
        return {CLASS_NAMES[0]: 1.0 - self.probability, CLASS_NAMES[1]: self.probability}

    def to_json(self) -> dict:
        return {"label": self.label, "probability": round(self.probability, 6), "threshold": round(self.threshold, 6)}


class Predictor:
    """Holds the model; call `analyze` per image or `predict_inputs` for batches."""

    def __init__(self, bundle: bundles.Bundle, full_model):
        self.bundle = bundle
        self.model = full_model
        self.threshold = bundle.threshold
        self.input_size = int(bundle.config["input_size"])
        trunk, tail = gradcam.split_at_cam_layer(full_model)
        self._cam = gradcam.make_cam_function(trunk, tail, bundle.config["input_size"])

    @classmethod
    def load(cls, source: str | os.PathLike | None = None, backbone_weights: str | None = None) -> "Predictor":
        """Load a bundle (folder, hf://USER/REPO, or env PNEUMO_MODEL / weights/) and warm it up."""
        bundle = bundles.load_bundle(source)
        full, _ = bundles.load_models(bundle, backbone_weights)
        predictor = cls(bundle, full)
        predictor.predict_inputs(np.zeros((1, *full.input_shape[1:]), np.float32))  # trace + allocate now
        return predictor

    def analyze(self, image: DecodedImage, with_cam: bool = True) -> Prediction:
        """Probability of pneumonia and (optionally) the Grad-CAM heatmap of the predicted class."""
        probs, pooled, activations, gradients = self._run(to_model_input(image, self.input_size)[None])
        probability = float(probs[0])
        heat = None
        if with_cam:
            heat = gradcam.heatmap(activations[0], gradients[0], positive=probability >= self.threshold)
        return Prediction(probability, self.threshold, heat, pooled[0])

    def predict_inputs(self, inputs: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, pooled features) for preprocessed inputs (n, size, size, 3)."""
        probs, pooled = [], []
        for start in range(0, len(inputs), batch_size):
            p, f, _, _ = self._run(inputs[start:start + batch_size])
            probs.append(p)
            pooled.append(f)
        return np.concatenate(probs), np.concatenate(pooled)

    def predict_file(self, path: str | Path) -> dict:
        """JSON-ready result for one file; raises ValueError for unreadable files."""
        prediction = self.analyze(read_image(path), with_cam=False)
        return {"file": str(path), **prediction.to_json()}

    def _run(self, batch: np.ndarray):
        logits, pooled, activations, gradients = self._cam(np.asarray(batch, np.float32))
        probs = 1.0 / (1.0 + np.exp(-logits.numpy().astype(np.float64)))
        return probs, pooled.numpy(), activations.numpy(), gradients.numpy()
