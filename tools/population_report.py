"""Measure the "outside the pediatric population" check, by source and by file form, and the model on adults.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.population_report

Adults: the adult_dev patients aged 18+ the bundle's check was NOT fitted on (the same seeded patient split as
train.py's --adult-holdout), and the 83 adult films of lung_masks (other hospitals, several countries; never
used by the check). Other hospitals' children: adult_dev's 18 patients under 18 (metadata.csv; never fitted
on). Children: the pediatric validation patients (where the cut-off was set), shift_dev (other
patients) and the 16 full-resolution val/ originals. Every film is run in several forms: as stored, re-encoded
as a 224x224 JPEG (the shared training images' form), as PNG, wrapped in a DICOM with no age or view in
its header (pixels only), and in two forms of large films from an archive: a 2048 px 16-bit PNG, and a 2048 px
12-bit MONOCHROME1 DICOM with a window (what a PACS export looks like). Prints markdown tables.
`--framing`: the same films (validation patients aside) framed otherwise instead: the central 80%, a black
border, squeezed to 0.8 of their width; for children also how the pneumonia score and verdict move (~5 minutes).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.io.folders import scan_class_folder
from tools.shared_data import SHARED, training_data


def as_224_jpeg(data: bytes) -> bytes:
    """How the shared training images were made: whole film, bicubic to 224x224, aspect not kept, JPEG q75."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").resize((224, 224), Image.BICUBIC).save(buffer, "JPEG", quality=75)
    return buffer.getvalue()


