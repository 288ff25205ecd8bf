"""Finer lung pooling: does pooling block5 at 14x14 put more of the heat on the lungs, and what does it cost?

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_pooling_finer

The linear head of `--head linear` (log1p, BN, Dense(1), L2 0.01) on the plain view, the same patient-wise
fit/validation split and sensitivity95 threshold as train.py; shift_dev is only scored. For each pooling, one row
per seed (the head's initialisation and batch order; --seeds):
- block5_pool 7x7, each cell weighted by its share of the raw lung map (what `--pooling lungs` ships);
- the same, weighted by the lung fields (the hulls the app outlines) instead of the raw map;
- block5_conv3 14x14, each position weighted by its share of the raw lung map, or of the lung fields;
- block5_conv3 zeroed outside the lungs (positions at least half lung), then block5's 2x2 max-pool, each cell
  weighted by its share of lung positions.
Heat: each position's gradient x activation times its weight in the pooling, share inside the lung fields and
inside the raw lung map, on shift_dev pneumonia films called PNEUMONIA. Needs one pass over train/ keeping
block5_conv3 (~1 GB float16, ~20 minutes, cached beside tools.lung_pooling's maps).

`--views`: every head is also fitted on view 1 of each fit film (what `train.py --views 1` adds to the shipped
recipe: `pneumo.preprocess.AugmentConfig`, the same seeded draw per file), pooled the same way from the view's own
block5_conv3 and lung map; one more pass over the fit films (~0.9 GB, ~15 minutes) on first use.
"""

from __future__ import annotations

import sys

import numpy as np
from tqdm.auto import tqdm

from tools.lung_pooling import CACHE, _row, film_heats, fit, setup, tool_parser


def cached_conv3(paths, trunk, key: str) -> np.ndarray:
    """block5_conv3 of every training film (float16, memory-mapped), computed once."""
    from pneumo.io import read_image
    from pneumo.preprocess import to_model_input

    path = CACHE / f"train-conv3-{key}.npy"
    if not path.is_file():
        partial = path.with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(paths), 14, 14, 512))
        for start in tqdm(range(0, len(paths), 16), desc="block5_conv3", unit="batch"):
            batch = np.stack([to_model_input(read_image(p)) for p in paths[start:start + 16]])
            out[start:start + len(batch)] = trunk(batch, every=True)[0].astype(np.float16)
        out.flush()
        del out
        partial.rename(path)
    return np.load(path, mmap_mode="r")


