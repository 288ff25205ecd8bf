"""The lung-field head's pieces on synthetic pairs: aligned augmentation, Dice, and a decoder that learns."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.train.lungs import dice, model_view_pair


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


def test_decoder_learns_synthetic_lungs():
    """A random-weight backbone at 64 px and a few views: the decoder beats an all-lungs guess on a new film."""
    from pneumo.model.build import build_backbone
    from pneumo.model.lungs import build_decoder, build_feature_model
    from pneumo.train.lungs import fit_decoder, predict_masks, views

    features = build_feature_model(build_backbone("random", 64))
    gray, mask = two_lungs()
    pairs = [("a.png", gray, mask), ("b.png", np.fliplr(gray).copy(), np.fliplr(mask).copy())]
    feats, targets = views(pairs, features, n_views=7, seed=0, size=64)
    assert [f.shape[1] for f in feats] == [16, 8, 4] and targets.shape == (16, 16, 16, 1)
    decoder = fit_decoder(build_decoder(), feats, targets, epochs=40)
    new_gray, new_mask = model_view_pair(*two_lungs(), np.random.default_rng(9), size=64)
    from pneumo.preprocess import normalize

    new_feats = [np.asarray(a, np.float16) for a in features.predict_on_batch(normalize(new_gray)[None])]
    predicted = predict_masks(decoder, new_feats, size=64)[0] > 0.5
    assert dice(predicted, new_mask) > dice(np.ones_like(new_mask), new_mask) + 0.1
