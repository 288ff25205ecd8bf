"""Does this environment hold exactly the versions requirements.lock names? CI runs it after installing.

    python -m tools.check_lock [requirements.lock]

Prints each package whose installed version differs from the lock (or is missing) and exits 1 if any does.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from tools.appserver import ROOT

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)")


def pins(lock: Path) -> dict[str, str]:
    """{package: version} for every `name==version` line of a pip/uv lock file."""
    found = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    if not found:
        raise ValueError(f"'{lock}' names no pinned packages (expected lines like 'gradio==6.31.0').")
    return found


def mismatches(locked: dict[str, str]) -> list[str]:
    out = []
    for name, version in sorted(locked.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            out.append(f"{name}: locked {version}, installed {installed}")
    return out


def main(argv: list[str]) -> int:
    lock = Path(argv[0]) if argv else ROOT / "requirements.lock"
    locked = pins(lock)
    wrong = mismatches(locked)
    for line in wrong:
        print(line)
    print(f"{len(locked) - len(wrong)} of {len(locked)} locked packages installed at their locked version")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
