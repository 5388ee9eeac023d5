"""StyleGAN2 losses and regularisers.

* Non-saturating logistic loss (Goodfellow et al. 2014): ``L_G = softplus(-D(G(z)))``,
  ``L_D = softplus(D(G(z))) + softplus(-D(x))``.
* R1 (Mescheder et al. 2018, eq. 9): ``gamma / 2 * ||grad_x D(x)||^2`` on reals, lazily every
  ``r1_interval`` steps with the penalty scaled by the interval (StyleGAN2 sec. 3.1).
* Path-length regularisation (StyleGAN2 eq. 4): ``(||J_w^T y||_2 - a)^2`` with
  ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running mean of the lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(G(z)))`` per item [B]."""
    return F.softplus(-fake_logits).flatten(1).mean(1)


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(D(G(z))) + softplus(-D(x))`` per item [B]."""
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).flatten(1).mean(1)


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """``||grad_x D(x)||^2`` per item [B] (``real_img`` must require grad; graph kept for backward)."""
    (grads,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grads.square().flatten(1).sum(1)


def path_lengths(img: torch.Tensor, ws: torch.Tensor, pl_noise: torch.Tensor) -> torch.Tensor:
    """``||J_w^T y||_2`` per item [B], averaged over the ``num_ws`` layers of ``ws`` [B, L, w_dim].

    ``pl_noise`` is ``y`` [B, C, H, W], already scaled by ``1 / sqrt(H W)``.
    """
    (grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    return grads.square().sum(2).mean(1).sqrt()
