"""Agreement, AUC and intervals against scikit-learn, closed forms and a published example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from imgsynth.review import stats


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cohen_kappa_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.choice(["real", "synthetic"], 40)
    flip = rng.random(40) < 0.3
    b = np.where(flip, np.where(a == "real", "synthetic", "real"), a)
    assert stats.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_edge_cases() -> None:
    assert stats.cohen_kappa(["real"] * 5, ["real"] * 5) is None  # p_e = 1: undefined
    assert stats.cohen_kappa(["real", "synthetic"] * 3, ["real", "synthetic"] * 3) == pytest.approx(1.0)
    assert stats.cohen_kappa(["real", "synthetic"] * 3, ["synthetic", "real"] * 3) == pytest.approx(-1.0)


def test_fleiss_kappa_published_example() -> None:
    """Fleiss (1971) style worked example (Wikipedia, 'Fleiss' kappa'): 10 subjects, 14 raters, 5 categories."""
    counts = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    # Hand-computed there: P_bar = 0.378, P_e = 0.213, kappa = 0.210.
    n = 14
    p_bar = np.mean((np.sum(counts**2, axis=1) - n) / (n * (n - 1)))
    p_e = np.sum((counts.sum(axis=0) / counts.sum()) ** 2)
    assert p_bar == pytest.approx(0.378, abs=5e-4) and p_e == pytest.approx(0.213, abs=5e-4)
    assert stats.fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_two_raters_is_scotts_pi() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2, 30)
    b = np.where(rng.random(30) < 0.25, 1 - a, a)
    counts = np.stack([(a == 0).astype(int) + (b == 0), (a == 1).astype(int) + (b == 1)], axis=1)
    p_o = np.mean(a == b)
    pooled = np.array([np.mean(np.r_[a, b] == c) for c in (0, 1)])
    scott = (p_o - np.sum(pooled**2)) / (1 - np.sum(pooled**2))
    assert stats.fleiss_kappa(counts) == pytest.approx(scott, abs=1e-12)
    with pytest.raises(ValueError, match="same number"):
        stats.fleiss_kappa(np.array([[1, 1], [2, 1]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.random(60) < 0.5
    call = np.where(rng.random(60) < 0.7, truth, ~truth)
    conf = rng.integers(1, 6, 60)
    score = stats.signed_confidence(call, conf)  # ten levels, many ties
    assert stats.auc(truth, score) == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    assert stats.auc(np.ones(4, bool), np.arange(4)) is None


def test_wilson_interval_closed_form() -> None:
    k, n, z = 31, 50, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = stats.wilson_ci(k, n, 0.95)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert stats.binom_p(5, 10) == pytest.approx(1.0) and stats.binom_p(10, 10) == pytest.approx(2 / 1024)


def test_kappa_labels() -> None:
    assert [stats.kappa_label(k) for k in (-0.1, 0.0, 0.3, 0.5, 0.7, 0.9, None)] == [
        "poor", "slight", "fair", "moderate", "substantial", "almost perfect", "undefined"]


def test_cluster_bootstrap_of_a_proportion_agrees_with_wilson() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(400) < 0.3
    clusters = [np.array([i]) for i in range(400)]
    ci = stats.cluster_bootstrap(clusters, np.zeros(400), lambda rows: {"p": float(x[rows].mean())},
                                 n_boot=1000, level=0.95, rng=np.random.default_rng(1))["p"]
    wilson = stats.wilson_ci(int(x.sum()), 400, 0.95)
    assert ci is not None and ci[0] < x.mean() < ci[1]
    assert ci[0] == pytest.approx(wilson[0], abs=0.015) and ci[1] == pytest.approx(wilson[1], abs=0.015)
