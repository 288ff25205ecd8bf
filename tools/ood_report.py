"""Measure the "looks like a chest X-ray?" check: false warnings on chest X-rays, catches on other images.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.ood_report
    (add --others-only to skip the ~3 minutes of chest X-rays)

Chest X-rays of every source, split as `train.py` splits them (pneumo.train.data.find_data): the
pediatric validation patients and the held-out halves of adult_dev and lung_masks' images (the check's cut-off was
set on these), the halves it was fitted on, adult_dev's patients under 18 by age (NIH metadata), the 16
full-resolution originals of val/ and shift_dev (other patients; never used). The "no lungs" column counts films
where the bundle's lung head found no plausible pair of lungs.
Other images: not_chest_dev's radiographs of hands and pelvises (never fitted on), and what can be made offline
here — scikit-image's sample images (colour photos, and gray versions and crops of everything), rendered text
documents, synthetic CT-like axial slices, and the real CT/MR/NM images shipped in pydicom's wheel (as plain
pixels). Needs scikit-image (in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pneumo.io.folders import scan_class_folder
from pneumo.train.data import ADULT_FOLDERS, LUNG_MASK_IMAGES
from tools.shared_data import SHARED, training_data


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def skimage_images() -> dict[str, np.ndarray]:
    import skimage.data as d

    out = {}
    for name in ("astronaut", "camera", "cat", "cell", "checkerboard", "clock", "coffee", "coins", "colorwheel",
                 "grass", "gravel", "brick", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                 "microaneurysms", "moon", "page", "retina", "rocket", "text", "binary_blobs", "shepp_logan_phantom"):
        image = np.asarray(getattr(d, name)())
        if image.dtype != np.uint8:
            image = image.astype(float)
            image = np.uint8(255 * (image - image.min()) / (image.max() - image.min() + 1e-7))
        out[name] = image[..., :3] if image.ndim == 3 else image
    left, right, _ = d.stereo_motorcycle()
    out.update(motorcycle_left=left, motorcycle_right=right)
    return out


def gray(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L")) if image.ndim == 3 else image


def crop(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 0.8)), int(w * rng.uniform(0.5, 0.8))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return image[y:y + ch, x:x + cw]


def document(rng) -> np.ndarray:
    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    for line in range(int(rng.integers(15, 40))):
        words = " ".join("".join(chr(rng.integers(97, 123)) for _ in range(rng.integers(2, 9))) for _ in range(10))
        draw.text((60, 60 + line * 25), words, fill=int(rng.integers(0, 80)))
    return np.asarray(page)


def ct_slice(rng) -> np.ndarray:
    """An axial body section: body ellipse, lungs (dark), spine and ribs (bright), on black."""
    size = 512
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    a, b = rng.uniform(0.38, 0.46), rng.uniform(0.26, 0.34)
    img = np.where((xx / a) ** 2 + (yy / b) ** 2 < 1, 0.45, 0.0)
    for side in (-1, 1):
        img = np.where(((xx - side * 0.17) / 0.13) ** 2 + ((yy + 0.02) / 0.18) ** 2 < 1, 0.08, img)
    img = np.where((xx / 0.05) ** 2 + ((yy - 0.2) / 0.05) ** 2 < 1, 0.95, img)
    img += rng.normal(0, 0.03, img.shape)
    return np.uint8(np.clip(img, 0, 1) * 255)


def pydicom_slices() -> dict[str, np.ndarray]:
    """The real CT, MR and NM images that ship inside pydicom's wheel, as plain pixels (no DICOM tags to help)."""
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    out = {}
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"):
        with warnings.catch_warnings():  # files not in the wheel would be downloaded: offline, skip them
            warnings.simplefilter("ignore")
            path = get_testdata_file(name)
        if path is None:
            continue
        pixels = pydicom.dcmread(path).pixel_array.astype(float)
        pixels = np.uint8(255 * (pixels - pixels.min()) / (pixels.max() - pixels.min() + 1e-7))
        out[name.removesuffix(".dcm")] = pixels
        out[name.removesuffix(".dcm") + "_x4"] = np.asarray(  # the size a real CT slice or scan would have
            Image.fromarray(pixels).resize((pixels.shape[1] * 4, pixels.shape[0] * 4), Image.BICUBIC))
    return out


