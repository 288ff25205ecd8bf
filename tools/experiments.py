"""Rerun the recipe table of docs/experiments.md: each row is one train.py command.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.experiments

Prints one markdown row per recipe (validation = held-out train patients; shift_dev = other patients,
measured only). Rows share the feature cache, so only the first run of each view pays for the backbone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RECIPES = [  # preprocessing v2 (outer 10% cut); the v1 rows of docs/experiments.md came from commit 75c549f
    "--threshold-rule youden",
    "",
    "--views 1 --augment-classes NORMAL",
    "--views 1 --threshold-rule youden",
    "--views 1",
    "--views 1 --seed 1",
    "--views 1 --seed 2",
]


def row(args: str, out: Path) -> str:
    command = f"python train.py --data-dir ../shared/data/chest_xray --report shift_dev=../shared/data/shift_dev {args}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "train.py", "--data-dir", str(DATA / "chest_xray"), "--output", str(out),
                    "--report", f"shift_dev={DATA / 'shift_dev'}", *args.split()], cwd=ROOT, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - start
    config = json.loads((out / "config.json").read_text())
    m = config["metrics"]
    passes = sum(config["data_counts"]["fit"].values()) + sum(config["data_counts"]["validation"].values())
    views = config["recipe"]["views"]
    augmented = sum(config["data_counts"]["fit"][c] for c in config["recipe"]["augment_classes"]) * views

    def cells(split):
        s = m[split]
        return f"{s['accuracy']:.3f} / {s['sensitivity']:.3f} / {s['specificity']:.3f} / {s['auc']:.3f}"

    return (f"| `{args or '(defaults)'}` | {config['threshold']:.3f} | {cells('validation')} | {cells('shift_dev')} "
            f"| {passes + augmented} | {seconds:.0f} | `{command}` |")


def main() -> None:
    print("| recipe | threshold | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC "
          "| backbone passes (cold) | this run, s | command |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, args in enumerate(sys.argv[1:] or RECIPES):
            print(row(args, Path(tmp) / f"b{i}"), flush=True)


if __name__ == "__main__":
    main()
