"""Exponential moving average of network weights, with the half-life counted in images (EDM)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


def ema_beta(batch: int, nimg: int, *, halflife_kimg: float, rampup: float | None) -> float:
    """Decay per step: ``0.5 ** (batch / halflife_nimg)``, the half-life ramped up to at most
    ``rampup * nimg`` early on (Karras et al., EDM, training_loop.py)."""
    halflife_nimg = halflife_kimg * 1000.0
    if rampup is not None:
        halflife_nimg = min(halflife_nimg, nimg * rampup)
    return 0.5 ** (batch / max(halflife_nimg, 1e-8))


class EMA:
    """EMA copies of some networks (fp32, eval mode, no gradients).

    ``update`` must receive the *unwrapped* trained modules (``accelerator.unwrap_model``), the
    ones whose parameters the optimizer changes; buffers (e.g. running statistics) are copied.
    """

    def __init__(self, nets: Mapping[str, nn.Module], *, halflife_kimg: float, rampup: float | None) -> None:
        self.halflife_kimg = halflife_kimg
        self.rampup = rampup
        self.nets: dict[str, nn.Module] = {n: copy.deepcopy(m).eval().requires_grad_(False) for n, m in nets.items()}
        for net in self.nets.values():
            for p in net.parameters():
                p.data = p.data.float()

    def __bool__(self) -> bool:
        return bool(self.nets)

    @torch.no_grad()
    def update(self, nets: Mapping[str, nn.Module], *, batch: int, nimg: int) -> float:
        """Blend the trained weights in after a step that brought the count to ``nimg``; returns beta."""
        beta = ema_beta(batch, nimg, halflife_kimg=self.halflife_kimg, rampup=self.rampup)
        for name, shadow in self.nets.items():
            live = nets[name]
            for p_ema, p in zip(shadow.parameters(), live.parameters(), strict=True):
                p_ema.copy_(p.detach().float().lerp(p_ema, beta))
            for b_ema, b in zip(shadow.buffers(), live.buffers(), strict=True):
                b_ema.copy_(b)
        return beta

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{net.param: tensor}`` (what ``weights/<stage>-ema.safetensors`` holds)."""
        return {f"{n}.{k}": v for n, m in self.nets.items() for k, v in m.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name, net in self.nets.items():
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
