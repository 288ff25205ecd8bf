"""config.json through BundleConfig: read and checked once, written back exactly as read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from pneumo.model import bundle as bundles

SHIPPED = json.loads((ROOT / "weights" / bundles.CONFIG).read_text())


def fake_bundle(folder: Path, config: dict) -> Path:
    """A folder load_bundle reads: the config and an (empty) head file, which loading the config never opens."""
    folder.mkdir()
    (folder / bundles.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (folder / bundles.HEAD_WEIGHTS).write_bytes(b"")
    return folder


def test_the_shipped_config_is_written_back_byte_for_byte(tmp_path):
    config = bundles.load_bundle(ROOT / "weights").config
    bundles.save_config(tmp_path, config)
    assert (tmp_path / bundles.CONFIG).read_text() == (ROOT / "weights" / bundles.CONFIG).read_text()
    assert config.calibration.factory_threshold == SHIPPED["calibration"]["factory_threshold"]


def test_unknown_and_absent_keys_round_trip_in_their_order(tmp_path):
    raw = {"future": {"a": 1}, **{k: v for k, v in SHIPPED.items() if k != "precision"}}
    raw["calibration"] = {**raw["calibration"], "note": "kept"}
    config = bundles.load_bundle(fake_bundle(tmp_path / "b", raw)).config
    assert config.extra == {"future": {"a": 1}} and config.calibration.extra == {"note": "kept"}
    assert config.precision is None and config.trunk_precision == "fp32", "bundles made before int8 ran fp32"
    written = config.to_dict()
    assert written == raw and list(written) == list(raw)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("threshold"), "lacks threshold"),
    (lambda c: c["calibration"].pop("folder"), "calibration lacks folder"),
    (lambda c: c.update(borderline=[0.9, 0.1]), "low <= high"),
    (lambda c: c.update(threshold="high"), "expected a probability"),
    (lambda c: c.update(precision="int4"), "precision 'int4'"),
])
def test_a_damaged_config_is_refused_on_load(tmp_path, change, message):
    raw = json.loads(json.dumps(SHIPPED))
    change(raw)
    with pytest.raises(ValueError, match=message):
        bundles.load_bundle(fake_bundle(tmp_path / "b", raw))
