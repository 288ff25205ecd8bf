"""A hospital the checks have never seen, onboarded by `pneumo calibrate` (real backbone, the shipped bundle).

The site is tools/site_report.py's synthetic other hospital (the shipped checks flag its films), made smaller: every
NORMAL validation patient and every 2nd PNEUMONIA one, half of them calibrating, half new.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, SHARED, real_backbone

pytestmark = [pytest.mark.slow,  # calibrates the shipped bundle on a synthetic hospital: ~2 minutes
              pytest.mark.skipif(not (SHARED / "data" / "adult_dev").is_dir(), reason="needs ../shared/data")]


@pytest.fixture(scope="module")
def onboarded(tmp_path_factory):
    from pneumo.infer.predictor import Predictor
    from pneumo.ui.calibrate import check_folder, run_calibrate
    from tools.site_report import outside_sets, site_halves, write_site

    before = Predictor.load(ROOT / "weights", real_backbone())
    calibration, new = site_halves(before, step=2)
    work = tmp_path_factory.mktemp("site")
    folder, held = write_site(calibration, work / "clinic"), write_site(new, work / "new")
    printed = []
    run_calibrate(before, folder, check_folder(folder, work / "out", out=printed.append), work / "out",
                  out=printed.append)
    new_paths = [held / p.parent.name / (p.stem + ".png") for p in (s.path for s in new)]
    return before, Predictor.load(work / "out", real_backbone()), new_paths, [s.label for s in new], \
        outside_sets(before), work / "out", printed


def answers(predictor, paths):
    from pneumo.infer.predictor import predict_paths

    return [p for _, p, error in predict_paths(predictor, list(paths)) if error is None]


def test_the_new_sites_new_patients_are_assessed_after_calibration_only(onboarded):
    before, after, new_paths, labels, *_ = onboarded
    was, now = answers(before, new_paths), answers(after, new_paths)
    assert np.mean([p.assessed for p in was]) < 0.2, "the shipped checks flag this site"
    assert np.mean([p.assessed for p in now]) >= 0.95
    called = [(p.side == "PNEUMONIA", y == 1) for p, y in zip(now, labels) if p.assessed]
    assert np.mean([c for c, truth in called if truth]) >= 0.9  # sensitivity of new patients at the new threshold


def test_adults_and_other_body_parts_stay_out(onboarded):
    _, after, _, _, outside, *_ = onboarded
    adults = answers(after, outside["adult_dev, held-out patients aged 18+"])
    assert np.mean([not p.assessed for p in adults]) >= 0.95
    others = answers(after, outside["not_chest_dev (hands, pelvises)"][::2])
    assert all(not p.looks_like_chest_xray for p in others)


def test_the_bundle_and_the_printout_say_what_changed(onboarded):
    *_, out, printed = onboarded
    block = json.loads((out / "config.json").read_text())["calibration"]["site_checks"]
    rows = block["per_class"]
    assert rows["PNEUMONIA"]["unlike_before"] > 0.8 * rows["PNEUMONIA"]["scored"]
    assert rows["NORMAL"]["unlike_after"] <= 0.1 * rows["NORMAL"]["scored"]
    assert block["population"]["extended"] and block["population"]["held_out_adults"]["flagged_after"] >= 0.95
    assert any(line.startswith("the population check now takes this site's films") for line in printed)
    assert "| class | scored |" in (out / "README.md").read_text()
