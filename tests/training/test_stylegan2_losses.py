"""GAN losses and regularisers against closed forms, finite differences and independent autograd paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from imgsynth.models.stylegan2 import Discriminator, Generator
from imgsynth.training.augment import PRESETS, AugmentPipe
from imgsynth.training.stylegan2 import d_logistic_loss, g_nonsaturating_loss, path_lengths, r1_penalty

torch.set_num_threads(2)


def _tiny_d(c_dim: int = 2) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(c_dim=c_dim, img_resolution=8, img_channels=1, channel_base=16, channel_max=2,
                         mapping_layers=1, mbstd_group_size=2).double()


def test_logistic_losses_closed_form() -> None:
    logits = torch.tensor([[0.0], [2.0], [-3.0]])
    torch.testing.assert_close(g_nonsaturating_loss(logits), torch.log1p(torch.exp(-logits[:, 0])))
    assert g_nonsaturating_loss(torch.zeros(1, 1)).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([[1.0], [-1.0]]), torch.tensor([[0.5], [0.0]])
    ref = torch.log1p(torch.exp(fake[:, 0])) + torch.log1p(torch.exp(-real[:, 0]))
    torch.testing.assert_close(d_logistic_loss(real, fake), ref)


def test_r1_of_a_linear_critic_is_the_squared_weight_norm() -> None:
    a = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 2, 4, 4).requires_grad_(True)
    logits = (x * a).sum(dim=[1, 2, 3])[:, None] + 0.7
    torch.testing.assert_close(r1_penalty(x, logits), a.square().sum().expand(3))


def test_r1_matches_jacobian_and_finite_differences() -> None:
    D = _tiny_d()
    c = torch.eye(2, dtype=torch.float64)[[0, 1]]
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    xg = x.clone().requires_grad_(True)
    r1 = r1_penalty(xg, D(xg, c))
    # Independent autograd path: the full Jacobian of the summed logits (mbstd couples the batch).
    jac = torch.autograd.functional.jacobian(lambda t: D(t, c).sum(), x)
    torch.testing.assert_close(r1, jac.square().flatten(1).sum(1))
    # Central finite differences of the summed logits, pixel by pixel.
    eps = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for idx in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=torch.float64)
            e[idx] = eps
            e = e.reshape(x.shape)
            fd.view(-1)[idx] = (D(x + e, c).sum() - D(x - e, c).sum()) / (2 * eps)
    torch.testing.assert_close(r1, fd.square().flatten(1).sum(1), rtol=1e-6, atol=1e-8)


def test_r1_parameter_gradient_double_backward_through_augmentation() -> None:
    """The gradient of R1 w.r.t. D's weights (a second derivative) matches finite differences."""
    D = _tiny_d()
    pipe = AugmentPipe(PRESETS["bgc"], p=0.9)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    c = torch.eye(2, dtype=torch.float64)[[1, 0]]
    params = pipe.sample(x.shape, generator=torch.Generator().manual_seed(4))
    params.theta = params.theta.double()
    assert params.geometric
    names = ["blocks.b8.conv0.weight", "epilogue.fc.weight", "mapping.layers.0.weight"]
    base = dict(D.named_parameters())

    def penalty(*weights: torch.Tensor) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        logits = functional_call(D, {**base, **dict(zip(names, weights, strict=True))}, (pipe.apply(xg, params), c))
        return r1_penalty(xg, logits).sum()

    inputs = tuple(base[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(penalty, inputs, eps=1e-6, atol=1e-5)


def test_path_length_matches_explicit_jacobian() -> None:
    torch.manual_seed(5)
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, channel_base=16, channel_max=2,
                  mapping_layers=2).double()
    ws = G.mapping(torch.randn(2, 4, dtype=torch.float64), None).detach()
    noise = torch.randn(2, G.synthesis.noise_numel, dtype=torch.float64)
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64) / 8.0
    wsg = ws.clone().requires_grad_(True)
    lengths = path_lengths(G.synthesis(wsg, noise=noise), wsg, y)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda w, b=b: G.synthesis(w[None], noise=noise[b : b + 1])[0], ws[b])  # [1, 8, 8, L, w_dim]
        jty = torch.einsum("chw,chwlk->lk", y[b], jac)  # J_w^T y for every layer's w
        ref = jty.square().sum(1).mean().sqrt()
        torch.testing.assert_close(lengths[b], ref)
    lengths.sum().backward()  # double backward through the synthesis network
    assert G.synthesis.blocks.b8.conv1.weight.grad is not None


def test_softplus_forms_agree_with_torch() -> None:
    logits = torch.linspace(-30, 30, 13)[:, None]
    torch.testing.assert_close(g_nonsaturating_loss(logits), F.softplus(-logits)[:, 0])
