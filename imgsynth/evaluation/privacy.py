"""Memorization: nearest real training neighbour of every synthetic sample, and copy flags.

Pixel space: the distance between a query and a training image is the RMS difference (model scale)
over the central region, minimised over flips and integer shifts of the query up to ``max_shift``
pixels, so flipped or slightly shifted copies are found as copies. Candidates are retrieved on
``downsample``-pooled images (cheap, tolerant to small shifts), then scored exactly.
Feature space: Euclidean nearest neighbour in the primary extractor's features.

Calibration: the same search runs for the real held-out images, whose distances to the training
set show how close a *new* real image gets. A synthetic sample is flagged as a likely copy when
its pixel distance is below the ``percentile`` of those held-out distances, or when the SSIM with
its aligned neighbour reaches ``ssim_threshold``. The floor of the flagged fraction is the same
rule applied to held-out real images with the threshold calibrated on the other half (split-half).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from imgsynth.evaluation.config import MemorizationSection
from imgsynth.evaluation.similarity import SSIMSettings, ssim


@dataclass
class Neighbours:
    """Per query: index of the nearest train item, its aligned RMS distance, SSIM and the alignment."""

    index: np.ndarray
    distance: np.ndarray
    ssim: np.ndarray
    transform: list[str]


def _transforms(dims: int, cfg: MemorizationSection) -> list[tuple[str, tuple[int, ...]]]:
    flips = list(dict.fromkeys(cfg.flips)) or ["none"]
    shifts = list(itertools.product(range(-cfg.max_shift, cfg.max_shift + 1), repeat=dims))
    return [(f, s) for f in flips for s in shifts]


def _flip(x: torch.Tensor, flip: str) -> torch.Tensor:
    if flip == "lr":
        return x.flip(-1)
    if flip == "ud":
        return x.flip(-2)
    return x


def _crop(x: torch.Tensor, shift: tuple[int, ...], margin: int) -> torch.Tensor:
    """The central region of ``x [B, C, *S]`` moved by ``shift`` (margin pixels kept free on each side)."""
    index = [slice(None), slice(None)]
    for size, s in zip(x.shape[2:], shift, strict=True):
        index.append(slice(margin + s, size - margin + s))
    return x[tuple(index)]


def _candidates(
    q: torch.Tensor, t: torch.Tensor, flips: list[str], cfg: MemorizationSection, chunk: int = 512
) -> torch.Tensor:
    """Top-``candidates`` train indices per query ``[Nq, K]`` by a coarse distance: ``downsample``-pooled
    images, minimised over the flips and over coarse shifts covering ``max_shift``."""
    dims = q.ndim - 2
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    factor = max(1, min(cfg.downsample, min(q.shape[2:]) // 8))
    tp = pool(t, factor) if factor > 1 else t
    margin = min(-(-cfg.max_shift // factor), min(tp.shape[2:]) // 4)
    shifts = list(itertools.product(range(-margin, margin + 1), repeat=dims))
    t_flat = _crop(tp, (0,) * dims, margin).flatten(1)
    t_sq = (t_flat * t_flat).sum(1)
    k = min(cfg.candidates, t.shape[0])
    out = []
    for start in range(0, q.shape[0], chunk):
        qb = q[start : start + chunk]
        best = torch.full((qb.shape[0], t.shape[0]), float("inf"), device=q.device)
        for flip in flips:
            qp = pool(_flip(qb, flip), factor) if factor > 1 else _flip(qb, flip)
            for shift in shifts:
                qs = _crop(qp, shift, margin).flatten(1)
                d = (qs * qs).sum(1, keepdim=True) + t_sq[None] - 2.0 * qs @ t_flat.T
                torch.minimum(best, d, out=best)
        out.append(best.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def nearest_train(
    queries: np.ndarray, train: np.ndarray, cfg: MemorizationSection, settings: SSIMSettings, chunk: int = 128,
    device: torch.device | None = None,
) -> Neighbours:
    """Nearest training image of every query under flips and shifts (see the module docstring)."""
    device = device or torch.device("cpu")
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    t = torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32)).to(device)
    dims = q.ndim - 2
    margin = min(cfg.max_shift, max(0, min(q.shape[2:]) // 4))
    transforms = [(f, s) for f, s in _transforms(dims, cfg) if max(map(abs, s), default=0) <= margin]
    flips = list(dict.fromkeys(f for f, _ in transforms))
    cand = _candidates(q, t, flips, cfg)  # [Nq, K]
    zero = (0,) * dims
    t_crop = _crop(t, zero, margin).flatten(1)  # [Nt, P]
    best_d = torch.full((q.shape[0],), float("inf"), device=device)
    best_j = torch.zeros(q.shape[0], dtype=torch.long, device=device)
    best_t = torch.zeros(q.shape[0], dtype=torch.long, device=device)
    for start in range(0, q.shape[0], chunk):
        qb = q[start : start + chunk]
        cb = t_crop[cand[start : start + chunk]]  # [B, K, P]
        for ti, (flip, shift) in enumerate(transforms):
            qs = _crop(_flip(qb, flip), shift, margin).flatten(1)  # [B, P]
            d = ((cb - qs[:, None]) ** 2).mean(-1).sqrt()  # [B, K]
            dmin, arg = d.min(1)
            better = dmin < best_d[start : start + chunk]
            idx = torch.arange(start, start + len(qb), device=device)[better]
            best_d[idx] = dmin[better]
            best_j[idx] = cand[start : start + chunk][better, arg[better]]
            best_t[idx] = ti
    # SSIM of each query (best alignment) with its neighbour, over the same central region.
    chosen = best_t.cpu().tolist()
    aligned = torch.stack([_crop(_flip(q[i : i + 1], transforms[c][0]), transforms[c][1], margin)[0] for i, c in enumerate(chosen)])
    refs = _crop(t[best_j], zero, margin)
    sim = np.concatenate([ssim(aligned[s : s + 512], refs[s : s + 512], settings) for s in range(0, len(aligned), 512)])
    names = [f"{transforms[c][0]}, shift {transforms[c][1]}" for c in chosen]
    return Neighbours(best_j.cpu().numpy(), best_d.double().cpu().numpy(), sim, names)


def nearest_features(queries: np.ndarray, train: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(index, Euclidean distance) of the nearest training feature vector for each query."""
    q = torch.as_tensor(queries, dtype=torch.float64)
    t = torch.as_tensor(train, dtype=torch.float64)
    idx, dist = [], []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start : start + chunk], t)
        v, i = d.min(1)
        idx.append(i)
        dist.append(v)
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


def flag_copies(distance: np.ndarray, similarity: np.ndarray, threshold: float, ssim_threshold: float) -> np.ndarray:
    return (distance < threshold) | (similarity >= ssim_threshold)


def split_half_floor(
    distance: np.ndarray, similarity: np.ndarray | None, percentile: float, ssim_threshold: float, seed: int
) -> float | None:
    """Fraction of held-out real images flagged when the distance threshold comes from the other half
    (``similarity`` None: the distance rule alone, as in feature space)."""
    n = len(distance)
    if n < 4:
        return None
    order = np.random.default_rng(seed).permutation(n)
    a, b = order[: n // 2], order[n // 2 :]
    rates = []
    for cal, test in ((a, b), (b, a)):
        tau = float(np.percentile(distance[cal], percentile))
        sim = similarity[test] if similarity is not None else np.zeros(len(test))
        rates.append(flag_copies(distance[test], sim, tau, ssim_threshold if similarity is not None else np.inf).mean())
    return float(np.mean(rates))
