"""Noise process and samplers against closed forms.

With all data at one point z*, the exact denoiser is known in closed form (eps = (x_t - sqrt(ab) z*) /
sqrt(1 - ab), v = sqrt(ab) eps - sqrt(1 - ab) z*, flow velocity z* - eps), and every sampler must land
on z* from any starting noise.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgsynth.models.config import NoiseConfig
from imgsynth.models.diffusion import NoiseProcess
from imgsynth.models.sampling import item_noise, sample_latents
from imgsynth.training.task import KeyedRandom

Z_STAR = torch.linspace(-1.5, 1.5, 2 * 4 * 4).view(1, 2, 4, 4)


class Oracle(nn.Module):
    """The exact model for data concentrated at ``Z_STAR`` (ignores conditions)."""

    fields: list = []

    def __init__(self, process: NoiseProcess) -> None:
        super().__init__()
        self.process = process

    def forward(self, x, t, cond=None, keep=None):  # noqa: ANN001, ANN201
        z = Z_STAR.to(x.dtype).expand_as(x)
        if self.process.cfg.kind == "rflow":
            s = (t.float() / self.process.T).view(-1, 1, 1, 1)
            eps = (x - (1 - s) * z) / s
            return z - eps
        ab = self.process.ddpm.alphas_cumprod.to(x.device)[t.long()].view(-1, 1, 1, 1).to(x.dtype)
        eps = (x - ab.sqrt() * z) / (1 - ab).sqrt()
        return eps if self.process.cfg.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * z


def test_ddpm_forward_process_closed_form() -> None:
    p = NoiseProcess(NoiseConfig(num_train_timesteps=50, prediction="v_prediction"), 2)
    z0, eps, t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([0, 25, 49])
    ab = p.ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t, v = p.noisy(z0, eps, t)
    torch.testing.assert_close(x_t, ab.sqrt() * z0 + (1 - ab).sqrt() * eps)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * z0)
    # scaled_linear betas: linspace(sqrt(b0), sqrt(b1))^2
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 50) ** 2
    torch.testing.assert_close(p.ddpm.betas, betas)


def test_rectified_flow_forward_process_closed_form() -> None:
    p = NoiseProcess(NoiseConfig(kind="rflow", num_train_timesteps=1000), 2)
    z0, eps = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    t = torch.tensor([250.0, 900.0])
    x_t, v = p.noisy(z0, eps, t)
    s = (t / 1000).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - s) * z0 + s * eps)
    torch.testing.assert_close(v, z0 - eps)
    ts = p.sample_t(KeyedRandom(0, range(256)), (2, 4, 4))
    assert float(ts.min()) > 0 and float(ts.max()) < 1000 and abs(float(ts.mean()) - 500) < 60  # logit-normal(0,1)


@pytest.mark.parametrize(
    ("kind", "prediction", "sampler", "steps"),
    [("ddpm", "epsilon", "dpm++", 10), ("ddpm", "v_prediction", "dpm++", 10), ("ddpm", "epsilon", "ddim", 10),
     ("ddpm", "v_prediction", "ddim", 10), ("ddpm", "epsilon", "ddpm", 100), ("rflow", "epsilon", "euler", 10)],
)
def test_samplers_land_on_the_data_point(kind: str, prediction: str, sampler: str, steps: int) -> None:
    cfg = NoiseConfig(kind=kind, prediction=prediction, num_train_timesteps=100)
    p = NoiseProcess(cfg, 2)
    x_T, gens = item_noise([11, 12, 13], (2, 4, 4), torch.device("cpu"))
    z = sample_latents(Oracle(p), p, x_T, {}, sampler=sampler, steps=steps, guidance=1.0, generators=gens)
    torch.testing.assert_close(z, Z_STAR.expand_as(z), atol=2e-3, rtol=0)


def test_item_noise_depends_only_on_the_seed() -> None:
    a, _ = item_noise([5, 6, 7], (2, 3), torch.device("cpu"))
    b, _ = item_noise([7, 5], (2, 3), torch.device("cpu"))
    torch.testing.assert_close(a[2], b[0])
    torch.testing.assert_close(a[0], b[1])
