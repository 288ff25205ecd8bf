"""Synthetic chest-X-ray-like images for tests: no real data needed, fully seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _canvas(seed: int, size: tuple[int, int]):
    """A seeded generator and (y, x) coordinates in [0, 1) for an image of `size` (H, W)."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    return np.random.default_rng(seed), yy, xx


def xray(seed: int = 0, pneumonia: bool = False, size: tuple[int, int] = (80, 96)) -> np.ndarray:
    """(H, W) uint8: bright body, two dark lungs, a bright spine; pneumonia adds lung opacities."""
    rng, yy, xx = _canvas(seed, size)
    img = 0.75 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    for cx in (0.3, 0.7):  # lungs
        img -= 0.45 * (((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1)
    img += 0.35 * (np.abs(xx - 0.5) < 0.05)  # spine
    if pneumonia:
        for _ in range(3):
            cx, cy = rng.choice([0.3, 0.7]) + rng.uniform(-0.05, 0.05), rng.uniform(0.35, 0.65)
            img += 0.35 * np.exp(-(((xx - cx) / 0.08) ** 2 + ((yy - cy) / 0.1) ** 2))
    img += rng.normal(0, 0.03, img.shape)
    return np.uint8(np.clip(img, 0, 1) * 255)


def adult_xray(seed: int = 0, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    """(H, W) uint8 standing in for an adult film: taller narrow lungs, a wide heart, dense ribs."""
    rng, yy, xx = _canvas(seed, size)
    img = np.full(size, 0.8)
    for cx in (0.28, 0.72):
        img -= 0.55 * (((xx - cx) / 0.12) ** 2 + ((yy - 0.45) / 0.38) ** 2 < 1)
    img += 0.3 * (((xx - 0.55) / 0.18) ** 2 + ((yy - 0.7) / 0.15) ** 2 < 1)  # heart
    img += 0.15 * (np.sin(yy * 60) > 0.6)  # ribs
    img += rng.normal(0, 0.03, img.shape)
    return np.uint8(np.clip(img, 0, 1) * 255)


def adult_folder(root: Path, patients: int = 8) -> Path:
    """A folder of synthetic adult films, two per patient, named like NIH's (patient id, film number)."""
    from PIL import Image

    for patient in range(patients):
        for k in range(2):
            Image.fromarray(adult_xray(patient * 10 + k)).save(root / f"{10000000 + patient:08d}_{k:03d}.png")
    return root


def knee(seed: int = 0, size: tuple[int, int] = (800, 600)) -> np.ndarray:
    """(H, W) uint8 standing in for a knee radiograph: femur above, tibia and fibula below, a joint space."""
    rng, yy, xx = _canvas(seed, size)
    img = 0.12 + 0.25 * (np.abs(xx - 0.5) < 0.33)  # soft tissue on a dark background
    img += 0.5 * ((np.abs(xx - 0.5) < 0.13 + 0.1 * np.exp(-((yy - 0.45) / 0.06) ** 2)) & (yy < 0.47))  # femur
    img += 0.5 * ((np.abs(xx - 0.5) < 0.12 + 0.07 * np.exp(-((yy - 0.52) / 0.05) ** 2)) & (yy > 0.50))  # tibia
    img += 0.35 * ((np.abs(xx - 0.72) < 0.03) & (yy > 0.55))  # fibula
    img += rng.normal(0, 0.02, img.shape)
    return np.uint8(np.clip(img, 0, 1) * 255)


def kaggle_tree(root: Path, patients: dict[str, int], images_per_patient: int = 2, seed: int = 0) -> Path:
    """Write {split: n patients per class} in the Kaggle layout with Kermany-style file names."""
    counter = seed * 1000
    for split, n in patients.items():
        for label in ("NORMAL", "PNEUMONIA"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                counter += 1
                for k in range(images_per_patient):
                    name = (f"person{counter}_bacteria_{counter * 10 + k}.jpeg" if label == "PNEUMONIA"
                            else f"IM-{counter:04d}-{k + 1:04d}.jpeg")
                    pixels = xray(counter * 10 + k, pneumonia=label == "PNEUMONIA")
                    Image.fromarray(pixels).save(folder / name, quality=95)
    return root


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None, frames: int = 1,
                with_pixels: bool = True, jpeg: bool = False, patient: str = "DOE^JANE", modality: str = "CR",
                extra: dict | None = None) -> bytes:
    """A DICOM Part 10 file (CR, single or multi-frame, optionally JPEG baseline compressed); `extra`: more tags."""
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = patient, "SECRET-123", modality
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if jpeg else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (8, 7, 0) if jpeg else (bits, bits - 1, 0)
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    if with_pixels and jpeg:
        buffer = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
    elif with_pixels:
        stack = np.repeat(pixels[None], frames, 0) if frames > 1 else pixels
        ds.PixelData = stack.astype(np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def report_dicom_bytes() -> bytes:
    """A DICOM structured report: a real DICOM file with no image in it."""
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("r.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "SR", "SECRET-123"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
