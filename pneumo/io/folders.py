"""Data folders: the Kaggle layout, patient ids, and the patient-wise split."""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..config import CLASS_NAMES

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom", ".bmp", ".tif", ".tiff", ".webp"}
# person1234_bacteria_5678 -> person1234; IM-0115-0001 -> IM-0115; NORMAL2-IM-1427-0001 -> NORMAL2-IM-1427;
# NIH ChestX-ray14 00001281_000 -> 00001281 (the adult films of the population check)
_PATIENT_PATTERNS = (re.compile(r"^(person\d+)_", re.IGNORECASE),
                     re.compile(r"^((?:NORMAL\d+-)?IM-\d+)", re.IGNORECASE),
                     re.compile(r"^(\d{8})_\d{3}$"))


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into CLASS_NAMES
    patient: str


def patient_id(filename: str) -> str:
    """Patient id from a Kermany file name; unknown patterns count as their own patient."""
    stem = Path(filename).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def scan_class_folder(root: str | Path) -> list[Sample]:
    """Samples of a folder holding NORMAL/ and PNEUMONIA/; errors before any work is done."""
    root = Path(root)
    missing = [name for name in CLASS_NAMES if not (root / name).is_dir()]
    if missing:
        raise ValueError(f"'{root}' must contain the folders {' and '.join(CLASS_NAMES)}; "
                         f"missing: {', '.join(missing)}.")
    samples = []
    for label, name in enumerate(CLASS_NAMES):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and _looks_like_image(p))
        if not files:
            raise ValueError(f"'{root / name}' holds no images (expected {', '.join(sorted(IMAGE_SUFFIXES))}).")
        samples += [Sample(p, label, f"{name}/{patient_id(p.name)}") for p in files]
    return samples


def scan_images(root: str | Path) -> list[Sample]:
    """Every image below `root`, any layout, as label-0 samples with patient ids (for the population check)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"'{root}' is not a folder of images.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and _looks_like_image(p))
    if not files:
        raise ValueError(f"'{root}' holds no images (expected {', '.join(sorted(IMAGE_SUFFIXES))}).")
    return [Sample(p, 0, f"{root.name}/{patient_id(p.name)}") for p in files]


def read_ages(root: str | Path) -> dict[Path, float]:
    """{film: age in years} from `root/metadata.csv` (columns `file`, relative to root, and `age`), if there is one.

    NIH ChestX-ray14's own metadata gives ages, and a folder of "adult" films can hold children."""
    table = Path(root) / "metadata.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"file", "age"} <= set(rows[0]):
        raise ValueError(f"'{table}' must have the columns file and age; it has {', '.join(rows[0])}.")
    try:
        return {Path(root) / row["file"]: float(row["age"]) for row in rows if row["age"].strip()}
    except ValueError as err:
        raise ValueError(f"'{table}' holds an age that is not a number ({err}).") from None


def resolve_eval_folder(path: str | Path) -> Path:
    """A folder with NORMAL/ and PNEUMONIA/, or a Kaggle root whose test/ has them."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"'{path}' is not a folder; expected a folder with NORMAL/ and PNEUMONIA/ "
                         "or a Kaggle root with test/.")
    if all((path / name).is_dir() for name in CLASS_NAMES):
        return path
    if all((path / "test" / name).is_dir() for name in CLASS_NAMES):
        return path / "test"
    raise ValueError(f"'{path}' has neither NORMAL/ and PNEUMONIA/ nor test/NORMAL and test/PNEUMONIA.")


def kaggle_splits(data_dir: str | Path) -> dict[str, list[Sample]]:
    """{'train': ..., 'val': ..., 'test': ...} for the folders that exist; train is required."""
    data_dir = Path(data_dir)
    if not (data_dir / "train").is_dir():
        raise ValueError(f"'{data_dir}' has no train/ folder; expected the Kaggle layout "
                         "train/{NORMAL,PNEUMONIA} with optional val/ and test/.")
    splits = {"train": scan_class_folder(data_dir / "train")}
    for extra in ("val", "test"):
        if (data_dir / extra).is_dir():
            splits[extra] = scan_class_folder(data_dir / extra)
    return splits


def split_by_patient(samples: list[Sample], share: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(kept, held out): a seeded split with every patient wholly on one side, stratified by class, about `share`
    of each class's patients held out; a share of 0 holds out nothing."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the share of patients held out must be in [0, 1), got {share}.")
    if share == 0:
        return list(samples), []
    by_patient: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_patient[sample.patient].append(sample)
    rng = random.Random(seed)
    val_patients: set[str] = set()
    for label in range(len(CLASS_NAMES)):
        patients = sorted(p for p, group in by_patient.items() if group[0].label == label)
        rng.shuffle(patients)
        val_patients.update(patients[: max(1, round(len(patients) * share))])
    train = [s for s in samples if s.patient not in val_patients]
    val = [s for s in samples if s.patient in val_patients]
    return train, val


def _looks_like_image(path: Path) -> bool:
    # Extension-less files may be DICOM straight from PACS; hidden files never are images.
    return not path.name.startswith(".") and (path.suffix.lower() in IMAGE_SUFFIXES or path.suffix == "")


def file_hash(path: Path) -> str:
    """A file's content key (SHA-1 of its bytes): the feature cache's row key, so a renamed file keeps its row."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()
