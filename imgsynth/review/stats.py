"""Statistics of a reader study: AUC, Cohen's and Fleiss' kappa, Wilson and bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st


def auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted 1/2.

    The Mann-Whitney U statistic divided by n_pos * n_neg (midranks for ties); None when one class
    is absent.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _st.rankdata(np.asarray(score, dtype=float))
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def signed_confidence(called_positive: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """A ten-step rating from a call and its confidence: +c for 'synthetic', -c for 'real'."""
    c = np.asarray(confidence, dtype=float)
    return np.where(np.asarray(called_positive, dtype=bool), c, -c)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters: (p_o - p_e) / (1 - p_e); None when undefined (p_e = 1)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("cohen_kappa needs two equally long, non-empty rating lists")
    cats = np.union1d(a, b)
    p_o = float(np.mean(a == b))
    p_e = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    if np.isclose(p_e, 1.0):
        return None
    return (p_o - p_e) / (1.0 - p_e)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa (Fleiss 1971) from counts ``[subjects, categories]`` (equal raters per subject).

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)),  P_bar = mean P_i,  p_j = sum_i n_ij / (N n),
    P_e = sum_j p_j^2,  kappa = (P_bar - P_e) / (1 - P_e).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a [subjects, categories] count matrix")
    n = counts.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every subject")
    n = float(n[0])
    p_i = (np.sum(counts**2, axis=1) - n) / (n * (n - 1.0))
    p_bar = float(p_i.mean())
    p_j = counts.sum(axis=0) / (counts.shape[0] * n)
    p_e = float(np.sum(p_j**2))
    if np.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def kappa_label(kappa: float | None) -> str:
    """Landis & Koch (1977) wording for a kappa value."""
    if kappa is None:
        return "undefined"
    if kappa < 0:
        return "poor"
    for bound, label in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= bound:
            return label
    return "almost perfect"


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return None
    ci = _st.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def binom_p(k: int, n: int, p: float = 0.5) -> float | None:
    """Two-sided exact binomial test of k successes in n against chance ``p``."""
    if n == 0:
        return None
    return float(_st.binomtest(int(k), int(n), p).pvalue)


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float | None:
    """Two-sided Mann-Whitney U test p-value (None when a group is empty or all values tie)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0 or np.ptp(np.concatenate([x, y])) == 0:
        return None
    return float(_st.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def cluster_bootstrap(
    clusters: Sequence[np.ndarray],
    strata: np.ndarray,
    statistic: Callable[[np.ndarray], dict[str, float | None]],
    *,
    n_boot: int,
    level: float,
    rng: np.random.Generator,
) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of ``statistic`` over resampled clusters (cases), stratified.

    ``clusters[c]`` holds the row indices of cluster ``c`` (e.g. every reader's answer to one
    case); clusters are drawn with replacement within each stratum (real / synthetic), so class
    sizes stay fixed. ``statistic`` maps row indices to named values (None when undefined).
    """
    if n_boot <= 0:
        return {}
    strata = np.asarray(strata)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
        rows = np.concatenate([clusters[c] for c in chosen])
        for name, value in statistic(rows).items():
            draws.setdefault(name, []).append(np.nan if value is None else float(value))
    alpha = (1.0 - level) / 2.0
    out: dict[str, tuple[float, float] | None] = {}
    for name, values in draws.items():
        arr = np.asarray(values)
        arr = arr[np.isfinite(arr)]
        out[name] = None if arr.size < max(10, n_boot // 10) else (
            float(np.quantile(arr, alpha)), float(np.quantile(arr, 1.0 - alpha)))
    return out
