"""The lung-field head's pieces on synthetic pairs: aligned augmentation, Dice, and a decoder that learns."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.train.fit_lungs import dice, model_view_pair


def two_lungs(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A dark film with two bright ellipses; the mask is exactly the ellipses."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint8)
    for cx in (0.32, 0.68):
        mask[((xx - cx * size) / (0.13 * size)) ** 2 + ((yy - 0.5 * size) / (0.28 * size)) ** 2 < 1] = 1
    return (40 + 170 * mask).astype(np.uint8), mask


def test_dice():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    b = np.zeros_like(a)
    b[:, :5] = True
    assert dice(a, b) == pytest.approx(0.5)


def test_augmented_image_and_mask_move_together():
    gray, mask = two_lungs()
    plain_image, plain_mask = model_view_pair(gray, mask, None, size=64)
    assert plain_image.shape == plain_mask.shape == (64, 64) and set(np.unique(plain_mask)) == {0, 1}
    rng = np.random.default_rng(3)
    for _ in range(5):
        image, moved = model_view_pair(gray, mask, rng, size=64)
        assert not np.array_equal(moved, plain_mask), "the geometry changed"
        inside, outside = image[moved == 1].mean(), image[moved == 0].mean()
        assert inside > outside + 40, "the mask still covers the bright lungs after the same transform"


@pytest.mark.slow
def test_decoder_learns_synthetic_lungs():
    """A random-weight backbone at 64 px and a few views: the decoder beats an all-lungs guess on a new film."""
    from pneumo.model.build import build_backbone
    from pneumo.model.lung_decoder import build_decoder, build_feature_model, feature_function
    from pneumo.train.fit_lungs import fit_decoder, predict_masks, views

    backbone = build_backbone("random", 64)
    features = feature_function(backbone)
    gray, mask = two_lungs()
    pairs = [("a.png", gray, mask), ("b.png", np.fliplr(gray).copy(), np.fliplr(mask).copy())]
    feats, targets = views(pairs, features, n_views=7, seed=0, size=64)
    assert [f.shape[1] for f in feats] == [16, 8, 4] and targets.shape == (16, 16, 16, 1)
    decoder = fit_decoder(build_decoder(), feats, targets, epochs=40)
    new_gray, new_mask = model_view_pair(*two_lungs(), np.random.default_rng(9), size=64)
    from pneumo.preprocess import normalize

    new_feats = [np.asarray(a, np.float16) for a in features(normalize(new_gray)[None])]
    by_keras = build_feature_model(backbone).predict_on_batch(normalize(new_gray)[None])
    for onnx_out, keras_out in zip(features(normalize(new_gray)[None]), by_keras):
        assert np.allclose(onnx_out, keras_out, rtol=1e-4, atol=1e-3), "ONNX and Keras skip activations differ"
    predicted = predict_masks(decoder, new_feats, size=64)[0] > 0.5
    assert dice(predicted, new_mask) > dice(np.ones_like(new_mask), new_mask) + 0.1


def lung_folder(root, n: int = 10):
    """images/ and masks/ of n synthetic films (two bright ellipses, each pair shifted a little)."""
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    gray, mask = two_lungs(128)
    for i in range(n):
        shift = np.float32([[1, 0, i - n // 2], [0, 1, (i % 3) - 1]])
        moved = [cv2.warpAffine(a, shift, (128, 128), flags=cv2.INTER_NEAREST) for a in (gray, mask)]
        cv2.imwrite(str(root / "images" / f"film{i:02d}.png"), moved[0])
        cv2.imwrite(str(root / "masks" / f"film{i:02d}.png"), moved[1] * 255)
    return root


@pytest.fixture(scope="module")
def lung_bundle(tiny_config_factory, tmp_path_factory):
    """The tiny bundle trained again with --lung-masks: the lung head is stored, and cached for the next run."""
    from pneumo.train.loop import run

    masks = lung_folder(tmp_path_factory.mktemp("lung_masks"))
    logs = []
    config = tiny_config_factory(tmp_path_factory.mktemp("bundles") / "lungs", lung_masks=masks, lung_views=2,
                                 lung_epochs=2)
    first = run(config, log=logs.append)
    second = run(tiny_config_factory(tmp_path_factory.mktemp("bundles") / "again", lung_masks=masks, lung_views=2,
                                     lung_epochs=2), log=logs.append)
    return first, second, logs, masks


@pytest.mark.slow
def test_training_stores_a_versioned_lung_head_and_reuses_it(lung_bundle):
    import json

    import cv2

    first, second, logs, folder = lung_bundle
    config = json.loads((first / "config.json").read_text())
    assert (first / "lungs.npz").is_file() and config["lungs"]["version"] == 1
    assert config["lungs"]["fit_pairs"] == 9 and config["lungs"]["heldout_pairs"] == 1
    # The held-out film is the first (every 10th is held out): its Dice, measured again through the served model.
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image
    from pneumo.train.fit_lungs import model_view_pair

    image = read_image(folder / "images" / "film00.png")
    mask = model_view_pair(image.gray, cv2.imread(str(folder / "masks" / "film00.png"), 0) > 0, None,
                           size=int(config["input_size"]))[1]
    size = int(config["input_size"])
    lungs = cv2.resize(Predictor.load(first).analyze(image, with_cam=False).lungs, (size, size)) >= 0.5
    served = 2 * np.logical_and(lungs, mask).sum() / (lungs.sum() + mask.sum())
    assert config["lungs"]["heldout_dice_mean"] == pytest.approx(served, abs=0.05)
    assert sum("lung head: reused" in line for line in logs) == 1, "the second run did not retrain the decoder"
    with np.load(first / "lungs.npz") as stored:
        assert all(stored[k].dtype == np.float16 for k in stored.files if k != "version")
    assert (first / "lungs.npz").read_bytes() == (second / "lungs.npz").read_bytes()


def test_older_lung_head_versions_are_refused(tmp_path):
    from pneumo.model.lung_decoder import build_decoder, load_decoder, save_decoder

    save_decoder(build_decoder(), tmp_path / "lungs.npz")
    arrays = dict(np.load(tmp_path / "lungs.npz"))
    np.savez(tmp_path / "old.npz", **{**arrays, "version": 0})
    load_decoder(tmp_path / "lungs.npz")
    with pytest.raises(ValueError, match="version 0"):
        load_decoder(tmp_path / "old.npz")


@pytest.mark.slow
def test_backends_agree_on_lungs_and_heat_in_lungs_is_reported(lung_bundle):
    from pneumo.infer.predictor import Predictor
    from pneumo.io import DecodedImage

    onnx, tf_backend = (Predictor.load(lung_bundle[0], backend=b) for b in ("onnx", "tf"))
    image = DecodedImage(two_lungs(96)[0], "PNG")
    a, b = onnx.analyze(image), tf_backend.analyze(image)
    assert a.lungs.shape == (8, 8) and np.abs(a.lungs - b.lungs).max() < 1e-4
    # The 2-epoch lung head finds no plausible pair here, so the film is not assessed and the JSON holds no share;
    # the share itself is still computed, and must agree across backends.
    assert a.to_json()["heat_in_lungs"] is None and not a.assessed
    assert a.heat_in_lungs > 0 and a.heat_in_lungs == pytest.approx(b.heat_in_lungs, abs=1e-3)


def test_heat_in_lungs_lung_check_and_outline():
    from pneumo.infer import lung_fields

    truth = model_view_pair(*two_lungs(), None, size=56)[1].astype(np.float32)
    fields = lung_fields.lung_fields(truth)
    inside = np.zeros((14, 14), np.float32)
    inside[6:8, 3:5] = 1.0  # on the left lung
    assert lung_fields.heat_in_lungs(inside, fields) > 0.9
    outside = np.zeros((14, 14), np.float32)
    outside[0, 6:8] = 1.0  # above the lungs, between them
    assert lung_fields.heat_in_lungs(outside, fields) < 0.1
    uniform = lung_fields.heat_in_lungs(np.ones((14, 14), np.float32), fields)
    assert uniform == pytest.approx(fields.mean(), abs=0.01), "a uniform map scores the lung area"
    assert lung_fields.heat_in_lungs(np.zeros((14, 14), np.float32), fields) == 0.0

    assert lung_fields.lung_reasons(truth) == []
    one_lung = truth.copy()
    one_lung[:, 28:] = 0
    assert lung_fields.lung_reasons(one_lung) == [lung_fields.NO_LUNGS]
    assert lung_fields.lung_reasons(np.zeros_like(truth)) == [lung_fields.NO_LUNGS]

    film = np.zeros((300, 200, 3), np.uint8)
    drawn = lung_fields.outline(film, fields)
    assert drawn.shape == film.shape and not film.any(), "drawn on a copy"
    changed = drawn.any(axis=2)
    assert changed.any() and not changed[:30].any() and not changed[-30:].any(), "inside the model's view only"


@pytest.mark.slow
def test_predict_and_evaluate_report_heat_in_lungs(lung_bundle, tiny_data, tmp_path, capsys):
    import json

    import cv2

    from pneumo.ui.cli import main

    film = tmp_path / "film.png"
    cv2.imwrite(str(film), two_lungs(96)[0])
    films = [film, *sorted((tiny_data / "test" / "PNEUMONIA").iterdir())]
    assert main(["predict", "--model", str(lung_bundle[0]), *map(str, films)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    from pneumo.infer.predictor import Predictor
    from pneumo.io import read_image

    predictor = Predictor.load(lung_bundle[0])
    found = [predictor.analyze(read_image(f)) for f in films]
    assert not found[0].assessed and records[0]["heat_in_lungs"] is None  # no plausible lungs: no share reported
    assert [r["heat_in_lungs"] for r in records] == [round(p.heat_in_lungs, 4) if p.assessed else None for p in found]
    assert main(["evaluate", "--model", str(lung_bundle[0]), str(tiny_data / "test")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The mean heat_in_lungs of the pneumonia films called PNEUMONIA, worked out again film by film.
    films = sorted((tiny_data / "test" / "PNEUMONIA").iterdir())
    shares = [p.heat_in_lungs for p in map(lambda f: predictor.analyze(read_image(f)), films) if p.side == "PNEUMONIA"]
    expected = round(float(np.mean(shares)), 4) if shares else None
    assert summary["heat_in_lungs_true_pneumonia"] == expected


def test_lung_fields_fill_consolidation_and_ignore_specks():
    from pneumo.infer.lung_fields import heat_in_lungs, lung_fields

    lungs = np.zeros((56, 56), np.float32)
    lungs[10:50, 5:25] = lungs[10:50, 32:50] = 1.0
    lungs[20:30, 10:18] = 0.0  # a consolidated patch: dark in the lung map
    lungs[52:55, 53:55] = 1.0  # a speck over the stomach
    fields = lung_fields(lungs)
    assert fields[25, 12] == 1 and fields[53, 54] == 0
    assert abs(int(fields.sum()) - (40 * 20 + 40 * 18)) <= 12, "both rectangles, corners rounded by the opening"
    heat = np.zeros((14, 14), np.float32)
    heat[6, 3] = 1.0  # on the consolidated patch
    assert heat_in_lungs(heat, fields) > 0.9
    bridged = lungs.copy()
    bridged[10:13, 25:32] = 1.0  # the apices touch over the mediastinum
    fields = lung_fields(bridged)
    assert fields[30, 26:31].sum() == 0, "the space between the lungs below the bridge stays outside"
    assert fields[:, 27:30].sum() <= 3 * 3, "at most the bridge itself is kept"
