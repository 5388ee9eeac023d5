"""Downstream metrics against scikit-learn, a small TSTR/TRTR run, and the physical validators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from imgsynth.contracts import Intensity
from imgsynth.evaluation.config import DownstreamSection, ValidatorsSection
from imgsynth.evaluation.downstream import build_network, metric_values, run_downstream, summarise
from imgsynth.evaluation.validators import validate


def test_metric_values_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[y] * 0.8
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prob[:10] = 0.5  # ties
    got = metric_values(y, prob, 2)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, prob[:, 1]), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, prob.argmax(1)))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, prob.argmax(1)))
    y3 = rng.integers(0, 3, 150)
    p3 = rng.dirichlet(np.ones(3), 150)
    assert metric_values(y3, p3, 3)["auroc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    assert np.isnan(metric_values(np.zeros(5, int), np.full((5, 2), 0.5), 2)["auroc"])


@pytest.mark.parametrize("name", ["densenet_small", "resnet_small"])
def test_networks_build_in_2d_and_3d(name: str) -> None:
    for dims, shape in ((2, (2, 1, 16, 16)), (3, (2, 1, 16, 16, 16))):
        net = build_network(name, dims, 1, 3).eval()
        with torch.no_grad():
            assert net(torch.zeros(shape)).shape == (2, 3)


def test_tstr_trtr_on_separable_images() -> None:
    rng = np.random.default_rng(1)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
        x[y == 1, :, 4:12, 4:12] += 1.5  # class 1 has a bright square
        return x, y

    real, syn, test = make(64), make(64), make(64)
    cfg = DownstreamSection(network="resnet_small", seeds=2, epochs=4, batch_size=16, lr=3e-3, bootstrap=100)
    res = run_downstream({"tstr": syn, "trtr": real}, test[0], test[1], "label", ["a", "b"], cfg, seed=0,
                         device=torch.device("cpu"))
    assert len(res.runs) == 4 and res.train_sizes == {"tstr": 64, "trtr": 64}
    out = summarise(res, rounds=100, level=0.95, seed=0)
    assert out["tstr"]["auroc"][0] > 0.9 and out["trtr"]["auroc"][0] > 0.9
    lo, hi = out["ratio"]["auroc"][1]
    assert lo <= out["ratio"]["auroc"][0] <= hi


def test_ct_validators_in_hounsfield_units() -> None:
    intensity = Intensity(kind="ct_window", low=-1000.0, high=1000.0, unit="HU")
    rng = np.random.default_rng(2)

    def volume_set(n: int, bone: float) -> np.ndarray:
        hu = np.full((n, 1, 8, 16, 16), -1000.0)  # air
        hu[:, :, :, 4:12, 4:12] = rng.normal(40, 10, (n, 1, 8, 8, 8))  # soft tissue
        hu[:, :, :, 6:8, 6:8] = bone
        return intensity.to_model(hu)

    real_train, real_test = volume_set(6, 700.0), volume_set(6, 700.0)
    good = validate(real_train, real_test, volume_set(6, 700.0), intensity, ValidatorsSection())
    bad_syn = volume_set(6, 700.0)
    bad_syn[:, :, :, 4:12, 4:12] = intensity.to_model(np.full((6, 1, 8, 8, 8), -700.0))  # soft tissue turned to lung
    bad = validate(real_train, real_test, bad_syn, intensity, ValidatorsSection(), raw_synthetic=bad_syn * 1.1)
    g = {c.name: c for c in good.checks}
    b = {c.name: c for c in bad.checks}
    assert g["tissue.water_soft_tissue"].value < 0.01 and b["tissue.water_soft_tissue"].value > 0.2
    assert b["tissue.lung"].synthetic > 0.2 and b["tissue.lung"].real == 0.0
    assert b["intensity_w1"].value > 10 * max(g["intensity_w1"].value, 1.0) and g["intensity_w1"].unit == "HU"
    assert b["out_of_range"].value > 0 and good.histograms["unit"] == "HU"
    assert abs(b["foreground_fraction"].synthetic - b["foreground_fraction"].real) < 1e-9  # both above -900 HU
