"""Memorization detector: planted copies (exact, flipped, shifted) are found; held-out real images are not."""

from __future__ import annotations

import numpy as np

from imgsynth.contracts import Dataset
from imgsynth.evaluation.config import MemorizationSection
from imgsynth.evaluation.privacy import flag_copies, nearest_features, nearest_train, split_half_floor
from imgsynth.evaluation.similarity import SSIMSettings

from .conftest import stack


def _planted(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of train images 0..9: exact, left-right flipped, shifted, flipped + shifted, noisy."""
    copies = [
        train[0], train[1],
        train[2][..., ::-1], train[3][..., ::-1],
        np.roll(train[4], (1, -2), axis=(1, 2)), np.roll(train[5], 2, axis=1),
        np.roll(train[6][..., ::-1], (-1, 1), axis=(1, 2)), np.roll(train[7][..., ::-1], -2, axis=2),
        np.clip(train[8] + np.random.default_rng(0).normal(0, 0.01, train[8].shape), -1, 1),
        train[9] * 0.98,
    ]
    return np.stack(copies).astype(np.float32), np.arange(10)


def test_planted_copies_are_flagged_and_held_out_images_are_not(chest: Dataset) -> None:
    train, test, val = stack(chest, "train"), stack(chest, "test"), stack(chest, "val")
    # The source data hold a few exact cross-split duplicates (real copies): keep them out of "held-out".
    dup = np.array([any(np.array_equal(v, t) for t in train) for v in val])
    held_out = val[~dup]
    copies, truth = _planted(train)
    cfg = MemorizationSection()
    settings = SSIMSettings(data_range=2.0)

    calib = nearest_train(test, train, cfg, settings)
    tau = float(np.percentile(calib.distance, cfg.percentile))
    found = nearest_train(copies, train, cfg, settings)
    np.testing.assert_array_equal(found.index, truth)
    assert flag_copies(found.distance, found.ssim, tau, cfg.ssim_threshold).all()
    assert found.distance[:8].max() < 1e-6 and found.ssim[:8].min() > 0.999  # exact after alignment
    assert found.transform[2].startswith("lr") and "(1, -2)" in found.transform[4]

    fresh = nearest_train(held_out, train, cfg, settings)
    assert not flag_copies(fresh.distance, fresh.ssim, tau, cfg.ssim_threshold).any()
    assert np.median(fresh.distance) > 5 * found.distance.max()

    # The floor: held-out images flagged by a threshold from the other half; about the percentile by
    # construction (here 30 images per half, so one or two images: 3-7%).
    floor = split_half_floor(calib.distance, calib.ssim, cfg.percentile, cfg.ssim_threshold, seed=0)
    assert floor is not None and 0.0 < floor <= 0.1
    assert split_half_floor(calib.distance, None, cfg.percentile, cfg.ssim_threshold, seed=0) == floor  # SSIM never fires here


def test_without_flips_a_flipped_copy_is_not_matched_exactly(chest: Dataset) -> None:
    train = stack(chest, "train")
    cfg = MemorizationSection(flips=["none"], max_shift=0)
    res = nearest_train(train[2:3, ..., ::-1].copy(), train, cfg, SSIMSettings(2.0))
    assert res.distance[0] > 0.01


def test_nearest_features() -> None:
    train = np.eye(4)
    idx, dist = nearest_features(np.array([[0.9, 0, 0, 0], [0, 0, 0, 2.0]]), train)
    assert idx.tolist() == [0, 3] and np.allclose(dist, [0.1, 1.0])


def test_3d_copies_are_found(adrenal: Dataset) -> None:
    train = stack(adrenal, "train")
    copies = np.stack([train[3][..., ::-1], np.roll(train[5], 1, axis=1)])
    res = nearest_train(copies, train, MemorizationSection(max_shift=1), SSIMSettings(2.0))
    assert res.index.tolist() == [3, 5] and res.distance.max() < 1e-6
