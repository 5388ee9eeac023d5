"""Conditioning works: a classifier trained on real chest X-rays recognises the class a sample was
generated for well above chance (slow: trains ldm_2d_tiny for several minutes on CPU).

Data: the class-balanced PneumoniaMNIST subset (MedMNIST v2, Yang et al. 2023, CC BY 4.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsynth.config import load_config
from imgsynth.contracts import Dataset
from imgsynth.data.medmnist import import_medmnist
from imgsynth.generate import generate
from imgsynth.training.run import train

OVERRIDES = ["stages.autoencoder.kimg=10", "model.losses.adv_warmup_kimg=4", "stages.diffusion.kimg=30",
             "loop.checkpoint_kimg=10", "loop.val_kimg=10", "loop.sample_kimg=10"]
N_PER_CLASS = 100
MIN_ACCURACY = 0.7  # chance is 0.5


def _xy(ds: Dataset, rows: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([np.load(ds.item_path(r)).reshape(-1) for r in rows])
    y = np.array([r["label"] == "pneumonia" for r in rows], dtype=int)
    return x, y


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_generated_classes_are_recognised_by_a_real_data_classifier(shared_data: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    ds = import_medmnist(shared_data / "medmnist" / "balanced-subset" / "pneumoniamnist.npz", tmp_path / "chest")
    run = tmp_path / "run"
    train(ds.root, run, load_config("ldm_2d_tiny", OVERRIDES))

    clf = LogisticRegression(C=0.05, max_iter=3000).fit(*_xy(ds, ds.split("train")))
    real_acc = clf.score(*_xy(ds, ds.split("test")))
    accs = {}
    for label in ("normal", "pneumonia"):
        out = generate(run, tmp_path / label, n=N_PER_CLASS, conditions=[f"label={label}"], guidance=3.0, seed=1,
                       batch_size=50, formats=())
        x, y = _xy(out, out.rows)
        accs[label] = clf.score(x, y)
    synthetic_acc = float(np.mean(list(accs.values())))
    print(f"real test accuracy {real_acc:.3f}; generated-class accuracy {synthetic_acc:.3f} {accs}")
    assert real_acc > 0.75
    assert synthetic_acc >= MIN_ACCURACY and min(accs.values()) > 0.5, accs