def other_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for name, image in skimage_images().items():
        out[name] = png(image)
        if image.ndim == 3:
            out[f"{name}_gray"] = png(gray(image))
        for k in range(2):
            out[f"{name}_crop{k}"] = png(gray(crop(image, rng)))
    out.update({f"document{k}": png(document(rng)) for k in range(10)})
    out.update({f"ct_slice{k}": png(ct_slice(rng)) for k in range(10)})
    out.update({name: png(pixels) for name, pixels in pydicom_slices().items()})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others-only", action="store_true", help="skip the chest X-rays (~3 minutes)")
    only_others = parser.parse_args(argv).others_only
    from pneumo.infer.lung_fields import NO_LUNGS
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image

    predictor = Predictor.load()
    others = {n: predictor.analyze(read_image(data, n), with_cam=False).chest_reasons
              for n, data in other_images().items()}
    print(f"{'set':<58}{'images':>8}{'warned':>8}{'rate':>8}{'no lungs':>10}")
    for name, paths in ({} if only_others else chest_sets(predictor)).items():
        reasons = {p.name: predictor.analyze(read_image(p), with_cam=False).chest_reasons for p in paths}
        _line(name, reasons, NO_LUNGS, predictor.decoder is not None, True)
    for part in ("hand", "pelvis_hip"):
        paths = sorted((SHARED / "not_chest_dev" / part).iterdir())
        reasons = {p.name: predictor.analyze(read_image(p), with_cam=False).chest_reasons for p in paths}
        _line(f"not_chest_dev/{part} (radiographs, never fitted on)", reasons, NO_LUNGS, True, False)
    _line("non-chest images (photos, documents, CT-like)", others, NO_LUNGS, predictor.decoder is not None, False)


def chest_sets(predictor) -> dict[str, list[Path]]:
    """Every chest film here, by source and by whether the check was fitted on it (train.py's own splits)."""
    data = training_data(predictor.bundle.config.recipe)
    adults_fit, adults_held = data.outside[ADULT_FOLDERS]
    masks_fit, masks_held = data.outside[LUNG_MASK_IMAGES]
    return {"pediatric validation patients (cut-off set here)": [s.path for s in data.validation],
            "adult_dev, held-out patients (cut-off set here)": [s.path for s in adults_held],
            "lung_masks images, held-out half (cut-off set here)": [s.path for s in masks_held],
            "adult_dev, patients under 18 (NIH children, 5-17)": sorted(s.path for s in data.minors),
            "val/ full-resolution originals (never used)": [s.path for s in data.measured["kaggle_val"]],
            "shift_dev (other patients, never used)": [s.path for s in scan_class_folder(SHARED / "shift_dev")],
            "adult_dev, fitted-on patients": [s.path for s in adults_fit],
            "lung_masks images, fitted-on half": [s.path for s in masks_fit],
            "pediatric fit patients, every 8th": [s.path for s in data.fit[::8]]}


def _line(name: str, reasons: dict[str, list[str]], no_lungs: str, has_lungs: bool, chest: bool) -> None:
    warned = [n for n, r in reasons.items() if r]
    lungless = sum(no_lungs in r for r in reasons.values())
    missed = " ".join(n for n, r in reasons.items() if not r) or "none"
    listed = " ".join(warned[:5]) if chest else f"missed: {missed}"
    print(f"{name:<58}{len(reasons):>8}{len(warned):>8}{len(warned) / len(reasons):>8.1%}"
          f"{lungless if has_lungs else '-':>10}   {listed}", flush=True)


if __name__ == "__main__":
    main()
