"""Do the tests catch a broken product? Apply each deliberate breakage to a copy of the checkout, one at a time, run
the fast lane (then, if it passed, the whole suite), and print which tests caught it.

    python -m tools.breakages                   # every breakage: about 15 minutes
    python -m tools.breakages gradcam_side      # one
    python -m tools.breakages --fast-only       # the fast lane only (no real backbone needed)

The full suite needs what CI needs (PNEUMO_BACKBONE_WEIGHTS, Debian's chromium). Each breakage is one exact edit of
production code; the tool refuses to run if the code it edits has changed (update the edit here, then). The table
it printed last is in docs/code.md ("How the tests are checked").
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (what breaks, file, exact text, replacement)
BREAKAGES = {
    "gradcam_side": ("Grad-CAM always explains the PNEUMONIA side", "pneumo/infer/predictor.py",
                     "run.weights[k], run.probs[k] >= self.threshold,", "run.weights[k], True,"),
    "overlay_off": ("the app's overlay never draws the heatmap", "pneumo/ui/service.py",
                    "rgb = gradcam.overlay(film, p.heatmap, float(opacity))",
                    "rgb = np.repeat(film[..., None], 3, axis=-1)"),
    "monochrome_inverted": ("DICOM MONOCHROME handling upside down", "pneumo/io/dicom.py",
                            'if photometric == "MONOCHROME1":', 'if photometric != "MONOCHROME1":'),
    "window_inverted": ("the DICOM window applied the wrong way round", "pneumo/io/dicom.py",
                        "scaled = (values - (center - 0.5)) / (width - 1) + 0.5",
                        "scaled = 0.5 - (values - (center - 0.5)) / (width - 1)"),
    "colour_negative": ("CMYK, palette and RGBA images decoded as negatives", "pneumo/io/decode.py",
                        'return np.asarray(Image.fromarray(rgb).convert("L")), colourfulness(rgb)',
                        'return 255 - np.asarray(Image.fromarray(rgb).convert("L")), colourfulness(rgb)'),
    "chest_content_dropped": ("the chest check's content score dropped from predictions", "pneumo/infer/predictor.py",
                              "chest = chest_check.check(image, check_features[None], signature, self.chest)",
                              "chest = chest_check.image_reasons(image)"),
    "verdict_strict": ("the verdict uses > instead of >= the threshold", "pneumo/infer/predictor.py",
                       "int(self.probability >= self.threshold)", "int(self.probability > self.threshold)"),
    "calibrate_constant": ("pneumo calibrate writes a constant threshold 0.5", "pneumo/stats/site_rule.py",
                           "return (chosen + below.max()) / 2 if below.size else chosen / 2, cuts",
                           "return 0.5, cuts"),
    "population_pixels_dropped": ("the population check's image part dropped", "pneumo/infer/predictor.py",
                                  "unlike = self.population_check is not None and", "unlike = False and"),
    "no_lungs_dropped": ("the 'no lungs' reason dropped", "pneumo/infer/predictor.py",
                         "chest += lung_fields.lung_reasons(lung_map) if lung_map is not None else []",
                         "chest += []"),
    "size_limit_removed": ("read_image's 200 MB refusal removed", "pneumo/io/decode.py",
                           "if path.stat().st_size > MAX_BYTES:", "if False:"),
    "exif_ignored": ("EXIF rotation ignored", "pneumo/io/decode.py",
                     "im = ImageOps.exif_transpose(im)", "im = im"),
    "declared_age_ignored": ("a declared age ignored", "pneumo/infer/age.py",
                             'age, source = (declared, "declared") if declared is not None else',
                             'age, source = (None, "declared") if False else'),
    "band_one_sided": ("'borderline' only above the band's lower edge", "pneumo/infer/predictor.py",
                       "return self.band[0] <= self.probability <= self.band[1]",
                       "return self.band[0] <= self.probability"),
    "framing_dropped": ("the framing check ('Cropped film?') dropped from predictions", "pneumo/infer/predictor.py",
                        "framing = lung_fields.framing_reasons(lung_map) if lung_map is not None else []",
                        "framing = []"),
    "not_assessed_drawn": ("heat and lung outline drawn on a film that is not assessed", "pneumo/ui/service.py",
                           "if not p.assessed:  # nothing of the model's answer applies", "if False:"),
    "resize_bilinear": ("uploads resized bilinearly, not bicubically as the training images were",
                        "pneumo/preprocess.py", "return np.asarray(Image.fromarray(gray).resize((size, size), "
                        "Image.BICUBIC))", "return np.asarray(Image.fromarray(gray).resize((size, size), "
                        "Image.BILINEAR))"),
}


def copy_checkout(target: Path) -> None:
    """The tracked files as they are in the working tree (uncommitted edits included), no caches, no .venv."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def apply(target: Path, name: str) -> None:
    _, file, old, new = BREAKAGES[name]
    path = target / file
    text = path.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: '{old}' is not in {file} exactly once; update tools/breakages.py")
    path.write_text(text.replace(old, new))


def failing_tests(target: Path, fast: bool) -> list[str]:
    """The tests that fail in the broken copy (the fast lane, or the whole suite)."""
    lane = ["-m", "not slow"] if fast else []
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *lane], cwd=target,
                         capture_output=True, text=True)
    return sorted(set(re.findall(r"^FAILED (\S+?)(?:\[| - |$)", run.stdout, re.M)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"breakages to try (default: all): {', '.join(BREAKAGES)}")
    parser.add_argument("--fast-only", action="store_true", help="run only the fast lane")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BREAKAGES)
    if unknown:
        parser.error(f"unknown breakage(s): {', '.join(sorted(unknown))}")
    print("| breakage | caught by the fast lane | caught only by the full suite |\n|---|---|---|", flush=True)
    missed = 0
    for name in args.names or BREAKAGES:
        with tempfile.TemporaryDirectory(prefix=f"breakage-{name}-") as folder:
            copy_checkout(Path(folder))
            apply(Path(folder), name)
            fast = failing_tests(Path(folder), fast=True)
            full = [] if fast or args.fast_only else failing_tests(Path(folder), fast=False)
        missed += not (fast or full)
        print(f"| {BREAKAGES[name][0]} | {shown(fast) or '-'} | {shown(full) or ('-' if fast else 'NOT CAUGHT')} |",
              flush=True)
    return 1 if missed else 0


def shown(tests: list[str]) -> str:
    return ", ".join(f"`{t}`" for t in tests[:3]) + (f" (+{len(tests) - 3})" if len(tests) > 3 else "")


if __name__ == "__main__":
    sys.exit(main())