def cached_view_maps(paths, trunk, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(block5_conv3 float16 memory-mapped, lung maps uint8) of view 1 of each file, computed once."""
    from pneumo.io import read_image
    from pneumo.preprocess import AugmentConfig, model_input_for_view
    from pneumo.train.features import file_hash

    conv3_path, lungs_path = CACHE / f"views1-conv3-{key}.npy", CACHE / f"views1-lungs-{key}.npy"
    if not conv3_path.is_file():
        partial = conv3_path.with_suffix(".partial.npy")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(paths), 14, 14, 512))
        lungs = np.zeros((len(paths), 56, 56), np.uint8)
        for start in tqdm(range(0, len(paths), 16), desc="view 1: block5_conv3 + lungs", unit="batch"):
            batch = np.stack([model_input_for_view(read_image(p), file_hash(p), 1, AugmentConfig())
                              for p in paths[start:start + 16]])
            activations, lung = trunk(batch, every=True)
            out[start:start + len(batch)] = activations.astype(np.float16)
            lungs[start:start + len(batch)] = np.rint(lung[..., 0] * 255).astype(np.uint8)
        out.flush()
        del out
        np.save(lungs_path, lungs)
        partial.rename(conv3_path)
    return np.load(conv3_path, mmap_mode="r"), np.load(lungs_path)


def pool_7x7(conv3, lungs, hull: bool):
    from pneumo.infer.lungs import lung_fields
    from pneumo.model.backends import lung_pool_inputs

    masks = np.stack([lung_fields(m) for m in lungs]).astype(np.float32) if hull else lungs
    return lung_pool_inputs(conv3, masks)


def pool_14x14(conv3, lungs, hull: bool = False):
    from pneumo.infer.lungs import lung_fields
    from pneumo.model.pooling import cell_weights, weighted_average

    masks = np.stack([lung_fields(m) for m in lungs]).astype(np.float32) if hull else lungs
    weights = cell_weights(masks, (14, 14))
    return weighted_average(conv3, weights), weights


def masked_max(conv3, lungs):
    from pneumo.model.backends import max_pool2
    from pneumo.model.pooling import MIN_CELLS, cell_weights, weighted_average

    inside = (cell_weights(lungs, (14, 14)) >= 0.5).astype(np.float32)
    cells = inside.reshape(len(inside), 7, 2, 7, 2).mean(axis=(2, 4))
    empty = cells.sum(axis=(1, 2)) < MIN_CELLS
    inside[empty], cells[empty] = 1.0, 1.0  # no lungs: every position counts, as for global average pooling
    return weighted_average(max_pool2(conv3 * inside[..., None]), cells), inside * cells.repeat(2, axis=1).repeat(2, axis=2)


POOLINGS = {
    "block5_pool 7x7, raw lung map (shipped)": lambda c, m: pool_7x7(c, m, hull=False),
    "block5_pool 7x7, lung fields (hulls)": lambda c, m: pool_7x7(c, m, hull=True),
    "block5_conv3 14x14, raw lung map": pool_14x14,
    "block5_conv3 14x14, lung fields (hulls)": lambda c, m: pool_14x14(c, m, hull=True),
    "block5_conv3 zeroed outside the lungs, max-pooled, 7x7": masked_max,
}


def features(pooling, conv3, lungs, chunk: int = 256):
    parts = [pooling(np.asarray(conv3[i:i + chunk], np.float32), lungs[i:i + chunk] / 255.0)
             for i in range(0, len(lungs), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def report_head(name, seed, head, val_x, shift_raw, found, fields, heats_of) -> None:
    """Print one fitted head's row: validation and shift_dev at the sensitivity95 threshold chosen on validation,
    and the heat of the shift_dev pneumonia films it calls PNEUMONIA (`heats_of(head, chosen)` -> heatmaps)
    inside the lung fields and the raw lung map."""
    from pneumo.infer.lungs import heat_in_lungs
    from pneumo.train.metrics import choose_threshold

    y, shift_lungs = found.y, found.maps["shift"]["lungs"]
    val_p = head.predict(val_x, verbose=0)[:, 0]
    shift_p = head.predict(np.log1p(shift_raw), verbose=0)[:, 0]
    threshold = choose_threshold(y["val"], val_p, "sensitivity95")
    chosen = np.flatnonzero((y["shift"] == 1) & (shift_p >= threshold))
    heats = heats_of(head, chosen)
    in_fields = np.mean([heat_in_lungs(h, fields[k]) for h, k in zip(heats, chosen)])
    in_raw = np.mean([heat_in_lungs(h, (shift_lungs[k] >= 128).astype(np.uint8)) for h, k in zip(heats, chosen)])
    _row(name, seed, threshold, y, val_p, shift_p, in_fields, f" | {in_raw:.1%}")


def main(argv=None) -> int:
    parser = tool_parser(__doc__, seeds=3)
    parser.add_argument("--views", action="store_true",
                        help="also fit on view 1 of every fit film (train.py --views 1)")
    parser.add_argument("--only", default=None, help="only the poolings whose name contains this text")
    args = parser.parse_args(argv)
    found = setup(args.model)
    from pneumo.infer.lungs import lung_fields

    rows, y, shift = found.rows, found.y, found.maps["shift"]
    lungs = {"train": found.maps["train"]["lungs"], "shift": shift["lungs"]}
    conv3 = {"train": cached_conv3([s.path for s in found.train], found.trunk, found.key),
             "shift": shift["activations"]}
    fields = [lung_fields(m / 255.0) for m in lungs["shift"]]
    fit_y = y["fit"]
    if args.views:
        fit_paths = [found.train[i].path for i in rows["fit"]]
        conv3["views"], lungs["views"] = cached_view_maps(fit_paths, found.trunk, found.key)
        fit_y = np.concatenate([y["fit"], y["fit"]])
    print("| pooling | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "heat in lung fields | heat in raw lung map |\n|---|---|---|---|---|---|")
    for name, pooling in POOLINGS.items():
        if args.only and args.only not in name:
            continue
        train_x = np.log1p(features(pooling, conv3["train"], lungs["train"])[0])
        fit_x = train_x[rows["fit"]]
        if args.views:
            fit_x = np.concatenate([fit_x, np.log1p(features(pooling, conv3["views"], lungs["views"])[0])])
        shift_raw, positions = features(pooling, conv3["shift"], lungs["shift"])
        for seed in range(args.seeds):
            head = fit("linear", fit_x, fit_y, train_x[rows["val"]], y["val"], seed)
            report_head(name, seed, head, train_x[rows["val"]], shift_raw, found, fields,
                        lambda h, chosen: film_heats(h, shift_raw, shift["activations"], chosen, positions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
