"""Distances between feature sets: Frechet distance, kernel (MMD) distance, improved precision/recall.

All statistics are computed in float64. The Frechet distance uses a symmetric matrix square root,

    FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr( (S_1^1/2 S_2 S_1^1/2)^1/2 ),

(Dowson & Landau 1982; Heusel et al. 2017, eq. 6) where ``(S_1^1/2 S_2 S_1^1/2)`` is symmetric
positive semi-definite, so its trace square root is the sum of square roots of its eigenvalues:
no complex leftovers, and singular covariances (N < dim, constant features) stay finite.

The kernel distance is the unbiased MMD^2 with the cubic polynomial kernel
``k(x, y) = (x.y / d + 1)^3`` averaged over random subsets (Binkowski et al. 2018, KID).
Precision / recall follow Kynkaanniemi et al. 2019 (k-NN hyperspheres in feature space).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and (unbiased, N-1) covariance ``[D, D]`` of ``features [N, D]``, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, D], got {f.shape}")
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu, sigma


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition (negative eigenvalues -> 0)."""
    sym = 0.5 * (matrix + matrix.T)
    w, v = np.linalg.eigh(sym)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (eq. above), always finite and >= 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    root1 = _sqrtm_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def _poly_kernel(a: torch.Tensor, b: torch.Tensor, degree: int) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3) -> float:
    """Unbiased MMD^2 estimate with the polynomial kernel (sizes may differ; each >= 2)."""
    m, n = x.shape[0], y.shape[0]
    k_xx = _poly_kernel(x, x, degree)
    k_yy = _poly_kernel(y, y, degree)
    k_xy = _poly_kernel(x, y, degree)
    sum_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    sum_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(sum_xx + sum_yy - 2.0 * k_xy.mean())


@dataclass
class KernelDistance:
    mean: float
    std: float
    subsets: int
    subset_size: int
    values: np.ndarray


def kernel_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    seed: int = 0,
) -> KernelDistance:
    """KID-style distance: unbiased MMD^2 over ``subsets`` random subsets of equal size (mean, std)."""
    x = torch.as_tensor(np.asarray(f1), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(f2), dtype=torch.float64)
    size = int(min(subset_size, x.shape[0], y.shape[0]))
    if size < 2:
        raise ValueError("kernel distance needs at least 2 samples per set")
    gen = torch.Generator().manual_seed(int(seed))
    full = size == x.shape[0] == y.shape[0]
    count = 1 if full else int(subsets)
    values = []
    for _ in range(count):
        ix = torch.randperm(x.shape[0], generator=gen)[:size]
        iy = torch.randperm(y.shape[0], generator=gen)[:size]
        values.append(mmd2_unbiased(x[ix], y[iy], degree))
    arr = np.asarray(values)
    return KernelDistance(float(arr.mean()), float(arr.std()) if len(arr) > 1 else 0.0, count, size, arr)


def _kth_nn_radii(feats: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour within the same set (self excluded)."""
    radii = []
    for start in range(0, feats.shape[0], chunk):
        d = torch.cdist(feats[start : start + chunk], feats)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # the 1st value is the point itself (distance 0)
    return torch.cat(radii)


def _inside_manifold(queries: torch.Tensor, refs: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    inside = []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start : start + chunk], refs)
        inside.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if min(r.shape[0], f.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    r_radii = _kth_nn_radii(r, k)
    f_radii = _kth_nn_radii(f, k)
    precision = _inside_manifold(f, r, r_radii).double().mean().item()
    recall = _inside_manifold(r, f, f_radii).double().mean().item()
    return float(precision), float(recall)


def small_n_warning(score: str, n: int, dim: int, min_n: int) -> str | None:
    """A one-line warning when N is too small for an unbiased Frechet distance."""
    if n >= min_n and n > dim:
        return None
    why = "fewer samples than feature dimensions, so the covariance is singular" if n <= dim else "FD is biased upward at small N"
    return (
        f"{score} at N={n} (feature dim {dim}): {why}; compare it with its real-vs-real floor at the same N "
        f"and prefer the kernel distance (unbiased) below N={min_n}"
    )


def bootstrap_pair(
    f1: np.ndarray,
    f2: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    rounds: int,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(f1, f2)``, both sets resampled with replacement."""
    if rounds <= 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        i1 = rng.integers(0, len(f1), len(f1))
        i2 = rng.integers(0, len(f2), len(f2))
        value = statistic(f1[i1], f2[i2])
        if math.isfinite(value):
            values.append(value)
    if not values:
        return None
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))
