"""Lung zones: does pooling block5 separately over each lung, or each lung's upper and lower half, tell normal
children from pneumonia better than one average over both lungs?

    PNEUMO_BACKBONE_WEIGHTS=../shared/weights/vgg16_imagenet_notop.weights.h5 python -m tools.lung_zones [--views]

Why: pooling a grid of the whole view raised the AUC of the frozen features most (shared/notes/measured-levers.md,
3x3 grid: 0.955 against 0.933 for global average), and pneumonia is often in one lung or one zone, which one
average over both lungs dilutes. Zones of the lung map keep that spatial detail without reading the frame.
Each zone is a part of the raw lung map (p >= 0.5): the half of the view it lies in (one lung each), and for four
or six zones bands of each lung holding equal shares of its area (upper / lower half, or thirds). block5_pool is
averaged over each zone as the shipped model averages it over both lungs (each 7x7 cell weighted by its share of
the zone), the zones' averages are concatenated (512 per zone) and go through the same log1p -> BN -> Dense(1)
head with L2 0.01, the same patient split and sensitivity95 threshold as train.py; shift_dev is only scored. One
row per seed (--seeds), or per group of heads whose logits are averaged (--average, as train.py --heads).
The zones are `pneumo.model.pooling.zone_masks`, what `train.py --pooling lung-zones` pools over.
Heat (channel-mean form, as the other tools' rows): each block5_conv3 position's activations times the gradient
of its zones' features, weighted by its share of each zone, ReLU; share inside the lung fields and the raw map, on
shift_dev pneumonia films called PNEUMONIA. Reads the caches of tools.lung_pooling_finer (computed there if
missing: ~20 minutes for train/, ~15 more with --views).
"""

from __future__ import annotations

import sys

import numpy as np

from pneumo.train.heads import fold_into
from tools.lung_pooling import fit, logit_gradient, setup, tool_parser
from tools.lung_pooling_finer import cached_conv3, cached_view_maps, report_head

ZONINGS = {"both lungs, one average (shipped)": 1, "each lung": 2, "each lung, upper and lower half": 4,
           "each lung, upper, middle and lower third": 6}


def zone_features(conv3, lungs, zones: int, chunk: int = 256, grid: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, 512 * zones), position weights (n, zones, 14, 14)): the product's own pooling, in chunks.

    grid 14: the zones pool block5_conv3 itself (each 14x14 position weighted by its share of the zone), not
    block5_pool: a position straddling the lung outline sees half as much beyond it as a 7x7 cell."""
    from pneumo.model.backends import lung_pool_inputs

    parts = [lung_pool_inputs(np.asarray(conv3[i:i + chunk], np.float32), lungs[i:i + chunk] / 255.0, zones,
                              fine=grid == 14)
             for i in range(0, len(lungs), chunk)]
    positions = np.concatenate([p[1] for p in parts])
    return np.concatenate([p[0] for p in parts]), positions[:, None] if positions.ndim == 3 else positions


def zone_heats(head, feats, activations, chosen, positions) -> list[np.ndarray]:
    """Each chosen film's heatmap: sum over zones of (activations . zone gradient) x the position's zone weight."""
    x = feats[chosen]
    gradient = logit_gradient(head, np.log1p(x)) / (1 + x)
    zones = positions.shape[1]
    heats = []
    for k, g in zip(chosen, gradient):
        per_zone = activations[k].astype(np.float32) @ g.reshape(zones, -1).T  # (14, 14, zones)
        heats.append(np.maximum((per_zone * np.moveaxis(positions[k], 0, -1)).sum(axis=-1), 0))
    return heats


def main(argv=None) -> int:
    parser = tool_parser(__doc__, seeds=3)
    parser.add_argument("--views", action="store_true",
                        help="also fit on view 1 of every fit film (train.py --views 1)")
    parser.add_argument("--normal-views-only", action="store_true",
                        help="with --views: only the normal fit films' views (train.py --augment-classes NORMAL)")
    parser.add_argument("--average", type=int, default=1,
                        help="each row's head is the mean logit of this many heads (seeds s, s+1, ...)")
    parser.add_argument("--only", default=None, help="only the zonings whose name contains this text")
    parser.add_argument("--fields", action="store_true",
                        help="zone the lung fields (the hulls the app outlines) instead of the raw lung map")
    parser.add_argument("--grid", type=int, choices=(7, 14), default=7,
                        help="pool block5_pool (7, the product) or block5_conv3 (14) over each zone")
    args = parser.parse_args(argv)
    found = setup(args.model)
    from pneumo.infer.lungs import lung_fields

    rows, y, shift = found.rows, found.y, found.maps["shift"]
    train_conv3 = cached_conv3([s.path for s in found.train], found.trunk, found.key)
    fields = [lung_fields(m / 255.0) for m in shift["lungs"]]
    # which fit films' views join the fit (views are cached for all of them; --normal-views-only keeps a third)
    viewed = (y["fit"] == 0) if args.normal_views_only else np.ones(len(y["fit"]), bool)
    fit_y = np.concatenate([y["fit"], y["fit"][viewed]]) if args.views else y["fit"]
    maps = {"train": found.maps["train"]["lungs"], "shift": shift["lungs"]}
    if args.views:
        view_conv3, maps["views"] = cached_view_maps([found.train[i].path for i in rows["fit"]], found.trunk,
                                                     found.key)
    if args.fields:  # as 0/255 maps, so zone_features reads them like the raw ones
        maps = {k: np.stack([lung_fields(m / 255.0) for m in v]).astype(np.uint8) * 255 for k, v in maps.items()}
    print("| pooling | seed | validation acc / sens / spec / AUC | shift_dev acc / sens / spec / AUC | "
          "heat in lung fields | heat in raw lung map |\n|---|---|---|---|---|---|")
    for name, zones in ZONINGS.items():
        if args.only and args.only not in name:
            continue
        train_x = np.log1p(zone_features(train_conv3, maps["train"], zones, grid=args.grid)[0])
        fit_x = train_x[rows["fit"]]
        if args.views:
            view_x = np.log1p(zone_features(view_conv3, maps["views"], zones, grid=args.grid)[0])
            fit_x = np.concatenate([fit_x, view_x[viewed]])
        shift_raw, positions = zone_features(shift["activations"], maps["shift"], zones, grid=args.grid)
        for seed in range(args.seeds):
            heads = [fit("linear", fit_x, fit_y, train_x[rows["val"]], y["val"], seed * args.average + k)
                     for k in range(args.average)]
            head = heads[0]
            fold_into(head, heads)  # their mean logit, in one head (as train.py --heads K ships it)
            report_head(name, seed, head, train_x[rows["val"]], shift_raw, found, fields,
                        lambda h, chosen: zone_heats(h, shift_raw, shift["activations"], chosen, positions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
