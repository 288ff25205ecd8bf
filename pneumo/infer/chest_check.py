""""Is this a frontal chest X-ray?" — a warning, not a diagnosis.

Three kinds of evidence, each of which can say "no":
- cheap checks on the decoded image: colour (radiographs are gray), extreme aspect ratios, a DICOM modality that is
  not a radiograph, a DICOM view that is lateral;
- the lung-field head (lung_fields.lung_reasons): no plausible pair of lungs;
- the content: how far the pooled VGG16 features lie from chest X-rays of several hospitals (a Mahalanobis
  distance under one Gaussian fitted on children of the training hospital and adults of others), less how well the
  lung map matches where lungs usually lie in the view. A film whose lungs sit where lungs sit may be further
  from the films seen so far (another hospital, another age) than one whose lung map looks like nothing; a hand or
  a pelvis is both far and lungless. The cut-off is set on chest films of every source that the Gaussian was not
  fitted on, so that few chest films of any of them are refused (docs/safety.md).
The model's probability is meaningless for images this check flags (a photo of a cat gets a number too).
The bundle keeps what the Gaussian was fitted on as counts, mean and covariance (`Reference`), so `pneumo calibrate`
can add a site's chest films to it (`with_site`) without the training data; the cut-off stays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..io.image import DecodedImage

MAX_COLOURFULNESS = 12.0  # gray radiographs score ~0; scanned film with a tint stays below ~10
ASPECT_RANGE = (0.45, 2.2)  # width / height; pediatric AP films in the data span ~0.7-1.8
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL"}  # DICOM ViewPosition codes of a lateral projection
CHEST_FILE = "ood.npz"
VERSION = "chest-gauss-log1p-gap-minus-lungcorr-v2"  # bump when the score changes: older files are refused
SHRINKAGE = 0.1  # towards the diagonal: 512 dimensions from a few thousand films are noisy
FAR = "its content is unlike the chest X-rays the model knows"


def _log_features(features: np.ndarray) -> np.ndarray:
    # Pooled ReLU features are heavy-tailed; log1p makes them closer to Gaussian.
    return np.log1p(np.maximum(np.atleast_2d(features), 0).astype(np.float64))


@dataclass(frozen=True)
class Reference:
    """What the Gaussian and the lung template were fitted on, kept so that a site's films can be added."""
    count: int  # films
    mean: np.ndarray  # (d,) of the log features
    cov: np.ndarray  # (d, d) their covariance, not shrunk
    template: np.ndarray | None  # the mean of the sources' mean lung signatures
    sources: int  # how many sources the template averages


def _precision(cov: np.ndarray) -> np.ndarray:
    shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(cov))
    return np.linalg.inv(shrunk)


