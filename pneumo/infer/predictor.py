"""Inference: a bundle loaded once; prediction, both checks and Grad-CAM from one forward pass.

Used by `python -m pneumo predict/evaluate`, by the app and by the tools. `predict_paths` batches a
list of files through the model, with unreadable files reported in place, not fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import CAM_LAYER, CLASS_NAMES
from ..hub import resolve_source
from ..io import DecodedImage, read_image
from ..model import backends
from ..model import bundle as bundles
from ..model.pooling import lung_signature
from ..preprocess import to_model_input
from . import age, chest_check, gradcam, lung_fields, population

BATCH = 16
CROPPED = "Cropped film? Upload the whole film as exported"


@dataclass(kw_only=True)
class Prediction:
    probability: float  # of pneumonia
    threshold: float
    heatmap: np.ndarray | None  # (h, w) in [0, 1] for the predicted class, or None
    check_features: np.ndarray  # global average of block5_pool, what the "chest X-ray?" and population checks read
    chest_reasons: list[str] = field(default_factory=list)  # why it may not be a frontal chest X-ray
    framing_reasons: list[str] = field(default_factory=list)  # why it may be a crop of the film, not all of it
    pixels_unlike: bool = False  # the population check's pixels: unlike the training children
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the decoded image the heatmap belongs to
    lungs: np.ndarray | None = None  # lung-field probability over the model's view, if the bundle has the head
    signature: np.ndarray | None = None  # the lung map pooled on block5_conv3's grid, what the chest check reads
    reads_lungs_only: bool = False  # the model pools block5_conv3 over the lung zones (not --pooling gap)
    threshold_source: str = "validation"  # or "calibrated: <folder>, <n> films" (Bundle.threshold_source)
    band: tuple[float, float]  # the bundle's borderline band
    declared_age: float | None = None  # years, as the user gave it
    header_age: float | None = None  # years, from the DICOM header

    def with_age(self, declared: float | None) -> Prediction:
        """The same film with another declared age: only the population answer changes, no model pass."""
        return replace(self, declared_age=declared)

    @cached_property
    def population(self) -> age.Answer:
        return age.decide(self.pixels_unlike, self.declared_age, self.header_age)

    @cached_property
    def lung_fields(self) -> np.ndarray | None:
        """The lung fields (0/1 over the model's view) the heat share, the outline and the area are taken on."""
        return None if self.lungs is None else lung_fields.lung_fields(self.lungs)

    @cached_property
    def heat_in_lungs(self) -> float | None:
        """Share of the heatmap inside the lung fields (None without a heatmap or a lung head)."""
        if self.heatmap is None or self.lung_fields is None:
            return None
        return lung_fields.heat_in_lungs(self.heatmap, self.lung_fields)

    @property
    def looks_like_chest_xray(self) -> bool:
        return not self.chest_reasons

    @property
    def in_population(self) -> bool:
        return not self.population.reasons

    @property
    def looks_cropped(self) -> bool:
        return bool(self.framing_reasons)

    @property
    def assessed(self) -> bool:
        """The model's answer applies: a whole frontal chest X-ray of a patient in the intended population."""
        return self.looks_like_chest_xray and not self.looks_cropped and self.in_population

    @property
    def failed_check(self) -> str | None:
        """The check that explains why the answer does not apply: "chest", "framing", "population" or None.

        "Not a chest X-ray" comes first: then nothing else means anything (a photo has no age). A crop comes before
        the population: cut films look unlike the training children more often (docs/safety.md#framing)."""
        if self.chest_reasons:
            return "chest"
        if self.framing_reasons:
            return "framing"
        return "population" if self.population.reasons else None

    @property
    def reasons(self) -> list[str]:
        """The reasons of the failed check."""
        return {"chest": list(self.chest_reasons), "framing": list(self.framing_reasons),
                "population": list(self.population.reasons)}.get(self.failed_check, [])

    @property
    def warnings(self) -> list[str]:
        """Why the answer does not apply, in one sentence (the failed check's); or, for an answer that applies,
        the cautions it comes with."""
        if self.failed_check == "chest":
            return [f"This may not be a frontal chest X-ray: {'; '.join(self.reasons)}."]
        if self.failed_check == "framing":
            return [f"{CROPPED}: {'; '.join(self.reasons)}."]
        if self.failed_check == "population":
            return [self.population.sentence]
        return list(self.population.cautions)

    @property
    def side(self) -> str:
        """The side of the threshold the score falls on (also what the heatmap explains); `verdict` is the answer."""
        return CLASS_NAMES[int(self.probability >= self.threshold)]

    @property
    def verdict(self) -> str | None:
        """NORMAL or PNEUMONIA where the model applies, else None: a script cannot mistake it for a finding."""
        return self.side if self.assessed else None

    @property
    def borderline(self) -> bool | None:
        """The score lies in the band around the threshold, on either side, where a threshold set the same way on
        other patients could call it the other way (None: not assessed)."""
        if not self.assessed:
            return None
        return self.band[0] <= self.probability <= self.band[1]

    def to_json(self) -> dict:
        """What a script reads. Where the model's answer does not apply, nothing of it is given: the score, the band
        flag and the heat share are null (never a number to misread), and so is the population check of an image
        that is not a chest X-ray (a photo has no population)."""
        assessed = self.assessed
        return {"label": self.verdict, "probability": round(self.probability, 6) if assessed else None,
                "threshold": round(self.threshold, 6), "threshold_source": self.threshold_source,
                "borderline": self.borderline,
                "assessed": assessed, "looks_like_chest_xray": self.looks_like_chest_xray,
                "looks_cropped": None if self.chest_reasons else self.looks_cropped,
                "in_population": None if self.chest_reasons else self.in_population, "warnings": self.warnings,
                "heat_in_lungs": None if self.heat_in_lungs is None or not assessed else round(self.heat_in_lungs, 4),
                "age": None if self.population.age is None else round(self.population.age, 1),
                "age_source": self.population.source}


class Predictor:
    """Holds the model; call `analyze` per image, `predict_inputs` for batches of model inputs."""

    def __init__(self, bundle: bundles.Bundle, full_model, backend: str | None = None, decoder=None):
        self.bundle = bundle
        self.model = full_model
        self.threshold = bundle.threshold
        self.band: tuple[float, float] = tuple(bundle.config.borderline)
        self.input_size = int(bundle.config.input_size)
        self.grid = tuple(full_model.get_layer(CAM_LAYER).output.shape[1:3])  # block5_conv3's: the lung signature's
        # Training always writes the chest check; a bundle can serve without it (the tests' spread bundle does).
        chest_file = bundle.optional_file(chest_check.CHEST_FILE)
        self.chest = chest_check.ChestCheck.load(chest_file) if chest_file else None
        population_file = bundle.optional_file(population.POPULATION_FILE)
        self.population_check = population.PopulationCheck.load(population_file) if population_file else None
        self.decoder = decoder if decoder is not None else bundles.load_lung_decoder(bundle)
        self.reads_lungs_only = backends.reads_lung_zones(full_model)
        self._run = backends.make_runner(full_model, backend, self.decoder, bundles.load_int8_ranges(bundle))
        self.backend = self._run.name

    @classmethod
    def load(cls, source: str | os.PathLike | None = None, backbone_weights: str | None = None,
             backend: str | None = None) -> Predictor:
        """Load a bundle (folder, hf://USER/REPO, or env PNEUMO_MODEL / weights/) and warm it up."""
        bundle = bundles.load_bundle(resolve_source(source))
        decoder = bundles.load_lung_decoder(bundle)  # one decoder: the lung map shown is the one the model pooled over
        full = bundles.load_full_model(bundle, backbone_weights, decoder)
        predictor = cls(bundle, full, backend, decoder)
        predictor.predict_inputs(np.zeros((1, *full.input_shape[1:]), np.float32))  # trace + allocate now
        return predictor

    def analyze(self, image: DecodedImage, with_cam: bool = True, declared_age: float | None = None) -> Prediction:
        """Probability of pneumonia and (optionally) the Grad-CAM heatmap of the predicted class."""
        return self.predictions([image], to_model_input(image, self.input_size)[None], with_cam, declared_age)[0]

    def prediction(self, image: DecodedImage, probability: float, check_features: np.ndarray,
                   heat: np.ndarray | None = None, lung_map: np.ndarray | None = None,
                   declared_age: float | None = None) -> Prediction:
        """A Prediction with both checks run: is it a chest X-ray (with lungs in it), is it from the pediatric
        population (by age where known, else by its pixels)."""
        signature = None if lung_map is None else lung_signature(lung_map[None], self.grid)
        chest = chest_check.check(image, check_features[None], signature, self.chest)
        chest += lung_fields.lung_reasons(lung_map) if lung_map is not None else []
        framing = lung_fields.framing_reasons(lung_map) if lung_map is not None else []
        unlike = self.population_check is not None and bool(self.population_check.flags(check_features[None])[0])
        return Prediction(probability=probability, threshold=self.threshold, heatmap=heat,
                          check_features=check_features, chest_reasons=chest, framing_reasons=framing,
                          pixels_unlike=unlike, image_size=image.size, lungs=lung_map,
                          signature=None if signature is None else signature[0],
                          reads_lungs_only=self.reads_lungs_only, threshold_source=self.bundle.threshold_source,
                          band=self.band, declared_age=declared_age, header_age=image.info.get("age_years"))

    def predict_inputs(self, inputs: np.ndarray, batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, the checks' features) for preprocessed inputs (n, size, size, 3)."""
        probs, features = [], []
        for start in range(0, len(inputs), batch_size):
            run = self._run(np.asarray(inputs[start:start + batch_size], np.float32))
            probs.append(run.probs)
            features.append(run.check_features)
        return np.concatenate(probs), np.concatenate(features)

    def predictions(self, images: list[DecodedImage], inputs: np.ndarray, with_cam: bool = False,
                    declared_age: float | None = None) -> list[Prediction]:
        """Predictions (with both checks, and heatmaps if asked) for a batch of decoded images and their inputs."""
        run = self._run(np.asarray(inputs, np.float32))
        out = []
        for k, image in enumerate(images):
            heat = gradcam.heatmap_from_weights(run.activations[k], run.weights[k], run.probs[k] >= self.threshold,
                                                None if run.positions is None else run.positions[k]) \
                if with_cam else None
            out.append(self.prediction(image, float(run.probs[k]), run.check_features[k], heat,
                                       None if run.lungs is None else run.lungs[k], declared_age))
        return out

    def predict_file(self, path: str | Path, declared_age: float | None = None) -> dict:
        """JSON-ready result for one file; raises ValueError for unreadable files."""
        prediction = self.analyze(read_image(path), with_cam=False, declared_age=declared_age)
        return {"file": str(path), **prediction.to_json()}


def decode_batches(paths: list[Path], desc: str, size: int):
    """Yield lists of (path, decoded image, model input) or (path, None, error message), BATCH at a time."""
    batch = []
    for path in tqdm(paths, desc=desc, unit="img", disable=len(paths) < 2 * BATCH):
        try:
            image = read_image(path)
            batch.append((path, image, to_model_input(image, size)))
        except ValueError as err:
            batch.append((path, None, str(err)))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_paths(predictor: Predictor, paths: list[Path], desc: str = "predict", with_cam: bool = False,
                  declared_age: float | None = None):
    """Yield (path, Prediction or None, error or None) in input order, batching the model calls.

    `with_cam`: each Prediction also carries its Grad-CAM heatmap (from the same forward pass); `declared_age`: the
    patients' age in years, for every file."""
    for batch in decode_batches(paths, desc, predictor.input_size):
        good = [item for item in batch if item[1] is not None]
        found = predictor.predictions([image for _, image, _ in good], np.stack([x for *_, x in good]), with_cam,
                                      declared_age) if good else []
        results = {id(item): prediction for item, prediction in zip(good, found)}
        for item in batch:
            yield (item[0], None, item[2]) if item[1] is None else (item[0], results[id(item)], None)
