"""DICOM decoding: modality LUT, VOI LUT or window, MONOCHROME1, 8-bit output.

Only technical fields are kept in `DecodedImage.info`; patient fields (name,
id, birth date ...) are never copied out of the dataset. The one exception is the
patient's age in years (`age_years`, from PatientAge or the birth and study dates):
it decides whether the film is inside the model's intended use (pneumo.infer.age).
"""

from __future__ import annotations

import io
from datetime import date

import numpy as np
from PIL import Image

from .image import EXPECTED, MAX_PIXELS, DecodedImage

# pydicom is imported where a DICOM file is read (0.3 s: `python -c 'import pydicom'`): most uploads are not.

SAFE_FIELDS = ("Modality", "PhotometricInterpretation", "BitsStored", "Rows", "Columns", "BodyPartExamined",
               "ViewPosition")
AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}  # PatientAge is nnnD/W/M/Y


def decode_dicom(data: bytes, name: str) -> DecodedImage:
    ds = _parse(data, name)
    if "PixelData" not in ds:
        if _declares_an_image(ds):  # an image's header without its pixels: the file stops early
            raise ValueError(_incomplete(name))
        raise ValueError(f"'{name}' is a DICOM file without an image (no pixel data), e.g. a report "
                         f"or structured document. {EXPECTED}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"'{name}' is a multi-frame DICOM ({frames} frames, e.g. CT, MR or a cine); "
                         "this demo reads single radiographs.")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ValueError(f"'{name}' declares {cols}x{rows} pixels; the limit is {MAX_PIXELS / 1e6:.0f} megapixels.")
    pixels = _pixel_array(ds, name)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith(("RGB", "YBR")) or pixels.ndim == 3:
        gray, window = _colour_to_gray(pixels, photometric), "colour"
    else:
        gray, window = _monochrome_to_uint8(pixels, ds)
        if photometric == "MONOCHROME1":  # MONOCHROME1 shows low values white
            gray = 255 - gray
    info = {key: _plain(ds.get(key)) for key in SAFE_FIELDS if key in ds}
    info["window"] = window
    age = _age_years(ds)
    if age is not None:
        info["age_years"] = age
    return DecodedImage(np.ascontiguousarray(gray), "DICOM", 0.0, info)


def _parse(data: bytes, name: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    # A value that breaks the standard (a UID cut short in a truncated file) is this reader's to judge, in one
    # sentence; pydicom's own validation would print a warning and a log line on stderr for it.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

    try:
        return pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"'{name}' is not a readable DICOM file. {EXPECTED}") from None


def _pixel_array(ds, name: str) -> np.ndarray:
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError):
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        label = getattr(syntax, "name", str(syntax))
        raise ValueError(f"'{name}' is compressed as '{label}', which cannot be decoded here. "
                         "Export it uncompressed or as JPEG/PNG.") from None
    except (ValueError, AttributeError, KeyError, EOFError, OSError, TypeError):
        if _pixels_cut_short(ds):
            raise ValueError(_incomplete(name)) from None
        raise ValueError(f"'{name}' is a damaged DICOM: its pixel data cannot be read. Export it again.") from None


def _declares_an_image(ds) -> bool:
    """The header says this is an image (its size, or an image SOP class such as "CR Image Storage")."""
    meta = getattr(ds, "file_meta", None)
    for uid in (ds.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID") if meta is not None else None):
        if uid is not None and "Image Storage" in getattr(uid, "name", ""):
            return True
    return "Rows" in ds or "Columns" in ds


def _incomplete(name: str) -> str:
    return (f"'{name}' is an incomplete DICOM file (cut short): its image is missing or partial. The upload or "
            "copy may have been interrupted; export it again.")


def _pixels_cut_short(ds) -> bool:
    """Uncompressed pixel data shorter than Rows x Columns x samples x bytes per sample says."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return False
    try:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        return len(ds.PixelData) < expected
    except (AttributeError, TypeError, ValueError):
        return False


def _monochrome_to_uint8(pixels: np.ndarray, ds) -> tuple[np.ndarray, str]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds).astype(np.float64)  # slope/intercept or modality LUT
    if "VOILUTSequence" in ds:
        return _min_max(apply_voi_lut(values, ds, prefer_lut=True)), "VOI LUT"
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        # DICOM PS3.3 C.11.2.1.2.1 linear window, scaled to 0..1
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
        return _to_uint8(np.clip(scaled, 0.0, 1.0)), f"center {center:g}, width {width:g}"
    if int(ds.get("BitsStored", 16)) <= 8 and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8), "8-bit as stored"
    return _min_max(values), "full range"


def _colour_to_gray(pixels: np.ndarray, photometric: str) -> np.ndarray:
    rgb = pixels
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        rgb = convert_color_space(pixels, photometric, "RGB")
    if rgb.dtype != np.uint8:
        rgb = _min_max(rgb.astype(np.float64))
    return np.asarray(Image.fromarray(rgb[..., :3].astype(np.uint8)).convert("L"))


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return _to_uint8((values - low) / (high - low + 1e-7))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _first(value) -> float | None:
    """Window values may be multi-valued (several presets): the first is the default."""
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _plain(value):
    return value if isinstance(value, (int, float)) else str(value)


def _age_years(ds) -> float | None:
    """PatientAge, else the study (or series/acquisition) date minus the birth date; None if absent or garbled."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in AGE_UNITS:
        return int(text[:-1]) * AGE_UNITS[text[-1]]
    if text.isdigit():  # "62": no unit, as many devices write it; the standard's default unit is years
        return float(int(text))
    birth = _date(ds.get("PatientBirthDate"))
    taken = next((d for d in map(_date, (ds.get(k) for k in ("StudyDate", "SeriesDate", "AcquisitionDate",
                                                                 "ContentDate"))) if d is not None), None)
    if birth is None or taken is None or taken < birth:
        return None
    return (taken - birth).days / 365.25


def _date(value):
    text = str(value or "").strip()
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) >= 8 else None
    except ValueError:
        return None
