"""Tiny trained runs shared by the generation tests (trained once per session, a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgsynth.contracts import Condition, Dataset, DatasetInfo, Intensity, save_item, write_dataset
from tests.conftest import require_tool
from tests.training.conftest import tiny_config, write_tiny_dataset


def assert_dciodvfy_clean(path: Path) -> None:
    """dciodvfy (dicom3tools) reports no error for the file (warnings allowed)."""
    import subprocess

    proc = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, errors


def _fresh_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and CI has two cores
    yield
    torch.set_num_threads(before)


_TRAINED: dict[str, Path] = {}


def trained_tiny_run(factory: pytest.TempPathFactory) -> Path:
    """A 2D LDM (labels left/right, age 0..100; 16x16, 1.5 mm, minmax 0..1000 HU) trained 3 steps per
    stage; trained once per test session (shared by the generate and azureml tests)."""
    from imgsynth.training.run import train

    if "ldm" not in _TRAINED:
        _fresh_accelerate()
        root = factory.mktemp("scale-run")
        ds = write_tiny_dataset(root / "ds")
        train(ds.root, root / "run", tiny_config(steps=3))
        _fresh_accelerate()
        _TRAINED["ldm"] = root / "run"
    return _TRAINED["ldm"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_run(tmp_path_factory)


def write_mask_dataset(root: Path, n: int = 12, size: int = 16) -> Dataset:
    """Blobs whose position is given by a one-channel mask condition ``tissue`` (masks in ``masks/``)."""
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 2, indexing="ij"))
    rows = []
    for i in range(n):
        centre = rng.uniform(-0.5, 0.5, 2)
        d2 = ((grid - centre.reshape(2, 1, 1)) ** 2).sum(0)
        mask = (d2 < 0.15).astype(np.float32)[None]
        img = np.clip(np.exp(-d2 / 0.1) * 2 - 1, -1, 1).astype(np.float32)[None]
        item = f"{'train' if i < n - 2 else 'val'}-{i:03d}"
        rows.append({"id": item, "path": save_item(root, f"items/{item}.npy", img),
                     "split": "train" if i < n - 2 else "val", "subject": item,
                     "tissue": save_item(root, f"masks/{item}.npy", mask)})
    info = DatasetInfo(spatial_dims=2, shape=[1, size, size], spacing=[1.0, 1.0], orientation=None,
                       intensity=Intensity(kind="percentile", low=0.0, high=500.0, unit=""),
                       conditions=[Condition(name="tissue", type="mask", channels=1)])
    return write_dataset(root, info, rows)


@pytest.fixture(scope="session")
def mask_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, dataset) of a 2D LDM conditioned on a one-channel mask, trained 2 steps per stage."""
    from imgsynth.training.run import train

    _fresh_accelerate()
    root = tmp_path_factory.mktemp("mask-run")
    ds = write_mask_dataset(root / "ds")
    train(ds.root, root / "run", tiny_config("loop.val_items=2", steps=2, batch=4))
    _fresh_accelerate()
    return root / "run", ds.root


@pytest.fixture(scope="session")
def stylegan2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A StyleGAN2 (labels left/right, age) of a few thousand parameters, trained 2 steps."""
    from imgsynth.config import load_config
    from imgsynth.training.run import train

    _fresh_accelerate()
    root = tmp_path_factory.mktemp("sg2-run")
    ds = write_tiny_dataset(root / "ds", n_train=8, n_val=2)
    tiny = ["seed=5", "model.generator.z_dim=16", "model.generator.w_dim=16", "model.generator.mapping_layers=2",
            "model.generator.channel_base=128", "model.generator.channel_max=16",
            "model.discriminator.channel_base=128", "model.discriminator.channel_max=16",
            "model.discriminator.mapping_layers=1", "stages.stylegan2.batch=4", "stages.stylegan2.kimg=0.008",
            "stages.stylegan2.ema_halflife_kimg=0.02", "loop.checkpoint_kimg=0.008", "loop.sample_kimg=null",
            "loop.progress=false", "loop.val_items=2", "model.sampling.truncation_psi=0.7"]
    train(ds.root, root / "run", load_config("stylegan2_2d_tiny", tiny))
    _fresh_accelerate()
    return root / "run"