def as_png(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(buffer, "PNG")
    return buffer.getvalue()


def as_dicom(data: bytes, size: int | None = None, bits: int = 8, inverted: bool = False) -> bytes:
    """The film's pixels in a DX DICOM whose header carries no age, birth date or view. With `size`, resized
    (bicubic) to size x size and stored as `bits`-bit values with a window, as a PACS exports films; `inverted`
    stores them MONOCHROME1 (white = 0), which readers must invert back."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    image = Image.open(io.BytesIO(data)).convert("L")
    gray = np.asarray(image.resize((size, size), Image.BICUBIC) if size else image, np.float64) / 255.0
    top = 2 ** bits - 1
    pixels = np.rint((1.0 - gray if inverted else gray) * top).astype(np.uint8 if bits == 8 else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if inverted else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8 * pixels.itemsize, bits, bits - 1, 0
    if bits > 8:
        ds.WindowCenter, ds.WindowWidth = (top + 1) // 2, top + 1
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def as_png16(data: bytes, size: int = 2048) -> bytes:
    """A 16-bit PNG at size x size (bicubic), as some archives export films."""
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L").resize((size, size), Image.BICUBIC), np.float64)
    buffer = io.BytesIO()
    Image.fromarray(np.rint(gray / 255.0 * 65535).astype(np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def as_pacs_dicom(data: bytes) -> bytes:
    return as_dicom(data, size=2048, bits=12, inverted=True)


FORMS = {"as stored": lambda data: data, "224 px JPEG": as_224_jpeg, "PNG": as_png, "DICOM (pixels only)": as_dicom,
         "2048 px 16-bit PNG": as_png16, "2048 px 12-bit DICOM, MONOCHROME1, windowed": as_pacs_dicom}


def _reframed(data: bytes, change) -> bytes:
    buffer = io.BytesIO()
    change(Image.open(io.BytesIO(data)).convert("L")).save(buffer, "PNG")
    return buffer.getvalue()


def cropped(data: bytes) -> bytes:
    """The central 80% of the film: collimated tighter, or a crop of a screenshot."""
    return _reframed(data, lambda im: im.crop((im.width // 10, im.height // 10, im.width - im.width // 10,
                                               im.height - im.height // 10)))


def black_border(data: bytes) -> bytes:
    """A black border of 10% of each side: a scanned film or a screenshot of a viewer."""
    from PIL import ImageOps

    return _reframed(data, lambda im: ImageOps.expand(im, (im.width // 10, im.height // 10), fill=0))


def squeezed(data: bytes) -> bytes:
    """Width x 0.8: a film stored at 4:5 instead of its own aspect."""
    return _reframed(data, lambda im: im.resize((im.width * 4 // 5, im.height), Image.BICUBIC))


FRAMINGS = {"central 80% crop": cropped, "black border, 10% per side": black_border, "squeezed to 0.8 width": squeezed}


def read_in_form(path: Path, form):
    """The film at `path` converted by `form` and decoded, named as a user would name it (.dcm for DICOM)."""
    from pneumo.io import read_image

    return read_image(form(path.read_bytes()), path.name + ".dcm" * (form in (as_dicom, as_pacs_dicom)))


def predictions(predictor, files: list[Path], form) -> list:
    """Predictions (both checks) for `files` converted by `form`, batched through the model."""
    from pneumo.preprocess import to_model_input

    out = []
    for start in range(0, len(files), 16):
        images = [read_in_form(p, form) for p in files[start:start + 16]]
        out += predictor.predictions(images, np.stack([to_model_input(i, predictor.input_size) for i in images]))
    return out


def film_sets(predictor) -> dict[str, tuple[str, list[Path]]]:
    data = training_data(predictor.bundle.config.recipe)  # NIH's metadata: 18 of adult_dev's films are of minors
    return {
        "adult_dev, held-out patients aged 18+ (NIH, 512 px PNG)": ("adult", [s.path for s in data.adults[1]]),
        "adult_dev, patients under 18, none fitted on (NIH, aged 5-17)": ("young",
                                                                          sorted(s.path for s in data.minors)),
        "lung_masks (adults, other hospitals, 256 px PNG)": ("adult",
                                                             sorted((SHARED / "lung_masks" / "images").glob("*.png"))),
        "pediatric validation patients (224 px JPEG)": ("child", [s.path for s in data.validation]),
        "shift_dev (other patients, 224 px JPEG)": ("child", [s.path for s in scan_class_folder(SHARED / "shift_dev")]),
        "val/ originals (full resolution JPEG)": ("child", [s.path for s in data.measured["kaggle_val"]]),
    }


def flag_table(predictor, forms: dict) -> None:
    """Flag counts per film set and form; the validation patients (where the cut-off was set) only as stored."""
    print("| films | form | images | flagged as outside the population | called not a chest X-ray |\n"
          "|---|---|---|---|---|")
    for name, (_, files) in film_sets(predictor).items():
        for form_name, form in ({"as stored": FORMS["as stored"]} if "validation" in name else forms).items():
            found = predictions(predictor, files, form)
            flagged, not_chest = _counts(found)
            print(f"| {name} | {form_name} | {len(files)} | {flagged} ({flagged / len(files):.1%}) | {not_chest} |",
                  flush=True)


def _counts(found: list) -> tuple[int, int]:
    """(outside the population, not a chest X-ray) among predictions."""
    return sum(not p.in_population for p in found), sum(not p.looks_like_chest_xray for p in found)


def framing_table(predictor) -> None:
    """FRAMINGS of every set but the validation patients: flagged, and for children how far the pneumonia score
    moves from the film as stored (median) and how many verdicts change."""
    print("| films | form | images | flagged as outside the population | called not a chest X-ray | pneumonia score "
          "moved (median) | verdicts changed | called PNEUMONIA, as stored -> framed |\n" + "|---" * 8 + "|")
    for name, (kind, files) in film_sets(predictor).items():
        if "validation" in name:
            continue
        stored = predictions(predictor, files, FORMS["as stored"]) if kind == "child" else []
        for form_name, form in FRAMINGS.items():
            framed = predictions(predictor, files, form)
            flagged, not_chest = _counts(framed)
            cells = "| | |"  # the verdict does not apply to adults
            if stored:
                moved = np.median([abs(a.probability - b.probability) for a, b in zip(stored, framed)])
                changed = sum(a.side != b.side for a, b in zip(stored, framed))
                called = [sum(p.side == "PNEUMONIA" for p in ps) for ps in (stored, framed)]
                cells = f"{moved:.3f} | {changed} | {called[0]} -> {called[1]} |"
            print(f"| {name} | {form_name} | {len(files)} | {flagged} ({flagged / len(files):.1%}) | {not_chest} | "
                  f"{cells}", flush=True)


def centre_crop(share: float):
    """The film cut to `share` of each side around its centre, as a crop in a viewer or a tight export."""
    def change(im):
        width, height = round(im.width * share), round(im.height * share)
        left, top = (im.width - width) // 2, (im.height - height) // 2
        return im.crop((left, top, left + width, top + height))
    return lambda data: _reframed(data, change)


def crop_table(predictor) -> None:
    """Children's films (shift_dev and the val/ originals) cut around the centre to 100%..50% of each side: how many
    are not assessed and by which check, and what is said of the normal ones that are (docs/safety.md#framing)."""
    samples = scan_class_folder(SHARED / "shift_dev") + scan_class_folder(SHARED / "chest_xray" / "val")
    normal = np.array([s.label == 0 for s in samples])
    print("| share of each side kept | films | not assessed: cropped / other checks | normal films called PNEUMONIA "
          "(of 66) | of them outside the borderline band |\n|---|---|---|---|---|")
    for share in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
        found = predictions(predictor, [s.path for s in samples], centre_crop(share))
        cropped = sum(p.failed_check == "framing" for p in found)
        other = sum(not p.assessed for p in found) - cropped
        called = [p for p, n in zip(found, normal) if n and p.verdict == "PNEUMONIA"]
        outside = sum(not p.borderline for p in called)
        print(f"| {share:.0%} | {len(found)} | {cropped} / {other} | {len(called)} | {outside} |", flush=True)


def adult_accuracy(predictor) -> None:
    """What the pneumonia model says on adults: it must not be used there."""
    from pneumo.stats.metrics import binary_metrics

    samples = scan_class_folder(SHARED / "adult_dev")
    preds = predictions(predictor, [s.path for s in samples], FORMS["as stored"])
    labels = np.array([s.label for s in samples])
    m = binary_metrics(labels, [p.probability for p in preds], predictor.threshold)
    called = np.array([p.side == "PNEUMONIA" for p in preds])
    print(f"\nPneumonia model on all {len(samples)} adult_dev films (NIH labels): accuracy {m['accuracy']:.3f}, "
          f"sensitivity {m['sensitivity']:.3f}, specificity {m['specificity']:.3f}, ROC AUC {m['auc']:.3f}; "
          f"{called[labels == 0].mean():.0%} of 'No Finding' adults called PNEUMONIA.")


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framing", action="store_true", help="instead: the same films framed otherwise (cropped, "
                        "with a black border, squeezed), a limit of the check (docs/safety.md)")
    parser.add_argument("--crops", action="store_true", help="instead: children's films cut to 100%%..50%% of each "
                        "side: what the framing check and the verdict say (about 4 minutes)")
    args = parser.parse_args(argv)
    from pneumo.infer.predictor import Predictor

    predictor = Predictor.load()
    if predictor.population_check is None:
        raise SystemExit("this bundle has no population check: train it with --adult-dir")
    if args.framing:
        framing_table(predictor)
        return
    if args.crops:
        crop_table(predictor)
        return
    flag_table(predictor, FORMS)
    adult_accuracy(predictor)


if __name__ == "__main__":
    main()
