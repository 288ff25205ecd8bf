"""Refresh the README's screenshots (docs/screenshots/) from the browser tests, then say which files changed.

The browser tests write their screenshots to a temporary folder, so that running the tests never changes tracked
files; this tool is the one deliberate way to update the pictures: it runs them with PNEUMO_SCREENSHOTS_DIR set to
docs/screenshots/. It needs what the tests need: the real backbone and Debian's chromium.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.screenshots [pytest args]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tools.appserver import ROOT

SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")  # the one tests/test_browser.py drives


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def main(argv: list[str]) -> int:
    weights = os.environ.get("PNEUMO_BACKBONE_WEIGHTS", "")
    if not weights or not Path(weights).is_file():
        print("set PNEUMO_BACKBONE_WEIGHTS to the real VGG16 file, e.g. "
              "../shared/weights/vgg16_imagenet_notop.weights.h5: the screenshots show the shipped model")
        return 2
    if not CHROMIUM.exists():
        print(f"no {CHROMIUM}: apt-get install -y chromium (the browser tests drive Debian's chromium)")
        return 2
    SHOTS.mkdir(parents=True, exist_ok=True)
    before = digests(SHOTS)
    env = {**os.environ, "PNEUMO_SCREENSHOTS_DIR": str(SHOTS)}
    status = subprocess.run([sys.executable, "-m", "pytest", "tests/test_browser.py", *argv], cwd=ROOT,
                            env=env).returncode
    after = digests(SHOTS)
    changed = sorted(name for name in after if before.get(name) != after[name])
    print(f"changed in {SHOTS.relative_to(ROOT)}/: {', '.join(changed) if changed else 'nothing'}")
    if status:
        print(f"the browser tests failed (pytest exit {status}): the screenshots may be incomplete")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
