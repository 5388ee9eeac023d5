"""Physical plausibility of samples in original units, compared with the real data.

Values are mapped back with the dataset's intensity mapping (``to_physical``: HU for CT). Checked:
the intensity distribution (1-Wasserstein distance and KS statistic of pooled values), per-image
mean and spread, the foreground fraction (above a background threshold), values outside the
model range before clipping, and for CT the fraction of voxels in each tissue range (air, lung,
fat, soft tissue, ...). Each is reported with the real train vs real held-out value as its floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from imgsynth.contracts import Intensity
from imgsynth.evaluation.config import ValidatorsSection


@dataclass
class Check:
    """One validator: value for synthetic vs real, the real-vs-real floor, and what was compared."""

    name: str
    value: float
    floor: float | None
    synthetic: float | None = None
    real: float | None = None
    unit: str = ""
    note: str = ""


@dataclass
class ValidatorReport:
    checks: list[Check] = field(default_factory=list)
    histograms: dict[str, object] = field(default_factory=dict)
    unit: str = ""


def is_ct(intensity: Intensity) -> bool:
    return intensity.kind == "ct_window" or intensity.unit.upper() == "HU"


def _sample(values: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    flat = values.reshape(-1)
    return flat if flat.size <= cap else flat[rng.choice(flat.size, cap, replace=False)]


def _physical(images: np.ndarray, intensity: Intensity) -> np.ndarray:
    return intensity.to_physical(images) if intensity.kind != "none" else images.astype(np.float32)


def background_threshold(intensity: Intensity, configured: float | None, real: np.ndarray) -> float:
    if configured is not None:
        return float(configured)
    lo = intensity.low if intensity.low is not None else float(np.percentile(real, 1))
    hi = intensity.high if intensity.high is not None else float(np.percentile(real, 99))
    return float(lo + 0.05 * (hi - lo))


def validate(
    real_train: np.ndarray,
    real_test: np.ndarray,
    synthetic_model: np.ndarray,
    intensity: Intensity,
    cfg: ValidatorsSection,
    *,
    raw_synthetic: np.ndarray | None = None,
    seed: int = 0,
) -> ValidatorReport:
    """All checks; images in model scale (as loaded), compared in physical units."""
    rng = np.random.default_rng(seed)
    unit = intensity.unit or ("stored units" if intensity.kind == "none" else f"source units ({intensity.kind} {intensity.low:g}..{intensity.high:g})")
    tr, te, sy = (_physical(x, intensity) for x in (real_train, real_test, synthetic_model))
    out = ValidatorReport(unit=unit)
    cap = cfg.max_values
    v_tr, v_te, v_sy = (_sample(x, cap, rng) for x in (tr, te, sy))

    # Pooled intensity distribution.
    out.checks.append(Check("intensity_w1", wasserstein_distance(v_sy, v_te), wasserstein_distance(v_tr, v_te), unit=unit,
                            note="1-Wasserstein distance of pooled values, synthetic vs real held-out"))
    out.checks.append(Check("intensity_ks", ks_2samp(v_sy, v_te).statistic, ks_2samp(v_tr, v_te).statistic,
                            note="Kolmogorov-Smirnov statistic of pooled values"))

    # Per-image mean and spread.
    axes = tuple(range(1, tr.ndim))
    for stat, fn in (("image_mean", np.mean), ("image_std", np.std)):
        s_tr, s_te, s_sy = fn(tr, axis=axes), fn(te, axis=axes), fn(sy, axis=axes)
        out.checks.append(Check(f"{stat}_ks", ks_2samp(s_sy, s_te).statistic, ks_2samp(s_tr, s_te).statistic,
                                synthetic=float(s_sy.mean()), real=float(s_te.mean()), unit=unit,
                                note=f"KS statistic of per-image {stat.split('_')[1]}; synthetic/real = average"))

    # Foreground fraction.
    thr = background_threshold(intensity, cfg.background_threshold, tr)
    fg = [(x > thr).mean(axis=axes) for x in (tr, te, sy)]
    out.checks.append(Check("foreground_fraction", abs(fg[2].mean() - fg[1].mean()), abs(fg[0].mean() - fg[1].mean()),
                            synthetic=float(fg[2].mean()), real=float(fg[1].mean()),
                            note=f"|difference| of mean fraction of voxels above {thr:g} {unit}"))

    # Values outside the model range (before clipping) and non-finite values.
    if raw_synthetic is not None and intensity.kind != "none":
        outside = float((np.abs(np.nan_to_num(raw_synthetic, nan=0.0)) > 1.0 + 1e-6).mean())
        out.checks.append(Check("out_of_range", outside, 0.0, note="fraction of synthetic values outside [-1, 1] model scale"))

    # CT tissue ranges.
    if is_ct(intensity):
        for name, (lo, hi) in cfg.tissue_ranges.items():
            frac = [float(((x >= lo) & (x < hi)).mean()) for x in (v_tr, v_te, v_sy)]
            out.checks.append(Check(f"tissue.{name}", abs(frac[2] - frac[1]), abs(frac[0] - frac[1]),
                                    synthetic=frac[2], real=frac[1],
                                    note=f"|difference| of voxel fraction in [{lo:g}, {hi:g}) HU"))

    # Histograms for the report (shared bins over the real range).
    lo, hi = float(min(v_tr.min(), v_te.min())), float(max(v_tr.max(), v_te.max()))
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, cfg.histogram_bins + 1)
    out.histograms = {
        "edges": edges.tolist(),
        "real_test": np.histogram(np.clip(v_te, lo, hi), edges, density=True)[0].tolist(),
        "real_train": np.histogram(np.clip(v_tr, lo, hi), edges, density=True)[0].tolist(),
        "synthetic": np.histogram(np.clip(v_sy, lo, hi), edges, density=True)[0].tolist(),
        "unit": unit,
    }
    return out
