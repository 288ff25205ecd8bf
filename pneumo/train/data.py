"""Every film a training run reads, found and split once, before any model work.

- Kaggle's train/ is split by patient (seeded) into fit and validation patients: the head learns on the first,
  the threshold, the early stop and the checks' cut-offs are set on the second.
- val/, test/ and every --report folder are only measured.
- The chest films of other hospitals (the adult folders, whatever the patients' ages, and the lung-mask images)
  are split by patient into the checks' fit and held-out halves.
- Of the adult folders, films of patients under 18 (by the folder's metadata.csv, where there is one) are no
  adults: the population check never fits on them, it is measured on them.
- Radiographs of other body parts are only measured.

Tools that measure a bundle call `find_data` with its recipe's seed and shares, so they see the split its
training run saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import CLASS_NAMES
from ..io import folders
from ..io.folders import Sample

ADULT_AGE = 18.0
ADULT_FOLDERS, LUNG_MASK_IMAGES = "adult folders", "lung-mask images"
LUNG_MASK_HOLDOUT = 0.5  # the lung-mask images' share held out of the chest X-ray check
KAGGLE_NAMES = {"val": "kaggle_val", "test": "test"}  # Kaggle's val/ is 16 films, not our validation patients


@dataclass(frozen=True)
class TrainingData:
    train: list[Sample]  # Kaggle's train/, every film
    fit: list[Sample]  # its fit patients
    validation: list[Sample]  # its validation patients, none of them in fit
    measured: dict[str, list[Sample]]  # split name -> films only measured: kaggle_val, test, every --report
    outside: dict[str, tuple[list[Sample], list[Sample]]]  # other hospitals' chest films: (fit, held out)
    ages: dict[Path, float]  # the adult folders' ages, where their metadata.csv gives one
    not_chest: list[Sample]  # radiographs of other body parts

    @property
    def adults(self) -> tuple[list[Sample], list[Sample]]:
        """(fit, held out) films of the adult folders' patients aged 18 or more, or of unknown age."""
        fit, held_out = self.outside.get(ADULT_FOLDERS, ([], []))
        return [s for s in fit if self.is_adult(s)], [s for s in held_out if self.is_adult(s)]

    @property
    def minors(self) -> list[Sample]:
        """The adult folders' films of patients under 18, fit half first: never fitted on."""
        fit, held_out = self.outside.get(ADULT_FOLDERS, ([], []))
        return [s for s in fit + held_out if not self.is_adult(s)]

    def is_adult(self, sample: Sample) -> bool:
        return self.ages.get(sample.path, ADULT_AGE) >= ADULT_AGE

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class: films}} for fit, validation and every measured split, as the bundle records them."""
        splits = {"fit": self.fit, "validation": self.validation, **self.measured}
        return {name: {c: sum(s.label == i for s in samples) for i, c in enumerate(CLASS_NAMES)}
                for name, samples in splits.items()}


def find_data(config) -> TrainingData:
    """The films of a TrainConfig's folders, split by its seed and shares; ValueError for a folder that does not
    hold what it should, before any model work."""
    kaggle = folders.kaggle_splits(config.data_dir)
    fit, validation = folders.split_by_patient(kaggle["train"], config.val_fraction, config.seed)
    measured = {KAGGLE_NAMES[name]: samples for name, samples in kaggle.items() if name != "train"}
    measured.update({name: folders.scan_class_folder(folder) for name, folder in config.report_dirs.items()})
    adult_films = [s for folder in config.adult_dirs for s in folders.scan_images(folder)]
    outside = {ADULT_FOLDERS: folders.split_by_patient(adult_films, config.adult_holdout, config.seed)}
    if config.lung_masks:
        outside[LUNG_MASK_IMAGES] = folders.split_by_patient(folders.scan_images(Path(config.lung_masks) / "images"),
                                                             LUNG_MASK_HOLDOUT, config.seed)
    ages = {path: age for folder in config.adult_dirs for path, age in folders.read_ages(folder).items()}
    return TrainingData(
        train=kaggle["train"], fit=fit, validation=validation, measured=measured,
        outside={name: pair for name, pair in outside.items() if pair[0] or pair[1]}, ages=ages,
        not_chest=[s for folder in config.not_chest_dirs for s in folders.scan_images(folder)])
