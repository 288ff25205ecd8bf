"""File in -> pixels: `read_image` turns a file (JPEG, PNG, BMP, TIFF, WebP or DICOM) into a `DecodedImage`.

The pixels are 8-bit grayscale at the file's own size and orientation; what the network sees is made from
them by `pneumo.preprocess.to_model_input`. Every failure is a `ValueError` whose message says what the
file is and what was expected, in words a clinician can act on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import dicom
from .image import EXPECTED, MAX_BYTES, MAX_PIXELS, MIN_SIDE, DecodedImage

RASTER_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "MPO"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}

# We bound pixels ourselves (MAX_PIXELS, checked before decoding); Pillow's own
# bomb check would otherwise raise its own error type with a technical message.
Image.MAX_IMAGE_PIXELS = None


def read_image(source: str | Path | bytes, name: str | None = None) -> DecodedImage:
    """Decode `source` (a path or the file's bytes) into a `DecodedImage`."""
    data, name = _read_bytes(source, name)
    if is_dicom(data, name):
        return _checked(dicom.decode_dicom(data, name), name)
    return _checked(_decode_raster(data, name), name)


def is_dicom(data: bytes, name: str = "") -> bool:
    """DICOM Part 10 files carry 'DICM' at byte 128; bare datasets need a .dcm name."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in DICOM_SUFFIXES


def _read_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "upload"
    else:
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise ValueError(f"'{name}': no such file. {EXPECTED}")
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"'{name}' is {path.stat().st_size // 2**20} MB; the limit is {MAX_BYTES // 2**20} MB.")
        data = path.read_bytes()
    if not data:
        raise ValueError(f"'{name}' is empty (0 bytes). {EXPECTED}")
    return data, name


def _decode_raster(data: bytes, name: str) -> DecodedImage:
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        signature = next((fmt for magic, fmt in SIGNATURES.items() if data.startswith(magic)), None)
        if signature:  # an image whose header is corrupt, e.g. a PNG with a bad CRC
            raise ValueError(_damaged(name, signature, err)) from None
        raise ValueError(f"'{name}' is {_sniff(data)}, not an image. {EXPECTED}") from None
    except (OSError, SyntaxError, ValueError) as err:  # a header cut short or corrupt
        raise ValueError(_damaged(name, "image", err)) from None
    fmt = im.format or "unknown"
    if fmt not in RASTER_FORMATS:
        raise ValueError(f"'{name}' is a {fmt} image, which is not supported. {EXPECTED}")
    if getattr(im, "n_frames", 1) > 1 and fmt != "MPO":
        raise ValueError(f"'{name}' has {im.n_frames} frames (an animation or stack); {EXPECTED}")
    width, height = im.size
    if width * height > MAX_PIXELS:
        if fmt != "JPEG":
            raise ValueError(_too_big(name, width, height))
        im.draft("L", (width // 8, height // 8))  # JPEG can decode at 1/8 scale: memory stays bounded
        if im.size[0] * im.size[1] > MAX_PIXELS:
            raise ValueError(_too_big(name, width, height))
    try:
        im.load()
        im = ImageOps.exif_transpose(im)  # phones and some viewers store rotation in EXIF only
        gray, colour = _to_gray(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(_damaged(name, fmt, err)) from None
    return DecodedImage(gray, fmt, colour, {"original_size": [width, height], "mode": im.mode})


def _to_gray(im: Image.Image) -> tuple[np.ndarray, float]:
    """8-bit gray pixels and the colourfulness of the original."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_bit_depth_to_uint8(np.asarray(im)), 0.0
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L")), 0.0
    if im.mode == "LA":
        return np.asarray(im.convert("L")), 0.0
    rgb = np.asarray(im.convert("RGB"))  # palette, RGBA, CMYK, YCbCr ... all become RGB
    return np.asarray(Image.fromarray(rgb).convert("L")), colourfulness(rgb)


def _high_bit_depth_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or 10/12/14-bit stored in 16) pixels to 8 bits.

    The bit depth is the smallest of 8/10/12/14/16 bits that holds the maximum,
    so an 8-bit image saved as 16-bit (x257) maps back to the same pixels and a
    12-bit detector image is not left dark.
    """
    arr = arr.astype(np.float64)
    if arr.min() < 0:
        arr = arr - arr.min()
    top = next(b for b in (8, 10, 12, 14, 16, 32) if arr.max() <= 2**b - 1)
    return np.clip(np.rint(arr * (255.0 / (2**top - 1))), 0, 255).astype(np.uint8)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness: 0 for gray, > ~15 for photographs."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _checked(image: DecodedImage, name: str) -> DecodedImage:
    height, width = image.gray.shape
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"'{name}' is only {width}x{height} pixels; a chest X-ray needs at least "
                         f"{MIN_SIDE} pixels per side.")
    return image


def _damaged(name: str, fmt: str, err: Exception) -> str:
    # The library's own message names internals ("broken data stream", exception classes): not for a clinician.
    return (f"'{name}' is a damaged or incomplete {fmt} file: it cannot be decoded, often because it was cut "
            "short. The upload or copy may have been interrupted; export it again.")


def _too_big(name: str, width: int, height: int) -> str:
    return (f"'{name}' declares {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {MAX_PIXELS / 1e6:.0f} megapixels. Export a smaller copy.")


def _sniff(data: bytes) -> str:
    """Name what a non-image file probably is, for the error message."""
    head = data[:1024]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive or Office document"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "a web page (HTML)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a file of unknown type"
