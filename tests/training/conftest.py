"""Tiny datasets and configs for the training tests (CPU, seconds per run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imgsynth.config import apply_overrides, validate_config
from imgsynth.contracts import Condition, Dataset, DatasetInfo, Intensity, save_item, write_dataset
from imgsynth.training.config import TrainConfig

TINY_MODEL: dict[str, Any] = {
    "family": "ldm",
    "spatial_dims": 2,
    "autoencoder": {"channels": [8, 16], "latent_channels": 2, "num_res_blocks": 1,
                    "attention_levels": [False, False], "norm_num_groups": 8, "with_nonlocal_attn": False},
    "discriminator": {"channels": 8, "num_layers": 2, "norm_num_groups": 4},
    "unet": {"channels": [16, 32], "attention_levels": [False, True], "num_res_blocks": 1,
             "num_head_channels": 16, "norm_num_groups": 8},
    "conditioning": {"embed_dim": 8, "dropout": 0.25, "guidance": 2.0},
    "noise": {"num_train_timesteps": 100, "steps": 4},
    "losses": {"adv_warmup_kimg": 0.016, "adv_weight": 0.05},
    "latent_scale_items": 16,
}
TINY_LOOP: dict[str, Any] = {"mixed_precision": "no", "checkpoint_kimg": 0.016, "keep_checkpoints": 2, "val_kimg": 0.016,
                             "val_items": 8, "val_batch": 4, "sample_kimg": None, "sample_count": 4, "log_kimg": 0.008,
                             "num_workers": 0, "progress": False}


def tiny_config(*overrides: str, steps: int = 4, batch: int = 8, spatial_dims: int = 2) -> TrainConfig:
    """A TrainConfig of a few thousand parameters; ``steps`` optimizer steps per stage."""
    kimg = steps * batch / 1000
    data = {"seed": 3, "model": {**TINY_MODEL, "spatial_dims": spatial_dims}, "loop": TINY_LOOP,
            "stages": {s: {"kimg": kimg, "batch": batch, "lr": 1e-3, "ema_halflife_kimg": 0.01, "ema_rampup": None}
                       for s in ("autoencoder", "diffusion")}}
    return validate_config(TrainConfig, apply_overrides(data, overrides))


def write_tiny_dataset(root: Path, *, n_train: int = 24, n_val: int = 8, size: int = 16, spatial_dims: int = 2,
                       seed: int = 0, with_mask: bool = False) -> Dataset:
    """Blobs whose position follows the label and whose brightness follows ``age`` (and whose
    support is the mask condition ``seg`` when ``with_mask``)."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * spatial_dims, indexing="ij"))
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            label = ["left", "right"][i % 2]
            age = float(rng.uniform(20, 80))
            centre = np.array([0.0] * (spatial_dims - 1) + [-0.4 if label == "left" else 0.4])
            centre = centre + rng.normal(0, 0.1, spatial_dims)
            d2 = ((grid - centre.reshape(-1, *[1] * spatial_dims)) ** 2).sum(0)
            img = (np.exp(-d2 / 0.1) * (0.5 + age / 100.0) * 2 - 1).astype(np.float32)[None]
            item_id = f"{split}-{i:03d}"
            row = {"id": item_id, "path": save_item(root, f"items/{item_id}.npy", np.clip(img, -1, 1)),
                   "split": split, "subject": item_id, "label": label, "age": age}
            if with_mask:
                row["seg"] = save_item(root, f"masks/{item_id}.npy", (d2 < 0.1).astype(np.float32)[None])
            rows.append(row)
    info = DatasetInfo(spatial_dims=spatial_dims, shape=[1, *[size] * spatial_dims], spacing=[1.5] * spatial_dims,
                       intensity=Intensity(kind="minmax", low=0.0, high=1000.0, unit="HU"),
                       conditions=[Condition(name="label", type="categorical", categories=["left", "right"]),
                                   Condition(name="age", type="continuous", range=(0.0, 100.0)),
                                   *([Condition(name="seg", type="mask", channels=1)] if with_mask else [])])
    return write_dataset(root, info, rows)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "ds")


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each test builds its own Accelerator (accelerate keeps process-wide state)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, and CI has two cores
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


# Global batch 8 as 2 micro-batches of 4 (gradient accumulation); 4 steps per stage.
ACCUM_OVERRIDES = ("stages.autoencoder.batch_gpu=4", "stages.diffusion.batch_gpu=4")


@pytest.fixture(scope="session")
def straight_run(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of ``tiny_config(*ACCUM_OVERRIDES)`` trained without interruption (reference for resumes)."""
    from accelerate.state import AcceleratorState, GradientState

    from imgsynth.training.run import train

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_dataset.root, run, tiny_config(*ACCUM_OVERRIDES))
    return run


def final_state(run: Path) -> dict[str, torch.Tensor]:
    """Weights, EMA weights and Adam moments of every stage's final checkpoint."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for stage in ("autoencoder", "diffusion"):
        for name in (f"{stage}.safetensors", f"{stage}-ema.safetensors"):
            out.update({f"{name}/{k}": v for k, v in load_file(str(run / "weights" / name)).items()})
        latest = run / "checkpoints" / stage / (run / "checkpoints" / stage / "latest").read_text().strip()
        for opt_file in sorted(latest.glob("optimizer*.bin")):
            state = torch.load(opt_file, weights_only=True)["state"]
            for idx, s in state.items():
                for key in ("exp_avg", "exp_avg_sq"):
                    out[f"{stage}/{opt_file.name}/{idx}/{key}"] = s[key]
    return out


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys() and any("exp_avg" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=atol, rtol=0, msg=key)
