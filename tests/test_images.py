"""Reading every kind of file a user may drop, and the one preprocessing contract."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import synth
from conftest import SHARED_VAL
from PIL import Image

from pneumo.config import IMG_SIZE, VGG_MEAN_BGR
from pneumo.io import read_image
from pneumo.preprocess import to_model_input


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def gray():
    return synth.xray(3)


def test_grayscale_jpeg_and_rgb_jpeg_read_the_same(gray):
    a = read_image(encode(gray, "JPEG", quality=100), "a.jpg")
    b = read_image(encode(gray, "JPEG", mode="RGB", quality=100), "b.jpg")
    assert a.gray.shape == gray.shape and a.format == "JPEG"
    assert np.abs(a.gray.astype(int) - b.gray).max() <= 2  # chroma subsampling only
    assert b.colourfulness < 2.0


def test_16_bit_png_matches_its_8_bit_twin(gray):
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    buffer = io.BytesIO()
    sixteen.save(buffer, format="PNG")
    assert np.array_equal(read_image(buffer.getvalue(), "x.png").gray, gray)


def test_12_bit_values_in_16_bit_png_use_the_full_range(gray):
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16) * 16).save(buffer, format="PNG")  # max <= 4095
    out = read_image(buffer.getvalue(), "x.png").gray
    assert out.max() >= 250 and np.abs(out.astype(int) - gray).max() <= 1


@pytest.mark.parametrize("mode, tolerance", [("RGBA", 0), ("LA", 0), ("P", 0), ("1", None)])
def test_other_png_modes_decode_to_the_same_gray(gray, mode, tolerance):
    rgb = read_image(encode(gray, "PNG", mode="RGB"), "rgb.png").gray
    out = read_image(encode(gray, "PNG", mode=mode), "x.png")
    assert out.gray.shape == gray.shape and out.gray.dtype == np.uint8
    if tolerance is not None:  # the same gray as the RGB twin, never its negative
        assert np.abs(out.gray.astype(int) - rgb).max() <= tolerance
    else:  # 1-bit: dithered to black and white, white where the dithered film is white
        assert np.array_equal(out.gray, np.asarray(Image.fromarray(gray).convert("1").convert("L")))


def test_palette_png_with_a_coloured_palette_reads_as_its_gray(gray):
    quantised = Image.fromarray(gray).convert("RGB").quantize(64)  # an RGB palette, as image editors save
    buffer = io.BytesIO()
    quantised.save(buffer, format="PNG")
    expected = np.asarray(quantised.convert("L"))
    assert np.abs(read_image(buffer.getvalue(), "p.png").gray.astype(int) - expected).max() <= 1


def test_cmyk_jpeg_reads_as_its_gray_not_a_negative(gray):
    out = read_image(encode(gray, "JPEG", mode="CMYK", quality=100), "x.jpg")
    assert out.gray.shape == gray.shape
    assert np.abs(out.gray.astype(int) - gray).mean() < 4  # JPEG's rounding only; a negative would be ~100 off


def test_exif_orientation_turns_the_right_way(gray):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = read_image(encode(gray, "JPEG", quality=95), "plain.jpg").gray
    out = read_image(encode(gray, "JPEG", quality=95, exif=exif.tobytes()), "phone.jpg")
    assert np.array_equal(out.gray, np.rot90(upright, k=-1)), "turned 90 degrees clockwise, not counter-clockwise"


def test_colour_photo_is_colourful():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert read_image(encode(photo), "cat.png").colourfulness > 30


def test_dicom_modality_window_and_monochrome1(gray):
    raw = gray.astype(np.uint16) * 16
    m2 = read_image(synth.dicom_bytes(raw), "a.dcm")
    m1 = read_image(synth.dicom_bytes(4095 - raw, photometric="MONOCHROME1"), "b.dcm")
    assert np.abs(m1.gray.astype(int) - m2.gray).max() <= 1
    rescaled = read_image(synth.dicom_bytes(raw, slope=2.0, intercept=-50.0, window=(2 * 2048 - 50, 2 * 4096)), "c")
    assert rescaled.info["window"].startswith("center") and 100 < rescaled.gray.mean() < 160
    narrow = read_image(synth.dicom_bytes(raw, window=(1000, 200)), "d.dcm").gray
    assert set(np.unique(narrow)) - {0, 255}, "the window maps 900..1100 to gray levels"
    assert (narrow[raw > 1100] == 255).all() and (narrow[raw < 900] == 0).all(), "bright stays bright"
    assert (narrow == 255).mean() > 0.5


def test_dicom_monochrome2_reads_bright_as_bright_and_monochrome1_as_its_inverse(gray):
    raw = gray.astype(np.uint16) * 16  # 12-bit values; a window over the full range maps them back to `gray`
    m2 = read_image(synth.dicom_bytes(raw, window=(2048, 4096)), "m2.dcm").gray
    m1 = read_image(synth.dicom_bytes(4095 - raw, photometric="MONOCHROME1", window=(2048, 4096)), "m1.dcm").gray
    assert np.abs(m2.astype(int) - gray).max() <= 1, "MONOCHROME2: high values are white"
    assert np.abs(m1.astype(int) - gray).max() <= 1, "MONOCHROME1: low values are white"
    assert np.array_equal(to_model_input(read_image(synth.dicom_bytes(raw, window=(2048, 4096)), "a.dcm")),
                          to_model_input(read_image(synth.dicom_bytes(4095 - raw, photometric="MONOCHROME1",
                                                                      window=(2048, 4096)), "b.dcm")))


def test_dicom_without_extension_is_recognised(gray, tmp_path):
    path = tmp_path / "IM0001"
    path.write_bytes(synth.dicom_bytes(gray.astype(np.uint16) * 16))
    assert read_image(path).format == "DICOM"


def test_jpeg_compressed_dicom(gray):
    out = read_image(synth.dicom_bytes(gray, jpeg=True), "j.dcm")
    assert np.abs(out.gray.astype(int) - gray).mean() < 3


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_dicom_transfer_syntaxes(gray, syntax):
    import pydicom
    import pydicom.uid

    raw = gray.astype(np.uint16) * 16
    ds = pydicom.dcmread(io.BytesIO(synth.dicom_bytes(raw)))
    ds.compress(getattr(pydicom.uid, syntax))
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert np.array_equal(read_image(buffer.getvalue(), "c.dcm").gray, read_image(synth.dicom_bytes(raw), "u.dcm").gray)


def test_dicom_patient_fields_never_leave_the_reader(gray):
    out = read_image(synth.dicom_bytes(gray.astype(np.uint16), patient="SMITH^ANNA"), "p.dcm")
    assert "SMITH" not in repr(out.info) and "SECRET" not in repr(out.info)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def _bad_crc_png(gray) -> bytes:
    data = bytearray(encode(gray))
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


@pytest.mark.parametrize("make, name, message", [
    (lambda g: b"", "empty.jpg", "is empty"),
    (lambda g: encode(g, "JPEG")[:300], "cut.jpg", "damaged or incomplete"),
    (lambda g: b"Patient notes\nno image here\n", "notes.jpg", "is a text file, not an image"),
    (lambda g: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "report.jpg", "is a PDF document, not an image"),
    (_bad_crc_png, "crc.png", "damaged or incomplete"),
    (lambda g: encode(np.zeros((10, 10), np.uint8)), "tiny.png", "only 10x10 pixels"),
    (lambda g: _png_declaring(100_000, 100_000), "bomb.png", "the limit is 40 megapixels"),
    (lambda g: synth.dicom_bytes(g.astype(np.uint16), frames=4), "ct.dcm", "multi-frame DICOM (4 frames"),
    (lambda g: synth.report_dicom_bytes(), "sr.dcm", "without an image"),
    (lambda g: synth.dicom_bytes(g.astype(np.uint16), with_pixels=False), "cut.dcm", "incomplete DICOM file"),
])
def test_unreadable_files_give_a_plain_message(gray, make, name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")) as info:
        read_image(make(gray), name)
    assert name in str(info.value) and "Traceback" not in str(info.value)


def test_animated_gif_is_refused(gray):
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="GIF image, which is not supported|2 frames"):
        read_image(buffer.getvalue(), "anim.gif")


def test_huge_jpeg_decodes_at_reduced_size_without_full_decode():
    big = np.full((5000, 9000), 128, np.uint8)  # 45 MP, above the 40 MP limit
    out = read_image(encode(big, "JPEG", quality=50), "huge.jpg")
    assert out.gray.shape == (625, 1125) and out.info["original_size"] == [9000, 5000]


def test_very_wide_image_still_decodes():
    assert read_image(encode(np.full((200, 20000), 90, np.uint8)), "strip.png").size == (20000, 200)


def test_to_model_input_contract(gray):
    x = to_model_input(read_image(encode(gray), "x.png"))
    assert x.shape == (IMG_SIZE, IMG_SIZE, 3) and x.dtype == np.float32
    assert np.allclose(x[..., 0] + VGG_MEAN_BGR[0], x[..., 2] + VGG_MEAN_BGR[2])  # gray in every channel
    assert to_model_input(gray, 32).shape == (32, 32, 3)
    # Written out apart from pneumo.preprocess: bicubic to 224x224 as the shared training images were made, the outer
    # 10% of each side cut, bicubic back to 224, the caffe mean subtracted.
    whole = Image.fromarray(gray).resize((IMG_SIZE, IMG_SIZE), Image.BICUBIC)
    margin = round(IMG_SIZE * 0.1)
    view = whole.crop((margin, margin, IMG_SIZE - margin, IMG_SIZE - margin)).resize((IMG_SIZE, IMG_SIZE),
                                                                                      Image.BICUBIC)
    assert np.array_equal(x[..., 1], np.asarray(view, np.float32) - np.float32(VGG_MEAN_BGR[1]))


@pytest.mark.skipif(not SHARED_VAL.is_dir(), reason="needs ../shared/data/chest_xray/val (the 16 originals)")
@pytest.mark.parametrize("path", sorted(SHARED_VAL.glob("*/*.jpeg")) if SHARED_VAL.is_dir() else [],
                         ids=lambda p: p.name)
def test_full_resolution_original_reaches_the_model_like_a_training_image(path):
    """The shared train set = originals resized bicubic to 224x224 (aspect not kept), saved as RGB JPEG.
    An upload of the original must reach the model exactly as that resize, then as any training file."""
    original = read_image(path)
    assert min(original.size) > 500
    small = Image.open(path).convert("L").resize((IMG_SIZE, IMG_SIZE), Image.BICUBIC)
    assert np.array_equal(to_model_input(original), to_model_input(np.asarray(small)))
    as_training_file = read_image(encode(np.asarray(small.convert("RGB")), "JPEG", quality=95), "copy.jpeg")
    assert np.abs(to_model_input(original) - to_model_input(as_training_file)).mean() < 2.0  # JPEG noise only


def test_a_views_cache_key_names_every_parameter():
    from dataclasses import fields, replace

    from pneumo.preprocess import AugmentConfig, FormConfig

    base = AugmentConfig()
    keys = {replace(base, **{f.name: getattr(base, f.name) + 0.01}).cache_key() for f in fields(base)}
    assert len(keys) == len(fields(base)) and base.cache_key() not in keys, "each parameter changes the key"
    assert FormConfig().cache_key() != base.cache_key(), "the population check's views have their own cache"


def test_a_dicom_cut_anywhere_gives_one_sentence_and_no_library_warnings(gray, caplog, recwarn):
    import logging

    data = synth.dicom_bytes(gray.astype(np.uint16) * 16)
    with caplog.at_level(logging.DEBUG, logger="pydicom"):
        for cut in range(132, len(data), 37):  # through the header's values (a UID cut short), then the pixels
            with pytest.raises(ValueError) as refused:
                read_image(data[:cut], "cut.dcm")
            assert "\n" not in str(refused.value) and "cut.dcm" in str(refused.value)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [str(w.message) for w in recwarn] == [] and said == []
