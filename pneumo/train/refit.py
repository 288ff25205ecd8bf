"""`train.py --refit-checks BUNDLE`: a copy of a bundle whose two checks are fitted anew, everything else kept.

The checks read the trunk's pooled features and the lung map, and neither changes when a check does: so the
pneumonia head, the lung-field head, the threshold and a calibration stay byte for byte, and with them the
verdicts, the heatmaps and the speed. The pediatric patient split is the bundle's own (its recipe's seed and
validation share), so its validation patients stay out of every fit.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from ..infer.chest_check import CHEST_FILE
from ..infer.population import POPULATION_FILE
from ..model import build, card
from ..model import bundle as bundles
from ..model.pooling import LUNG_ZONES
from .checks import fit_checks
from .data import find_data
from .loop import Extractor
from .options import TrainConfig

REWRITTEN = {CHEST_FILE, bundles.CONFIG, "README.md"}  # and the population check's file, where one is fitted


def refit_checks(config: TrainConfig, log=print) -> Path:
    """Refit both checks of `config.refit_checks` on this run's data folders; write the copy to `config.output`."""
    bundle = bundles.load_bundle(config.refit_checks)
    recipe = bundle.config.recipe
    config = replace(config, seed=recipe["seed"], val_fraction=recipe["val_fraction"],
                     input_size=int(bundle.config.input_size), pooling=bundle.config.head["pooling"],
                     precision=bundle.precision)
    data = find_data(config)  # a folder that is not what it should be fails here, before any model is built
    decoder = bundles.load_lung_decoder(bundle) if config.pooling == LUNG_ZONES else None
    extract = Extractor(config, build.build_backbone(config.backbone, config.input_size), decoder,
                         bundles.load_int8_ranges(bundle))
    train = extract(data.train, "train")
    (chest, chest_stats), (population, population_stats) = fit_checks(
        config, extract, data, train.subset(data.fit), train.subset(data.validation), log)
    source = bundle.config
    cfg = replace(source, chest_check=chest_stats,
                  population=source.population if population is None else population_stats,
                  checks_refit={"command": config.command(), "backbone_passes": extract.computed,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                  extra={k: v for k, v in source.extra.items() if k != "ood"})  # "ood": the check before chest_check
    # Without --adult-dir no population check is fitted: the bundle's own stays, file and figures.
    rewritten = REWRITTEN if population is None else REWRITTEN | {POPULATION_FILE}
    with bundles.writing(config.output) as folder:
        for path in bundle.path.iterdir():
            if path.is_file() and path.name not in rewritten:
                shutil.copy2(path, folder / path.name)
        chest.save(folder / CHEST_FILE)
        if population is not None:
            population.save(folder / POPULATION_FILE)
        card.save(folder, cfg)
    return Path(config.output)

