"""Diversity: mean MS-SSIM over random pairs within a set (lower = more diverse).

The medical-diffusion literature (e.g. Pinaya et al. 2022, Dorjsembe et al. 2023) reports the mean
pairwise MS-SSIM of synthetic samples next to the same quantity within the real data: a synthetic
value well above the real one signals mode collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgsynth.evaluation.similarity import SSIMSettings, mean_ci, ms_ssim


@dataclass
class PairwiseResult:
    mean: float
    ci: tuple[float, float] | None
    pairs: int
    note: str


def random_pairs(n: int, pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``pairs`` random index pairs (i != j) from ``n`` items; all pairs when there are fewer."""
    total = n * (n - 1) // 2
    if total <= pairs:
        i, j = np.triu_indices(n, k=1)
        return i, j
    i = rng.integers(0, n, pairs)
    j = (i + rng.integers(1, n, pairs)) % n
    return i, j


def pairwise_ms_ssim(
    images: np.ndarray, settings: SSIMSettings, *, pairs: int, seed: int, bootstrap: int = 200, batch: int = 128
) -> PairwiseResult:
    if len(images) < 2:
        raise ValueError("pairwise MS-SSIM needs at least 2 images")
    rng = np.random.default_rng(seed)
    i, j = random_pairs(len(images), pairs, rng)
    values, note = [], ""
    for start in range(0, len(i), batch):
        v, note = ms_ssim(images[i[start : start + batch]], images[j[start : start + batch]], settings)
        values.append(v)
    arr = np.concatenate(values)
    return PairwiseResult(float(arr.mean()), mean_ci(arr, rounds=bootstrap, seed=seed), len(arr), note)
