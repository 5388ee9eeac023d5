"""A process SIGKILLed while writing a checkpoint resumes from the last complete one, never a partial one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from imgsynth.contracts import Dataset
from imgsynth.training.run import train

from .conftest import ACCUM_OVERRIDES, assert_same_state, final_state, tiny_config

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    sys.path.insert(0, {repo!r})
    torch.set_num_threads(1)
    import imgsynth.training.checkpoint as ck
    from imgsynth.training.run import train
    from tests.training.conftest import ACCUM_OVERRIDES, tiny_config

    original = ck.save_file
    def save_file(tensors, path, metadata=None):
        # The accelerate files of the final autoencoder checkpoint are written: die before ours are.
        if ".tmp-step-000000004" in str(path) and "autoencoder" in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(tensors, path, metadata=metadata)
    ck.save_file = save_file
    train({dataset!r}, {run!r}, tiny_config(*ACCUM_OVERRIDES))
    """
)


def test_sigkill_mid_checkpoint_resumes_from_last_complete(tiny_dataset: Dataset, straight_run: Path, tmp_path: Path,
                                                           repo_root: Path) -> None:
    run = tmp_path / "run"
    code = KILLER.format(repo=str(repo_root), dataset=str(tiny_dataset.root), run=str(run))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = run / "checkpoints" / "autoencoder"
    partial = ckpts / ".tmp-step-000000004"
    assert partial.is_dir() and (partial / "model.safetensors").is_file() and not (partial / "state.json").exists()
    assert (ckpts / "latest").read_text().strip() == "step-000000002"

    train(tiny_dataset.root, run, tiny_config(*ACCUM_OVERRIDES))
    assert not partial.exists()
    assert (ckpts / "latest").read_text().strip() == "step-000000004"
    assert_same_state(final_state(straight_run), final_state(run))
