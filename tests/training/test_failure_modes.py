"""Failure modes seen in other LDM code bases, each pinned by a test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from imgsynth.contracts import Dataset, RunFolder
from imgsynth.training import loop as loop_module
from imgsynth.training.run import train

from .conftest import final_state, tiny_config


def test_bf16_autocast_keeps_fp32_master_weights(tiny_dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bf16 autocast (CPU) the forward runs in bf16 while weights, EMA and Adam moments stay fp32."""
    seen: dict[str, set[torch.dtype]] = {}
    nets_seen: dict[str, torch.nn.Module] = {}
    original = loop_module.training_loop

    def recording_loop(**kwargs):  # noqa: ANN202
        for name, net in kwargs["nets"].items():
            nets_seen[name] = net
            conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, set()).add(o.dtype))
        return original(**kwargs)

    monkeypatch.setattr(loop_module, "training_loop", recording_loop)
    run = tmp_path / "run"
    train(tiny_dataset.root, run, tiny_config("loop.mixed_precision=bf16", steps=3))
    assert all(torch.bfloat16 in dtypes for dtypes in seen.values()), seen  # autocast was on
    assert set(nets_seen) == {"autoencoder", "discriminator", "unet"}
    for name, net in nets_seen.items():
        assert {p.dtype for p in net.parameters()} == {torch.float32}, name
    state = final_state(run)
    assert {v.dtype for v in state.values()} == {torch.float32}


@pytest.fixture(scope="module")
def trained_run(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("fm") / "run"
    train(tiny_dataset.root, run, tiny_config(steps=3))
    return run


def test_latent_scale_factor_saved_everywhere_and_used_at_inference(trained_run: Path) -> None:
    from imgsynth.generate import load_generator

    info = RunFolder(trained_run).model_info()
    factor = info.latent_scale_factor
    assert factor is not None and factor > 0 and abs(factor - 1.0) > 1e-3
    # Stored in the diffusion weights (what generation reads) and in the checkpoint state.
    for name in ("diffusion.safetensors", "diffusion-ema.safetensors"):
        with safe_open(str(trained_run / "weights" / name), framework="pt") as fh:
            assert float(fh.metadata()["latent_scale_factor"]) == factor
    import json

    latest = (trained_run / "checkpoints" / "diffusion" / "latest").read_text().strip()
    state = json.loads((trained_run / "checkpoints" / "diffusion" / latest / "state.json").read_text())
    assert state["task"]["latent_scale_factor"] == factor

    # Used: the generator decodes D(z / factor).
    gen = load_generator(trained_run, "cpu")
    assert gen.scale_factor == factor
    z = torch.randn(2, *gen.latent_shape)
    expected = gen.autoencoder.decode(z / factor).clamp(-1, 1)
    torch.testing.assert_close(gen.decode(z), expected)
    assert not torch.allclose(gen.decode(z), gen.autoencoder.decode(z).clamp(-1, 1), atol=1e-4)


def test_grayscale_stays_one_channel(trained_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    from imgsynth.generate import generate

    ae = load_file(str(trained_run / "weights" / "autoencoder-ema.safetensors"))
    assert ae["autoencoder.encoder.blocks.0.conv.weight"].shape[1] == 1  # input conv takes one channel
    out = generate(trained_run, tmp_path / "samples", n=2, steps=2)
    assert out.info.shape[0] == 1
    item = np.load(out.item_path(out.rows[0]))
    assert item.shape == (1, 16, 16)
    assert Image.open(out.root / out.rows[0]["png"]).mode == "L"
