""""Does this look like a frontal chest X-ray?" — a warning, not a diagnosis.

Two kinds of evidence:
- cheap checks on the decoded image: colour (radiographs are gray), extreme aspect ratios;
- distance of the image's pooled VGG16 features from the training X-rays: a Gaussian fitted on the
  training features, Mahalanobis distance with a shrunk covariance; the cut-off is a high percentile of
  the validation patients' distances, so few real chest X-rays are flagged.
The model's probability is meaningless for images this check flags (a photo of a cat gets a number too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.image import DecodedImage

MAX_COLOURFULNESS = 12.0  # gray radiographs score ~0; scanned film with a tint stays below ~10
ASPECT_RANGE = (0.45, 2.2)  # width / height; pediatric AP films in the data span ~0.7-1.8
OOD_FILE = "ood.npz"


@dataclass
class FeatureGaussian:
    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d) inverse of the shrunk covariance
    cutoff: float  # Mahalanobis distance above which an image is flagged
    percentile: float

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, percentile: float = 99.5,
            shrinkage: float = 0.1) -> FeatureGaussian:
        """Gaussian on `train_features`; cut-off at `percentile` of the validation distances."""
        x = np.log1p(np.maximum(train_features, 0).astype(np.float64))  # pooled ReLU features are skewed
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        # Shrink towards the diagonal: 512 dimensions from a few thousand images are noisy.
        cov = (1 - shrinkage) * cov + shrinkage * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(mean))
        model = cls(mean, np.linalg.inv(cov), float("inf"), percentile)
        model.cutoff = float(np.percentile(model.distance(val_features), percentile))
        return model

    def distance(self, features: np.ndarray) -> np.ndarray:
        x = np.log1p(np.maximum(np.atleast_2d(features), 0).astype(np.float64)) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", x, self.precision, x))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean.astype(np.float32), precision=self.precision.astype(np.float32),
                 cutoff=self.cutoff, percentile=self.percentile)

    @classmethod
    def load(cls, path: Path) -> FeatureGaussian:
        with np.load(path) as f:
            return cls(f["mean"].astype(np.float64), f["precision"].astype(np.float64), float(f["cutoff"]),
                       float(f["percentile"]))


def image_reasons(image: DecodedImage) -> list[str]:
    """Cheap checks that need no model."""
    reasons = []
    if image.colourfulness > MAX_COLOURFULNESS:
        reasons.append("it is a colour image; radiographs are grayscale")
    width, height = image.size
    if not ASPECT_RANGE[0] <= width / height <= ASPECT_RANGE[1]:
        reasons.append(f"its shape ({width}x{height}) is unlike a chest radiograph")
    modality = str(image.info.get("Modality", "")).upper()
    if modality and modality not in ("CR", "DX", "DR", "RG", "OT"):
        reasons.append(f"the DICOM modality is {modality}, not a radiograph (CR/DX)")
    return reasons


# The one reason that is not specific to "not a chest X-ray": adults' chest films are far from the training films
# too, so when the population check also fails, "Adult film?" is the better headline (Prediction.failed_check).
FAR = "its content is far from the pediatric chest X-rays the model was trained on"


def check(image: DecodedImage, features: np.ndarray, gaussian: FeatureGaussian | None) -> list[str]:
    """Reasons the image does not look like the training chest X-rays (empty list: looks fine)."""
    reasons = image_reasons(image)
    if gaussian is not None and float(gaussian.distance(features)[0]) > gaussian.cutoff:
        reasons.append(FAR)
    return reasons
