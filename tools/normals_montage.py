"""Which normal children does the model call pneumonia? A montage of shift_dev's NORMAL images.

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.normals_montage docs/shift_dev_normals_framing.jpg

Top row: the 8 normals with the lowest probability of pneumonia; bottom row: the 8 with the highest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> None:
    from pneumo.infer.predictor import predict_paths
    from pneumo.io.folders import scan_class_folder
    from pneumo.infer.predictor import Predictor

    predictor = Predictor.load()
    normals = [s.path for s in scan_class_folder(ROOT.parent / "shared" / "data" / "shift_dev") if s.label == 0]
    scored = sorted((p.probability, path) for path, p, _ in predict_paths(predictor, normals))
    picks = scored[:8] + scored[-8:]
    tiles = [np.asarray(Image.open(path).convert("L").resize((160, 160))) for _, path in picks]
    Image.fromarray(np.vstack([np.hstack(tiles[:8]), np.hstack(tiles[8:])])).save(out, quality=85)
    print("top row p(pneumonia):", " ".join(f"{p:.2f}" for p, _ in picks[:8]))
    print("bottom row p(pneumonia):", " ".join(f"{p:.2f}" for p, _ in picks[8:]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "shift_dev_normals.jpg"))
