"""SSIM, MS-SSIM and PSNR for 2D and 3D images, per image (never pooled over a batch).

SSIM (Wang et al. 2004) uses MONAI's ``compute_ssim_and_cs``: a Gaussian window (11, sigma 1.5
by default) applied without padding, i.e. over the "valid" region, which is what the reference
implementation and scikit-image (``gaussian_weights=True, use_sample_covariance=False``) compute;
torchmetrics' SSIM averages a reflect-padded border in as well and is therefore not used here.
MS-SSIM (Wang et al. 2003) is the product over scales of the mean contrast-structure term (last
scale: full SSIM) raised to the scale weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Images
too small for five scales use the largest number of scales whose coarsest image still holds the
window, with the weights renormalised to sum to one, and say so in a note. The data range is
always passed explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
PSNR_MAX_DB = 100.0  # identical images: the MSE floor keeps PSNR finite


@dataclass(frozen=True)
class SSIMSettings:
    data_range: float
    kernel_size: int = 11
    sigma: float = 1.5
    k1: float = 0.01
    k2: float = 0.03
    max_scales: int = 5

    def recipe(self) -> dict[str, float | int | str]:
        return {
            "data_range": self.data_range,
            "window": f"gaussian {self.kernel_size}, sigma {self.sigma}",
            "k1": self.k1,
            "k2": self.k2,
        }


def _as_batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)


def _check(x: torch.Tensor, y: torch.Tensor) -> int:
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim not in (4, 5):
        raise ValueError(f"expected [B, C, H, W] or [B, C, D, H, W], got {tuple(x.shape)}")
    return x.ndim - 2


def _kernel_for(spatial: tuple[int, ...], settings: SSIMSettings) -> int:
    """The window size: the configured one, shrunk (odd) only for images smaller than it."""
    size = min(settings.kernel_size, min(spatial) if min(spatial) % 2 else min(spatial) - 1)
    if size < 3:
        raise ValueError(f"images {spatial} are too small for SSIM (need at least 3 pixels per axis)")
    return size


def ssim(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, settings: SSIMSettings) -> np.ndarray:
    """Per-image SSIM ``[B]`` of ``x`` against ``y`` (``[B, C, *spatial]``)."""
    x, y = _as_batch(x), _as_batch(y)
    dims = _check(x, y)
    k = _kernel_for(tuple(x.shape[2:]), settings)
    value, _ = compute_ssim_and_cs(
        x, y, spatial_dims=dims, kernel_size=(k,) * dims, kernel_sigma=(settings.sigma,) * dims,
        data_range=settings.data_range, k1=settings.k1, k2=settings.k2,
    )
    return value.reshape(value.shape[0], -1).mean(1).double().cpu().numpy()


def ms_ssim_scales(spatial: tuple[int, ...], settings: SSIMSettings) -> tuple[int, str]:
    """Number of scales an image of this size supports, and a note when it is fewer than asked."""
    k = _kernel_for(spatial, settings)
    scales = 1
    while scales < settings.max_scales and min(spatial) / 2**scales >= k:
        scales += 1
    note = ""
    if scales < settings.max_scales:
        note = (
            f"MS-SSIM used {scales} of {settings.max_scales} scales: a {'x'.join(map(str, spatial))} image is too "
            f"small for a {k}-wide window at scale {scales + 1}; weights renormalised"
        )
    return scales, note


def ms_ssim(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, settings: SSIMSettings) -> tuple[np.ndarray, str]:
    """Per-image MS-SSIM ``[B]`` and a note (empty unless fewer scales were used)."""
    x, y = _as_batch(x), _as_batch(y)
    dims = _check(x, y)
    scales, note = ms_ssim_scales(tuple(x.shape[2:]), settings)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    k = _kernel_for(tuple(x.shape[2:]), settings)
    pool = torch.nn.functional.avg_pool2d if dims == 2 else torch.nn.functional.avg_pool3d
    terms = []
    for scale in range(scales):
        s, cs = compute_ssim_and_cs(
            x, y, spatial_dims=dims, kernel_size=(k,) * dims, kernel_sigma=(settings.sigma,) * dims,
            data_range=settings.data_range, k1=settings.k1, k2=settings.k2,
        )
        term = s if scale == scales - 1 else cs
        terms.append(torch.relu(term.reshape(term.shape[0], -1).mean(1)).double())
        if scale < scales - 1:
            x, y = pool(x, 2), pool(y, 2)
    stacked = torch.stack(terms)  # [scales, B]
    return torch.prod(stacked ** weights.to(stacked.device)[:, None], dim=0).cpu().numpy(), note


def psnr(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, data_range: float) -> np.ndarray:
    """Per-image PSNR ``[B]`` in dB, ``10 log10(range^2 / MSE)``; identical images give PSNR_MAX_DB."""
    x, y = _as_batch(x).double(), _as_batch(y).double()
    _check(x, y)
    mse = ((x - y) ** 2).reshape(x.shape[0], -1).mean(1)
    floor = data_range**2 * 10 ** (-PSNR_MAX_DB / 10)
    return (10.0 * torch.log10(data_range**2 / mse.clamp_min(floor))).cpu().numpy()


def mean_ci(values: np.ndarray, *, rounds: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of per-image values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if rounds <= 0 or len(v) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (rounds, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)
