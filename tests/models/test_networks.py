"""Networks against references: MONAI's own UNet forward, closed-form KL, checkpointing, null tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imgsynth.config import apply_overrides, validate_config
from imgsynth.models.autoencoder import build_autoencoder, kl_divergence
from imgsynth.models.conditioning import ConditionEmbedder, FieldSpec, masks_on_grid
from imgsynth.models.config import LDMConfig
from imgsynth.models.diffusion import ConditionalUNet

BASE = {
    "autoencoder": {"channels": [8, 16], "latent_channels": 2, "num_res_blocks": 1, "attention_levels": [False, False],
                    "norm_num_groups": 8, "with_nonlocal_attn": False},
    "unet": {"channels": [16, 32], "attention_levels": [False, True], "num_res_blocks": 1, "num_head_channels": 16,
             "norm_num_groups": 8},
    "conditioning": {"embed_dim": 8},
}
LABEL, AGE, MASK = FieldSpec("label", "categorical", 3), FieldSpec("age", "continuous", 1), FieldSpec("seg", "mask", 2)


def model_config(*overrides: str) -> LDMConfig:
    return validate_config(LDMConfig, apply_overrides(BASE, overrides))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_unconditional_unet_forward_equals_monai() -> None:
    unet = ConditionalUNet(model_config(), [])
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 900])
    torch.nn.init.normal_(unet.unet.out[2].conv.weight, std=0.1)  # MONAI zero-initialises the output conv
    torch.testing.assert_close(unet(x, t), unet.unet(x, t), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["add", "cross_attention", "both"])
def test_conditions_change_the_output_unless_dropped(mode: str) -> None:
    unet = ConditionalUNet(model_config(f"conditioning.mode={mode}"), [LABEL, AGE, MASK])
    assert unet.unet.conv_in.conv.in_channels == 2 + 2  # latent + mask channels
    torch.nn.init.normal_(unet.unet.out[2].conv.weight, std=0.1)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([10, 500])
    a = {"label": torch.tensor([0, 1]), "age": torch.tensor([-0.5, 0.5]), "seg": torch.rand(2, 2, 16, 16)}
    b = {"label": torch.tensor([2, 2]), "age": torch.tensor([0.9, -0.9]), "seg": torch.rand(2, 2, 16, 16)}
    on, off = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    assert not torch.allclose(unet(x, t, a, on), unet(x, t, b, on))
    torch.testing.assert_close(unet(x, t, a, off), unet(x, t, b, off))  # null tokens, zero masks


def test_dropped_conditions_still_reach_every_parameter() -> None:
    """DDP without find_unused_parameters needs a gradient (zero is fine) for every parameter on every step."""
    emb = ConditionEmbedder([LABEL, AGE], 4)
    out = emb({"label": torch.tensor([1, 2]), "age": torch.tensor([0.1, 0.2])}, torch.zeros(2, dtype=torch.bool))
    torch.testing.assert_close(out, emb.null[None].expand(2, -1, -1))
    out.sum().backward()
    assert all(p.grad is not None for p in emb.parameters())


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients() -> None:
    cfg = model_config()
    plain = ConditionalUNet(cfg, [LABEL])
    ckpt = ConditionalUNet(model_config("unet.gradient_checkpointing=true"), [LABEL])
    ckpt.load_state_dict(plain.state_dict())
    torch.nn.init.normal_(plain.unet.out[2].conv.weight, std=0.1)
    ckpt.unet.out[2].conv.weight.data.copy_(plain.unet.out[2].conv.weight)
    x, t, c = torch.randn(2, 2, 8, 8), torch.tensor([1, 2]), {"label": torch.tensor([0, 2])}
    keep = torch.ones(2, dtype=torch.bool)
    plain(x, t, c, keep).pow(2).sum().backward()
    ckpt(x, t, c, keep).pow(2).sum().backward()
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_masks_resized_by_area_average() -> None:
    m = torch.rand(2, 2, 16, 16)
    grid = masks_on_grid({"seg": m}, [MASK], (8, 8), torch.tensor([True, False]))
    torch.testing.assert_close(grid[0], F.avg_pool2d(m, 2)[0])
    assert grid[1].abs().sum() == 0


def test_kl_divergence_closed_form() -> None:
    mu, sigma = torch.randn(3, 2, 4, 4), torch.rand(3, 2, 4, 4) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0, 1))
    torch.testing.assert_close(kl_divergence(mu, sigma), ref.flatten(1).sum(1))


def test_autoencoder_mean_path_is_deterministic_and_one_channel() -> None:
    ae = build_autoencoder(model_config(), channels=1).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    recon, mu, sigma = ae(x)
    assert recon.shape == x.shape and mu.shape == (2, 2, 8, 8)
    torch.testing.assert_close(recon, ae.decode(mu))
    noisy = ae(x, torch.ones_like(mu))[0]
    torch.testing.assert_close(noisy, ae.decode(mu + sigma))
