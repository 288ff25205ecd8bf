"""Patient ids, the patient-wise split, and the metric/threshold arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.io.folders import Sample, patient_id, resolve_eval_folder, scan_class_folder, split_by_patient
from pneumo.stats.metrics import binary_metrics, choose_threshold, roc_auc


@pytest.mark.parametrize("name, patient", [
    ("person1234_bacteria_5678.jpeg", "person1234"),
    ("person77_virus_140.jpeg", "person77"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0033-0001-0002.jpeg", "IM-0033"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("scan.png", "scan"),
])
def test_patient_id(name, patient):
    assert patient_id(name) == patient


def _samples(n_patients: int, images: int, label: int) -> list[Sample]:
    return [Sample(Path(f"p{label}_{p}_{i}.jpeg"), label, f"{label}/p{p}")
            for p in range(n_patients) for i in range(images)]


def test_split_keeps_patients_whole_is_stratified_and_seeded():
    samples = _samples(40, 3, 0) + _samples(100, 2, 1)
    fit, val = split_by_patient(samples, 0.2, seed=7)
    assert {s.patient for s in fit}.isdisjoint({s.patient for s in val})
    assert len(fit) + len(val) == len(samples)
    assert len({s.patient for s in val if s.label == 0}) == 8 and len({s.patient for s in val if s.label == 1}) == 20
    assert split_by_patient(samples, 0.2, seed=7) == (fit, val)
    assert split_by_patient(samples, 0.2, seed=8)[1] != val


def test_scan_reports_missing_class_folder(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(ValueError, match="missing: PNEUMONIA"):
        scan_class_folder(tmp_path)


def test_eval_folder_accepts_kaggle_root(tiny_data):
    assert resolve_eval_folder(tiny_data) == tiny_data / "test"
    assert resolve_eval_folder(tiny_data / "val") == tiny_data / "val"
    with pytest.raises(ValueError, match="neither NORMAL"):
        resolve_eval_folder(tiny_data / "train" / "NORMAL")


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise)


def test_metrics_on_a_known_confusion():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.9, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95]
    m = binary_metrics(y, p, 0.5)
    assert m["confusion"] == [[3, 1], [1, 5]]
    assert (m["accuracy"], m["sensitivity"], m["specificity"]) == (0.8, 5 / 6, 0.75)
    assert m["precision"] == pytest.approx(5 / 6) and m["f1"] == pytest.approx(5 / 6)


def test_threshold_rules():
    y = np.array([0] * 50 + [1] * 50)
    p = np.concatenate([np.linspace(0.0, 0.6, 50), np.linspace(0.4, 1.0, 50)])
    youden = choose_threshold(y, p, "youden")
    m = binary_metrics(y, p, youden)
    best = max(binary_metrics(y, p, t)["sensitivity"] + binary_metrics(y, p, t)["specificity"]
               for t in np.linspace(0, 1, 501))
    assert m["sensitivity"] + m["specificity"] == pytest.approx(best)
    assert binary_metrics(y, p, choose_threshold(y, p, "sensitivity95"))["sensitivity"] >= 0.95
    with pytest.raises(ValueError, match="must be one of"):
        choose_threshold(y, p, "magic")


def test_the_band_is_where_a_resampled_threshold_falls_on_both_sides():
    from pneumo.stats.metrics import band_stats, choose_threshold, threshold_band

    def site(n, seed):
        rng = np.random.default_rng(seed)
        y = np.r_[np.zeros(n), np.ones(n)]
        patients = np.array([f"{k:05d}" for k in range(2 * n)])  # sorted as strings = in order
        return y, np.clip(np.r_[rng.normal(0.3, 0.2, n), rng.normal(0.7, 0.2, n)], 0, 1), patients

    def rule(labels, scores, _):
        return choose_threshold(labels, scores, "sensitivity95")

    y, p, patients = site(100, 0)
    threshold = rule(y, p, None)
    low, high = threshold_band(y, p, patients, rule, threshold, resamples=300)
    assert low < threshold < high, "two-sided: NORMAL calls just under the threshold are borderline too"
    # Written out apart: the 5th and 95th percentiles of the rule's threshold over patient resamples.
    rng, found = np.random.default_rng(0), []
    for _ in range(300):
        index = np.r_[100 + rng.integers(0, 100, 100), rng.integers(0, 100, 100)]  # pneumonia patients first
        found.append(rule(y[index], p[index], None))
    assert (low, high) == pytest.approx(tuple(np.quantile(found, [0.05, 0.95])), abs=1e-12)
    y10, p10, patients10 = site(1000, 1)  # ten times the patients: a surer threshold, a narrower band
    low10, high10 = threshold_band(y10, p10, patients10, rule, rule(y10, p10, None), resamples=300)
    assert high10 - low10 < (high - low) / 2
    stats = band_stats(y, p, threshold, (low, high))
    assert stats["inside"] == int(((p >= low) & (p <= high)).sum()) and stats["accuracy_inside"] < stats[
        "accuracy_outside"]
    with pytest.raises(ValueError, match="films of both classes"):
        threshold_band(np.ones(4), np.ones(4), np.arange(4).astype(str), rule, 0.5)


def test_ranking_bound_is_the_best_specificity_any_threshold_reaches_at_sensitivity95():
    from pneumo.stats.metrics import ranking_bound

    # 20 pneumonia films: the lowest one may be missed (19/20 = 0.95); 10 normals, 3 of them above the 2nd-lowest
    # pneumonia score, so no threshold keeping sensitivity >= 0.95 can do better than specificity 0.7
    pneu = np.linspace(0.5, 1.0, 20)
    normal = np.r_[np.linspace(0.0, 0.3, 7), [0.6, 0.8, 0.99]]
    y, p = np.r_[np.ones(20), np.zeros(10)], np.r_[pneu, normal]
    bound = ranking_bound(y, p)
    assert bound["sensitivity"] == pytest.approx(0.95) and bound["specificity"] == pytest.approx(0.7)
    best = max(binary_metrics(y, p, t)["specificity"] for t in np.linspace(0, 1, 1001)
               if binary_metrics(y, p, t)["sensitivity"] >= 0.95)
    assert bound["specificity"] == pytest.approx(best)
    assert ranking_bound(np.ones(5), np.linspace(0, 1, 5)) is None  # one class: nothing to bound


def test_a_share_of_zero_holds_out_nothing_and_a_bad_share_is_named():
    samples = _samples(5, 2, 0)
    assert split_by_patient(samples, 0.0, seed=1) == (samples, [])
    with pytest.raises(ValueError, match=r"held out must be in \[0, 1\), got 1.5"):
        split_by_patient(samples, 1.5, seed=1)


def test_find_data_splits_every_folder_once_by_patient_and_age(tiny_data, tmp_path):
    import synth

    from pneumo.train.data import ADULT_FOLDERS, LUNG_MASK_IMAGES, find_data
    from pneumo.train.options import TrainConfig

    for folder in ("adults", "masks/images", "hands"):
        (tmp_path / folder).mkdir(parents=True)
    adults = synth.adult_folder(tmp_path / "adults")
    (adults / "metadata.csv").write_text("file,age\n" + "".join(  # patient 10000003 is 12 years old
        f"{p.name},{12 if p.stem.startswith('10000003') else 50}\n" for p in sorted(adults.glob("*.png"))))
    synth.adult_folder(tmp_path / "masks" / "images", patients=4)
    Image.fromarray(synth.knee()).save(tmp_path / "hands" / "knee.png")
    config = TrainConfig(data_dir=tiny_data, output=None, adult_dirs=(adults,), lung_masks=tmp_path / "masks",
                         not_chest_dirs=(tmp_path / "hands",), report_dirs={"site": tiny_data / "test"}, seed=3)
    data = find_data(config)
    assert {s.patient for s in data.fit}.isdisjoint({s.patient for s in data.validation})
    assert sorted(data.fit + data.validation, key=str) == sorted(data.train, key=str)
    assert list(data.measured) == ["kaggle_val", "test", "site"] and data.measured["site"] == data.measured["test"]
    fit, held_out = data.outside[ADULT_FOLDERS]
    assert len(fit) + len(held_out) == 16 and held_out and not {s.patient for s in fit} & {s.patient for s in held_out}
    assert [s.path.name for s in data.minors] == ["10000003_000.png", "10000003_001.png"]
    assert sum(map(len, data.adults)) == 14 and not set(data.minors) & set(data.adults[0] + data.adults[1])
    assert sum(map(len, data.outside[LUNG_MASK_IMAGES])) == 8 and [s.path.name for s in data.not_chest] == ["knee.png"]
    assert data.counts()["validation"] == {name: sum(s.path.parent.name == name for s in data.validation)
                                           for name in ("NORMAL", "PNEUMONIA")}  # by the films' own folders
    assert find_data(config) == data, "seeded: the same folders give the same split"
