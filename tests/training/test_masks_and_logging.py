"""Mask conditions end to end (concatenated on the latent grid), and the optional MLflow sink."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import Dataset
from imgsynth.errors import DependencyError, UsageError
from imgsynth.generate import generate
from imgsynth.training.run import train

from .conftest import tiny_config, write_tiny_dataset


def test_mask_condition_trains_and_generates(tmp_path: Path) -> None:
    ds = write_tiny_dataset(tmp_path / "ds", n_train=8, n_val=2, with_mask=True)
    run = tmp_path / "run"
    train(ds.root, run, tiny_config("loop.val_items=2", steps=2))
    mask = np.zeros((1, 16, 16), np.float32)
    mask[:, 4:12, 8:14] = 1
    np.save(tmp_path / "m.npy", mask)
    out = generate(run, tmp_path / "s", n=3, steps=2, conditions=[f"seg={tmp_path / 'm.npy'}"])
    back = Dataset.read(out.root)
    assert [r["label"] for r in back.rows] == ["left", "right", "left"]  # unset categories cycle
    np.testing.assert_array_equal(back.load_mask(back.rows[2], "seg"), mask)  # the mask travels with the image
    assert [c.name for c in back.info.conditions] == ["label", "age", "seg"]
    with pytest.raises(UsageError, match="condition 'seg' is a mask: pass --condition seg=PATH.npy"):
        generate(run, tmp_path / "s2", n=1)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_mlflow_requested_but_missing_is_a_clear_error(tmp_path: Path) -> None:
    ds = write_tiny_dataset(tmp_path / "ds", n_train=8, n_val=2)
    with pytest.raises(DependencyError, match=r"logging\.mlflow is on but mlflow is not installed"):
        train(ds.root, tmp_path / "run", tiny_config("logging.mlflow=true", steps=1))
    assert not (tmp_path / "run").exists()  # nothing written


def test_perceptual_term_trains_with_user_weights(tmp_path: Path) -> None:
    import torch

    from imgsynth.contracts import RunFolder
    from imgsynth.models.perceptual import vgg16_features

    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pt"
    torch.save({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, weights)
    ds = write_tiny_dataset(tmp_path / "ds", n_train=8, n_val=2)
    run = tmp_path / "run"
    train(ds.root, run, tiny_config("model.losses.perceptual_weight=0.5", f"model.losses.perceptual_weights={weights}",
                                    "loop.val_items=2", steps=2))
    records = RunFolder(run).metrics("autoencoder")
    assert all(r["G_main/perceptual"] > 0 for r in records if "G_main/loss" in r)
    assert any("val/perceptual" in r for r in records)
    missing = tiny_config("model.losses.perceptual_weight=0.5", f"model.losses.perceptual_weights={tmp_path / 'no.pt'}")
    with pytest.raises(DependencyError, match=r"'model\.losses\.perceptual_weights'=.*no\.pt is not a file"):
        train(ds.root, tmp_path / "run2", missing)
    assert not (tmp_path / "run2").exists()
