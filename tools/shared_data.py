"""The workshop's films in ../shared/data, split as a bundle's training run split them: for the tools that measure
a bundle on films its checks were or were not fitted on (one copy of the split, pneumo.train.data)."""

from __future__ import annotations

from pneumo.train.data import TrainingData, find_data
from pneumo.train.options import TrainConfig
from tools.appserver import ROOT

SHARED = ROOT.parent / "shared" / "data"


def training_data(recipe: dict) -> TrainingData:
    """../shared's films as `train.py` (the shipped command) split them for a bundle of this recipe."""
    return find_data(TrainConfig(data_dir=SHARED / "chest_xray", output=None, adult_dirs=(SHARED / "adult_dev",),
                                 lung_masks=SHARED / "lung_masks", not_chest_dirs=(SHARED / "not_chest_dev",),
                                 seed=recipe["seed"], val_fraction=recipe["val_fraction"],
                                 adult_holdout=recipe["adult_holdout"]))