@dataclass
class ChestCheck:
    mean: np.ndarray  # (d,) of the log features
    precision: np.ndarray  # (d, d) inverse of the shrunk covariance
    template: np.ndarray | None  # (cells,) mean lung signature of chest films; None: a bundle without a lung head
    cutoff: float  # scores above it are flagged
    percentile: float  # of each held-out source's scores; the cut-off is the highest of them
    reference: Reference | None = None  # absent from bundles made before it: then no site can be added
    site_films: int = 0  # a calibrated site's chest films added to the reference

    @classmethod
    def fit(cls, fit: list[tuple[np.ndarray, np.ndarray | None]], held_out: dict[str, tuple],
            percentile: float = 99.5) -> ChestCheck:
        """`fit`: (features, lung signatures or None) of chest films per source, what the Gaussian and the template
        are fitted on; `held_out`: {source: (features, signatures)} of other chest films, where the cut-off is set."""
        if not fit or not held_out or any(len(f) == 0 for f, _ in [*fit, *held_out.values()]):
            raise ValueError("the chest X-ray check needs chest films to fit on and held-out chest films of each "
                             f"source; got {[len(f) for f, _ in fit]} and "
                             f"{ {k: len(f) for k, (f, _) in held_out.items()} }.")
        x = _log_features(np.concatenate([f for f, _ in fit]))
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        # Each source's films weigh alike in "where lungs lie", whatever their numbers.
        signatures = [s for _, s in fit]
        template = None if any(s is None for s in signatures) else np.mean([s.mean(axis=0) for s in signatures], 0)
        reference = Reference(len(x), mean, cov, template, len(signatures))
        check = cls(mean, _precision(cov), template, float("inf"), percentile, reference)
        check.cutoff = max(float(np.percentile(check.score(*pair), percentile)) for pair in held_out.values())
        return check

    def with_site(self, features: np.ndarray, signatures: np.ndarray | None) -> ChestCheck:
        """A copy whose Gaussian is fitted on the reference's films and these (a site's chest films), with the site
        as one more source of the lung template; the cut-off is kept. A site added before is replaced."""
        ref = self.reference
        if ref is None:
            raise ValueError("this bundle's chest X-ray check keeps no reference statistics, so it cannot add a "
                             "site's films; refit its checks with train.py --refit-checks BUNDLE.")
        x = _log_features(features)
        n, total = len(x), ref.count + len(x)
        site_mean = x.mean(axis=0)
        gap = (site_mean - ref.mean)[:, None]
        scatter = (ref.count - 1) * ref.cov + (x - site_mean).T @ (x - site_mean) + gap @ gap.T * ref.count * n / total
        template = ref.template
        if template is not None and signatures is not None:
            template = (ref.sources * template + np.asarray(signatures).mean(axis=0)) / (ref.sources + 1)
        return replace(self, mean=(ref.count * ref.mean + n * site_mean) / total,
                       precision=_precision(scatter / (total - 1)), template=template, site_films=n)

    def without_site(self) -> ChestCheck:
        """The check as training left it (the reference alone)."""
        ref = self.reference
        return replace(self, mean=ref.mean, precision=_precision(ref.cov), template=ref.template, site_films=0)

    def distance(self, features: np.ndarray) -> np.ndarray:
        x = _log_features(features) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", x, self.precision, x))

    def lung_match(self, signatures: np.ndarray | None) -> np.ndarray | float:
        """Correlation of each lung signature with the template (0 without a template)."""
        if self.template is None or signatures is None:
            return 0.0
        a = np.atleast_2d(signatures).astype(np.float64)
        a = a - a.mean(axis=1, keepdims=True)
        b = self.template - self.template.mean()
        return a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b) + 1e-9)

    def score(self, features: np.ndarray, signatures: np.ndarray | None = None) -> np.ndarray:
        """log(distance) - lung match: above the cut-off, unlike a chest X-ray."""
        return np.log(self.distance(features) + 1e-9) - self.lung_match(signatures)

    def save(self, path: Path) -> None:
        ref = self.reference
        extra = {} if ref is None else {
            "reference_count": ref.count, "reference_mean": ref.mean, "reference_cov": ref.cov.astype(np.float32),
            "reference_sources": ref.sources, "reference_template": np.zeros(0) if ref.template is None
            else ref.template}
        np.savez(path, mean=self.mean, precision=self.precision.astype(np.float32), cutoff=self.cutoff,
                 percentile=self.percentile, version=VERSION, site_films=self.site_films,
                 template=np.zeros(0) if self.template is None else self.template, **extra)

    @classmethod
    def load(cls, path: Path) -> ChestCheck:
        with np.load(path) as f:
            version = str(f["version"]) if "version" in f else "none"
            if version != VERSION:
                raise ValueError(f"'{path}' holds a chest X-ray check of version {version!r}; this package reads "
                                 f"{VERSION!r}. Refit the checks with train.py --refit-checks, or retrain.")
            reference = None
            if "reference_cov" in f:
                kept = f["reference_template"].astype(np.float64)
                reference = Reference(int(f["reference_count"]), f["reference_mean"].astype(np.float64),
                                      f["reference_cov"].astype(np.float64), kept if kept.size else None,
                                      int(f["reference_sources"]))
            template = f["template"].astype(np.float64)
            return cls(f["mean"].astype(np.float64), f["precision"].astype(np.float64),
                       template if template.size else None, float(f["cutoff"]), float(f["percentile"]), reference,
                       int(f["site_films"]) if "site_films" in f else 0)


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
    if str(image.info.get("ViewPosition", "")).strip().upper() in LATERAL_VIEWS:
        reasons.append("the DICOM header says it is a lateral view")
    return reasons


def check(image: DecodedImage, features: np.ndarray, signature: np.ndarray | None,
          chest: ChestCheck | None) -> list[str]:
    """Reasons the image does not look like a frontal chest X-ray (empty list: looks like one)."""
    reasons = image_reasons(image)
    if chest is not None and float(chest.score(features, signature)[0]) > chest.cutoff:
        reasons.append(FAR)
    return reasons
