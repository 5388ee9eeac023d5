"""Real 2-process DDP on CPU (gloo) through ``accelerate launch``: both ranks end with identical weights,
equal within float tolerance to one process on the same global batch, EMA included."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgsynth.contracts import Dataset
from imgsynth.models.autoencoder import build_autoencoder
from imgsynth.training.cli import launch_command

from .conftest import ACCUM_OVERRIDES, assert_same_state, final_state, tiny_config


@pytest.mark.ddp
def test_two_process_ddp_matches_one_process(tiny_dataset: Dataset, straight_run: Path, tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd, env = launch_command([], 2, cpu=True)
    module_at = cmd.index("-m", cmd.index("--multi_gpu"))
    cmd = [*cmd[:module_at], str(worker), str(tiny_dataset.root), str(run), str(out)]
    proc = subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2] and [r["rank"] for r in records] == [0, 1]
    assert all(r["prepared"].count("DistributedDataParallel") == 3 for r in records), records  # AE, D, UNet

    for stage in ("autoencoder", "diffusion"):
        a, b = (load_file(str(out / f"rank{r}-{stage}.safetensors")) for r in (0, 1))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} differs between ranks"

    # Same global batch (8 = 2 x 4 here, 2 micro-batches x 4 in one process): same result.
    assert_same_state(final_state(straight_run), final_state(run), atol=2e-5)

    # EMA really moved under DDP (a copy that never updates would still equal the initial weights).
    torch.manual_seed(tiny_config().seed)
    init = build_autoencoder(tiny_config(*ACCUM_OVERRIDES).model, 1).state_dict()
    ema = load_file(str(run / "weights" / "autoencoder-ema.safetensors"))
    moved = max(float((ema[f"autoencoder.{k}"] - v).abs().max()) for k, v in init.items() if v.is_floating_point())
    assert moved > 1e-3
    assert os.path.exists(run / "model.json")
