"""The bad-input corpus: every awkward file a public demo receives, generated (nothing binary committed).

Each case: (file name, bytes, expected) where expected is "predict" or a fragment of the error message.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import synth
from PIL import Image


def _save(pixels_or_image, fmt: str, **kwargs) -> bytes:
    image = pixels_or_image if isinstance(pixels_or_image, Image.Image) else Image.fromarray(pixels_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG declaring 10 gigapixels: decoding it would need 10 GB."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _png_chunk(b"IEND", b""))


def expected_gray(name: str) -> tuple[np.ndarray, float] | None:
    """What a readable case must decode to, and the largest mean difference allowed (lossy encodings); None for a
    case that is refused."""
    xray = synth.xray(11, pneumonia=True, size=(260, 300))
    plain_jpeg = np.asarray(Image.open(io.BytesIO(_save(xray, "JPEG"))).convert("L"))
    twins = {"cmyk.jpg": (xray, 6.0), "rgba.png": (xray, 0.0), "palette.png": (xray, 0.0),
             "sixteen.png": (xray, 0.0), "strip.png": (np.full((200, 20000), 100, np.uint8), 0.0),
             "rotated.jpg": (np.rot90(plain_jpeg, k=1), 0.0),  # EXIF 8: turned 90 degrees counter-clockwise
             "jpeg_compressed.dcm": (xray, 3.0), "monochrome2.dcm": (xray, 1.0), "monochrome1.dcm": (xray, 1.0)}
    return twins.get(name)


def cases() -> list[tuple[str, bytes, str]]:
    xray = synth.xray(11, pneumonia=True, size=(260, 300))
    jpeg = _save(xray, "JPEG", quality=92)
    bad_crc = bytearray(_save(xray, "PNG"))
    bad_crc[29] ^= 0xFF
    gif = io.BytesIO()
    Image.fromarray(xray).save(gif, format="GIF", save_all=True, append_images=[Image.fromarray(255 - xray)])
    exif = Image.Exif()
    exif[0x0112] = 8
    raw12 = xray.astype(np.uint16) * 16
    dicom = synth.dicom_bytes(raw12)
    return [
        ("empty.jpg", b"", "is empty"),
        ("truncated.jpg", jpeg[: len(jpeg) // 3], "damaged or incomplete"),
        ("bad_crc.png", bytes(bad_crc), "damaged or incomplete"),
        ("notes.jpg", b"Discharge summary\nPatient doing well.\n", "text file"),
        ("report.jpg", b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF document"),
        ("animated.gif", gif.getvalue(), "GIF image, which is not supported"),
        ("cmyk.jpg", _save(Image.fromarray(xray).convert("CMYK"), "JPEG"), "predict"),
        ("rgba.png", _save(Image.fromarray(xray).convert("RGBA"), "PNG"), "predict"),
        ("palette.png", _save(Image.fromarray(xray).convert("P"), "PNG"), "predict"),
        ("sixteen.png", _save(Image.fromarray(xray.astype(np.uint16) * 257), "PNG"), "predict"),
        ("tiny.png", _save(np.zeros((10, 10), np.uint8), "PNG"), "only 10x10 pixels"),
        ("strip.png", _save(np.full((200, 20000), 100, np.uint8), "PNG"), "predict"),
        ("bomb.png", bomb_png(), "the limit is 40 megapixels"),
        ("rotated.jpg", _save(xray, "JPEG", exif=exif.tobytes()), "predict"),
        ("report.dcm", synth.report_dicom_bytes(), "without an image"),
        ("cut_in_pixels.dcm", dicom[: len(dicom) // 2], "incomplete DICOM file (cut short)"),
        ("cut_in_header.dcm", dicom[:400], "incomplete DICOM file (cut short)"),
        ("multiframe.dcm", synth.dicom_bytes(raw12, frames=3), "multi-frame DICOM"),
        ("jpeg_compressed.dcm", synth.dicom_bytes(xray, jpeg=True), "predict"),
        ("monochrome2.dcm", synth.dicom_bytes(raw12, window=(2048, 4096)), "predict"),
        ("monochrome1.dcm", synth.dicom_bytes(4095 - raw12, photometric="MONOCHROME1", window=(4095 - 2048, 4096)),
         "predict"),
    ]
