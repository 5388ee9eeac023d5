"""Condition embeddings for classifier-free guidance.

Each categorical field gets an embedding table, each continuous field (encoded in [-1, 1] by the
loader) a Fourier-feature MLP; every field also has a learned "no condition" token. The embedder
returns one token per field, ``[B, F, dim]``; items whose ``keep`` flag is False get the null
tokens (condition dropout while training, the unconditional branch while sampling; Ho &
Salimans, "Classifier-Free Diffusion Guidance", Alg. 1). Masks are not embedded here: they are
resized onto the latent grid and concatenated to the UNet input (:func:`mask_channels`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imgsynth.contracts import Condition


@dataclass(frozen=True)
class FieldSpec:
    """One condition field as the network sees it."""

    name: str
    type: str  # categorical | continuous | mask
    size: int  # number of categories, 1 for continuous, channels for a mask

    @classmethod
    def from_condition(cls, cond: Condition) -> FieldSpec:
        size = len(cond.categories or []) if cond.type == "categorical" else (cond.channels or 1) if cond.type == "mask" else 1
        return cls(name=cond.name, type=cond.type, size=size)


def split_fields(fields: Sequence[FieldSpec]) -> tuple[list[FieldSpec], list[FieldSpec]]:
    """(embedded fields, mask fields)."""
    return [f for f in fields if f.type != "mask"], [f for f in fields if f.type == "mask"]


class FourierFeatures(nn.Module):
    """``[B]`` scalars -> ``[B, 2n]`` sin/cos features at fixed log-spaced frequencies."""

    def __init__(self, n: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.logspace(0, math.log10(64.0), n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float()[:, None] * self.freqs[None, :]  # [B, n]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class ConditionEmbedder(nn.Module):
    """Categorical and continuous fields -> tokens ``[B, F, dim]`` with learned null tokens."""

    def __init__(self, fields: Sequence[FieldSpec], dim: int) -> None:
        super().__init__()
        self.fields = [f for f in fields if f.type != "mask"]
        if not self.fields:
            raise ValueError("ConditionEmbedder needs at least one categorical or continuous field")
        self.dim = dim
        self.embed = nn.ModuleDict()
        for f in self.fields:
            if f.type == "categorical":
                self.embed[f.name] = nn.Embedding(f.size, dim)
            else:
                self.embed[f.name] = nn.Sequential(FourierFeatures(16), nn.Linear(32, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.randn(len(self.fields), dim) * 0.02)

    def forward(self, cond: Mapping[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        tokens = torch.stack([self.embed[f.name](cond[f.name]) for f in self.fields], dim=1)  # [B, F, dim]
        if keep is not None:
            # torch.where keeps the null tokens in the graph on every step (DDP needs every parameter used).
            null = self.null[None].to(tokens.dtype).expand_as(tokens)
            tokens = torch.where(keep.view(-1, 1, 1), tokens, null)
        return tokens


def mask_channels(fields: Sequence[FieldSpec]) -> int:
    return sum(f.size for f in fields if f.type == "mask")


def masks_on_grid(
    cond: Mapping[str, torch.Tensor], fields: Sequence[FieldSpec], size: Sequence[int], keep: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Mask fields resized to the latent grid by area averaging, concatenated: ``[B, sum ch, *size]``
    (zeros where ``keep`` is False)."""
    masks = [f for f in fields if f.type == "mask"]
    if not masks:
        return None
    grids = []
    for f in masks:
        m = cond[f.name].float()  # [B, ch, *spatial]
        grids.append(F.interpolate(m, size=tuple(size), mode="area") if tuple(m.shape[2:]) != tuple(size) else m)
    out = torch.cat(grids, dim=1)
    if keep is not None:
        out = out * keep.view(-1, *([1] * (out.ndim - 1))).to(out.dtype)
    return out
