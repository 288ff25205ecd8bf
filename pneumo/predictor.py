"""Inference: a bundle loaded once; prediction and Grad-CAM in one forward pass.

Used by `python -m pneumo predict/evaluate` and by the app.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bundle as bundles
from . import gradcam, ood, population
from .constants import CLASS_NAMES
from .images import DecodedImage, read_image, to_model_input


@dataclass
class Prediction:
    probability: float  # of pneumonia
    threshold: float
    heatmap: np.ndarray | None  # (h, w) in [0, 1] for the predicted class, or None
    pooled: np.ndarray  # backbone features (for the "is this a chest X-ray?" and population checks)
    chest_reasons: list[str] = field(default_factory=list)  # why it may not be a chest X-ray
    population_reasons: list[str] = field(default_factory=list)  # why it may not be a child's film

    @property
    def looks_like_chest_xray(self) -> bool:
        return not self.chest_reasons

    @property
    def in_population(self) -> bool:
        return not self.population_reasons

    @property
    def assessed(self) -> bool:
        """The model's answer applies: a chest X-ray from the population it was trained on."""
        return self.looks_like_chest_xray and self.in_population

    @property
    def warnings(self) -> list[str]:
        """Plain sentences, one per failed check."""
        out = []
        if self.chest_reasons:
            out.append(f"This may not be a frontal chest X-ray: {'; '.join(self.chest_reasons)}.")
        if self.population_reasons:
            out.append(population.sentence(self.population_reasons))
        return out

    @property
    def label(self) -> str:
        return CLASS_NAMES[int(self.probability >= self.threshold)]

    @property
    def class_probabilities(self) -> dict[str, float]:
        return {CLASS_NAMES[0]: 1.0 - self.probability, CLASS_NAMES[1]: self.probability}

    def to_json(self) -> dict:
        return {"label": self.label, "probability": round(self.probability, 6), "threshold": round(self.threshold, 6),
                "assessed": self.assessed, "looks_like_chest_xray": self.looks_like_chest_xray,
                "in_population": self.in_population, "warnings": self.warnings}


BACKENDS = ("onnx", "tf")


def default_backend() -> str:
    """ONNX Runtime when installed (faster on CPU, see `python -m pneumo bench`), else TensorFlow."""
    choice = os.environ.get("PNEUMO_BACKEND")
    if choice:
        if choice not in BACKENDS:
            raise ValueError(f"PNEUMO_BACKEND must be one of {BACKENDS}, got '{choice}'.")
        return choice
    try:
        import onnxruntime  # noqa: F401

        return "onnx"
    except ImportError:
        return "tf"


class Predictor:
    """Holds the model; call `analyze` per image or `predict_inputs` for batches.

    Both backends run the trunk (image -> block5_conv3) once per image and get
    the logit and Grad-CAM weights from the same activations: "tf" with a
    GradientTape over the tail only, "onnx" with ONNX Runtime and the head's
    closed-form gradient (gradcam.NumpyHead). They agree to ~1e-6 (tested).
    """

    def __init__(self, bundle: bundles.Bundle, full_model, backend: str | None = None):
        self.bundle = bundle
        self.model = full_model
        self.threshold = bundle.threshold
        band = bundle.config.get("borderline")  # absent from bundles made before it
        self.borderline: tuple[float, float] | None = tuple(band) if band else None
        self.input_size = int(bundle.config["input_size"])
        self.gaussian = bundle.feature_gaussian()
        self.population = bundle.population_check()
        self.backend = backend or default_backend()
        if self.backend == "onnx":
            from .onnx_trunk import OnnxTrunk, trunk_to_onnx

            self._trunk = OnnxTrunk(trunk_to_onnx(full_model))
            self._head = gradcam.NumpyHead(full_model)
        elif self.backend == "tf":
            self._cam = gradcam.make_cam_function(*gradcam.split_at_cam_layer(full_model), self.input_size)
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, got '{self.backend}'.")

    @classmethod
    def load(cls, source: str | os.PathLike | None = None, backbone_weights: str | None = None,
             backend: str | None = None) -> Predictor:
        """Load a bundle (folder, hf://USER/REPO, or env PNEUMO_MODEL / weights/) and warm it up."""
        bundle = bundles.load_bundle(source)
        full, _ = bundles.load_models(bundle, backbone_weights)
        predictor = cls(bundle, full, backend)
        predictor.predict_inputs(np.zeros((1, *full.input_shape[1:]), np.float32))  # trace + allocate now
        return predictor

    def analyze(self, image: DecodedImage, with_cam: bool = True) -> Prediction:
        """Probability of pneumonia and (optionally) the Grad-CAM heatmap of the predicted class."""
        probs, pooled, activations, weights = self._run(to_model_input(image, self.input_size)[None])
        probability = float(probs[0])
        heat = None
        if with_cam:
            heat = gradcam.heatmap_from_weights(activations[0], weights[0], positive=probability >= self.threshold)
        return self.prediction(image, probability, pooled[0], heat)

    def prediction(self, image: DecodedImage, probability: float, pooled: np.ndarray,
                   heat: np.ndarray | None = None) -> Prediction:
        """A Prediction with both checks run: is it a chest X-ray, is it from the pediatric population."""
        return Prediction(probability, self.threshold, heat, pooled, ood.check(image, pooled, self.gaussian),
                          population.reasons(image, pooled[None], self.population))

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
        """(probabilities, pooled features, activations, Grad-CAM channel weights) for a batch."""
        batch = np.asarray(batch, np.float32)
        if self.backend == "onnx":
            activations = self._trunk(batch)
            pooled = gradcam.pool_activations(activations)
            logits, grad_pooled = self._head(pooled)
            weights = grad_pooled / (activations.shape[1] * activations.shape[2])
        else:
            logits, pooled, activations, gradients = (t.numpy() for t in self._cam(batch))
            weights = gradients.mean(axis=(1, 2))
        probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
        return probs, pooled, activations, weights
