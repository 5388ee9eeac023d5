"""Frechet / kernel distances and precision-recall against closed forms and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgsynth.evaluation.fid import (
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    kernel_distance,
    precision_recall,
    small_n_warning,
)


def _closed_form(mu1, s1, mu2, s2) -> float:
    """FD for commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2."""
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2).sum())


def test_frechet_distance_matches_closed_form_for_gaussians() -> None:
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = np.diag(rng.uniform(0.1, 3, d)), np.diag(rng.uniform(0.1, 3, d))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-10)
    # A common rotation leaves the distance unchanged (non-diagonal covariances).
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    value = frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert value == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9)


def test_frechet_distance_of_general_gaussians_matches_scipy_sqrtm() -> None:
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fd_of_a_set_with_itself_is_zero_and_singular_covariances_are_finite() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(50, 64))  # N < D: singular covariance
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    const = np.ones((20, 8))
    value = frechet_distance_features(const, const + 1.0)
    assert np.isfinite(value) and value == pytest.approx(8.0)
    mu, sigma = gaussian_stats(feats)
    assert mu.dtype == np.float64 and sigma.shape == (64, 64)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_fd_and_kid_agree_with_torchmetrics_on_the_same_features() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 12

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    rng = np.random.default_rng(3)
    f1 = rng.normal(size=(300, 12))
    f2 = rng.normal(0.3, 1.2, size=(300, 12))
    fid = FrechetInceptionDistance(feature=Identity(), normalize=True)
    fid.update(torch.tensor(f1, dtype=torch.float64), real=True)
    fid.update(torch.tensor(f2, dtype=torch.float64), real=False)
    assert frechet_distance_features(f1, f2) == pytest.approx(fid.compute().item(), rel=1e-5)
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=300, normalize=True)
    kid.update(torch.tensor(f1, dtype=torch.float64), real=True)
    kid.update(torch.tensor(f2, dtype=torch.float64), real=False)
    ours = kernel_distance(f1, f2, subsets=1, subset_size=300)
    assert ours.mean == pytest.approx(kid.compute()[0].item(), rel=1e-6)


def test_kid_is_unbiased_on_one_distribution() -> None:
    rng = np.random.default_rng(4)
    values = [
        kernel_distance(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), subsets=1, subset_size=40, seed=s).mean
        for s in range(300)
    ]
    # Unbiased: the mean over many independent pairs is ~0 (its standard error is ~std/sqrt(300)).
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    shifted = kernel_distance(rng.normal(size=(200, 8)), rng.normal(1.0, 1, size=(200, 8)), subsets=10, subset_size=100)
    assert shifted.mean > 0.1 and shifted.std > 0 and shifted.subset_size == 100


def test_precision_recall_detects_mode_collapse() -> None:
    rng = np.random.default_rng(5)
    real = rng.normal(size=(400, 4))
    same = rng.normal(size=(400, 4))
    p, r = precision_recall(real, same, k=3)
    assert p > 0.85 and r > 0.85
    collapsed = rng.normal(size=(400, 4)) * 0.1  # all samples near one mode: precise, no recall
    p2, r2 = precision_recall(real, collapsed, k=3)
    assert p2 > 0.95 and r2 < 0.3


def test_small_n_warning() -> None:
    assert small_n_warning("FID", 5000, 2048, 2000) is None
    assert "singular" in small_n_warning("FD_domain", 100, 256, 2000)
    assert "biased" in small_n_warning("FD_domain", 1000, 256, 2000)
