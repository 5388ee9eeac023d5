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
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None
        self._live: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self.nets)

    @torch.no_grad()
    def update(self, nets: Mapping[str, nn.Module], *, batch: int, nimg: int) -> float:
        """Blend the trained weights in after a step that brought the count to ``nimg``; returns beta."""
        beta = ema_beta(batch, nimg, halflife_kimg=self.halflife_kimg, rampup=self.rampup)
        live_ids = {name: id(nets[name]) for name in self.nets}
        if self._pairs is None or live_ids != self._live:  # parameter lists gathered once
            ema_p, live_p, ema_b, live_b = [], [], [], []
            for name, shadow in self.nets.items():
                pairs = list(zip(shadow.parameters(), nets[name].parameters(), strict=True))
                ema_p += [e for e, _ in pairs]
                live_p += [p for _, p in pairs]
                bufs = list(zip(shadow.buffers(), nets[name].buffers(), strict=True))
                ema_b += [e for e, _ in bufs]
                live_b += [b for _, b in bufs]
            self._pairs, self._live = (ema_p, live_p, ema_b, live_b), live_ids
        ema_p, live_p, ema_b, live_b = self._pairs
        if ema_p:
            # ema <- beta * ema + (1 - beta) * live, all tensors in one fused call
            torch._foreach_lerp_(ema_p, [p.detach().float() for p in live_p], 1.0 - beta)
        for e, b in zip(ema_b, live_b, strict=True):
            e.copy_(b)
        return beta

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{net.param: tensor}`` (what ``weights/<stage>-ema.safetensors`` holds)."""
        return {f"{n}.{k}": v for n, m in self.nets.items() for k, v in m.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name, net in self.nets.items():
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
