"""Conditional StyleGAN2 generator and discriminator (Karras et al. 2020), pure PyTorch.

Generator: mapping network ``(z, c) -> w`` (8 equalised-LR layers with lr multiplier 0.01, the
condition vector embedded and normalised beside z), synthesis network with modulated 3x3
convolutions, weight demodulation, per-layer noise and the *skip* architecture (each resolution
adds its 1x1 image output to the upsampled sum). Sampling supports style mixing and the
truncation trick ``w = w_avg + psi (w - w_avg)`` towards either the tracked global average or a
per-condition average ``E_z[mapping(z, c)]`` (conditional truncation).

Discriminator: residual blocks with FIR downsampling, minibatch standard deviation, and
projection conditioning (Miyato & Koyama 2018): ``D(x, c) = <phi(x), psi(c)> / sqrt(cmap_dim)``.

The condition vector ``c`` [B, c_dim] concatenates a one-hot block per categorical condition and
one value per continuous covariate (already scaled to [-1, 1] by the data loader); see
:class:`ConditionLayout`. Image channels can be any count; resolutions are powers of two >= 8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imgsynth.contracts import Condition
from imgsynth.models.conditioning import FieldSpec
from imgsynth.models.stylegan2_ops import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    SynthesisLayer,
    ToImageLayer,
    fir_filter,
    normalize_2nd_moment,
    upsample2d,
)

NOISE_MODES = ("random", "const", "none")


# =============================================================================================
# Conditions
# =============================================================================================
@dataclass(frozen=True)
class ConditionLayout:
    """How named conditions map to the flat condition vector ``c`` [B, c_dim].

    ``fields`` are the conditioning fields (:class:`~imgsynth.models.conditioning.FieldSpec`, as
    the LDM describes them): a categorical field takes ``size`` = number of categories (one-hot),
    a continuous covariate takes 1. Mask fields are not supported by StyleGAN2 (no spatial
    conditioning path).
    """

    fields: tuple[FieldSpec, ...] = ()

    @classmethod
    def from_conditions(cls, conditions: Sequence[Condition]) -> ConditionLayout:
        """From the dataset's :class:`~imgsynth.contracts.Condition` entries."""
        fields = tuple(FieldSpec.from_condition(cond) for cond in conditions)
        for f in fields:
            if f.type == "mask":
                raise ValueError(f"condition '{f.name}' is a mask; StyleGAN2 takes categorical or continuous conditions")
        return cls(fields)

    @property
    def c_dim(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def encode(self, cond: Mapping[str, torch.Tensor], batch: int | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        """``{name: class index (long) or value in [-1, 1] (float)}`` -> ``c`` [B, c_dim] (float)."""
        parts = []
        for f in self.fields:
            if f.name not in cond:
                raise KeyError(f"condition '{f.name}' missing from the batch (has: {', '.join(cond) or 'none'})")
            value = torch.as_tensor(cond[f.name], device=device).reshape(-1)
            if f.type == "categorical":
                parts.append(F.one_hot(value.long(), f.size).float())
            else:
                parts.append(value.float()[:, None])
        if not parts:
            n = batch if batch is not None else 0
            return torch.zeros(n, 0, device=device)
        return torch.cat(parts, dim=1)


# =============================================================================================
# Generator
# =============================================================================================
class MappingNetwork(nn.Module):
    """``(z, c) -> w`` broadcast to ``num_ws`` layers; tracks the moving average of ``w``."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, *, num_layers: int = 8,
                 layer_features: int | None = None, embed_features: int | None = None,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if embed_features is None else embed_features
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim == 0:
            embed_features = 0
        if z_dim + embed_features == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        self.embed = EqualLinear(c_dim, embed_features) if c_dim > 0 else None
        feats = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList(
            EqualLinear(feats[i], feats[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, w_avg: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` [B, z_dim], ``c`` [B, c_dim] -> ``w`` [B, num_ws, w_dim] (or [B, w_dim] when num_ws is None).

        ``w_avg`` ([w_dim] or [B, w_dim]) overrides the tracked average as truncation centre. The
        mapping always runs in the weights' precision (autocast off): it is cheap and ``w`` feeds
        every layer's style.
        """
        device_type = (z if z is not None else c).device.type  # type: ignore[union-attr]
        with torch.autocast(device_type, enabled=False):
            return self._forward(z, c, truncation_psi, truncation_cutoff, w_avg)

    @torch.no_grad()
    def track_w_avg(self, w_mean: torch.Tensor) -> None:
        """Move the tracked average towards ``w_mean`` [w_dim] (the batch mean of untruncated ``w``)."""
        if self.w_avg_beta is not None:
            self.w_avg.copy_(w_mean.detach().float().lerp(self.w_avg, self.w_avg_beta))

    def _forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float,
                 truncation_cutoff: int | None, w_avg: torch.Tensor | None) -> torch.Tensor:
        parts = []
        dtype = self.layers[0].weight.dtype
        if self.z_dim > 0:
            assert z is not None and z.shape[1:] == (self.z_dim,), getattr(z, "shape", None)
            parts.append(normalize_2nd_moment(z.to(dtype)))
        if self.embed is not None:
            assert c is not None and c.shape[1:] == (self.c_dim,), getattr(c, "shape", None)
            parts.append(normalize_2nd_moment(self.embed(c.to(dtype))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]
        if truncation_psi != 1:
            center = (self.w_avg if w_avg is None else w_avg).to(x.dtype).reshape(-1, 1, self.w_dim)
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([center.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [up-conv,] conv, and a 1x1 image output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.resolution = resolution
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToImageLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.is_first else 2
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                fused: bool | None, noise: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: [B, num_conv + 1, w_dim]; noise: one [B, 1, R, R] (or None) per conv
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode, fused=fused, noise=noise[0])
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode, fused=fused, noise=noise[0])
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode, fused=fused, noise=noise[1])
        y = self.torgb(x, ws[:, self.num_conv], fused=fused).float()
        img = y if img is None else upsample2d(img, self.fir) + y
        return x, img


def block_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // resolution, channel_max))


class SynthesisNetwork(nn.Module):
    """``w`` [B, num_ws, w_dim] -> image [B, C, R, R] through blocks at 4, 8, ..., R."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 16384,
                 channel_max: int = 512, conv_clamp: float | None = None) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 8 or 2**log2 != img_resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.blocks = nn.ModuleDict()
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = 0 if res == 4 else block_channels(res // 2, channel_base, channel_max)
            out_ch = block_channels(res, channel_base, channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, conv_clamp)
            self.blocks[f"b{res}"] = block
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's image output

    @property
    def noise_numel(self) -> int:
        """Numbers per image in a flat ``noise`` input: one R x R map per modulated 3x3 conv."""
        return sum(block.num_conv * block.resolution**2 for block in self.blocks.values())

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused: bool | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``ws`` [B, num_ws, w_dim] -> image; ``noise`` [B, noise_numel] supplies the per-layer noise."""
        assert ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
        assert noise is None or noise.shape == (ws.shape[0], self.noise_numel), (None if noise is None else noise.shape)
        x = img = None
        w_idx = n_idx = 0
        for block in self.blocks.values():
            maps: list[torch.Tensor | None] = [None] * block.num_conv
            if noise is not None:
                r = block.resolution
                maps = [noise[:, n_idx + i * r * r : n_idx + (i + 1) * r * r].reshape(-1, 1, r, r)
                        for i in range(block.num_conv)]
                n_idx += block.num_conv * r * r
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], noise_mode, fused, maps)
            w_idx += block.num_conv
        assert img is not None
        return img  # [B, C, R, R]


class Generator(nn.Module):
    """Conditional StyleGAN2 generator ``G(z, c)``."""

    def __init__(self, *, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int,
                 img_channels: int = 1, mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.998, channel_base: int = 16384, channel_max: int = 512,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                          channel_max=channel_max, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, w_avg: torch.Tensor | None = None,
                noise_mode: str = "random", noise: torch.Tensor | None = None,
                mix_z: torch.Tensor | None = None, mix_cutoff: torch.Tensor | None = None,
                return_ws: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``z`` [B, z_dim], ``c`` [B, c_dim] -> image [B, C, R, R] (and ``ws`` with ``return_ws``).

        Style mixing: layers ``>= mix_cutoff[b]`` of image b take their ``w`` from ``mix_z[b]``
        (``mix_cutoff[b] = num_ws`` leaves image b unmixed).
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, w_avg=w_avg)
        if mix_z is not None:
            assert mix_cutoff is not None and mix_cutoff.shape == (z.shape[0],)
            ws_mix = self.mapping(mix_z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                  w_avg=w_avg)
            layer = torch.arange(self.num_ws, device=ws.device)
            take = (layer[None, :] >= mix_cutoff.to(ws.device)[:, None])[:, :, None]  # [B, num_ws, 1]
            ws = torch.where(take, ws_mix, ws)
        img = self.synthesis(ws, noise_mode=noise_mode, noise=noise)
        return (img, ws) if return_ws else img

    @torch.no_grad()
    def condition_w_avg(self, c: torch.Tensor, *, num_samples: int = 2048, seed: int = 0,
                        chunk: int = 1024) -> torch.Tensor:
        """Per-condition average ``E_z[mapping(z, c)]`` [B, w_dim], one estimate per distinct row of ``c``.

        The same ``num_samples`` latents (drawn from ``seed``) are used for every condition, so the
        centres are deterministic and differ only through ``c``.
        """
        if self.c_dim == 0:
            return self.mapping.w_avg.expand(c.shape[0], -1).clone()
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(num_samples, self.z_dim, generator=gen).to(c.device)
        rows, inverse = torch.unique(c.float(), dim=0, return_inverse=True)
        centres = []
        for row in rows:
            total = torch.zeros(self.w_dim, device=c.device)
            for start in range(0, num_samples, chunk):
                zc = z[start : start + chunk]
                total += self.mapping(zc, row.expand(zc.shape[0], -1))[:, 0].sum(dim=0)
            centres.append(total / num_samples)
        return torch.stack(centres)[inverse]

    @torch.no_grad()
    def sample(self, c: torch.Tensor | None, *, seeds: Sequence[int], truncation_psi: float = 1.0,
               truncation_cutoff: int | None = None, class_truncation: bool = True, w_avg_samples: int = 2048,
               w_avg: torch.Tensor | None = None, noise_mode: str = "const") -> torch.Tensor:
        """Images [B, C, R, R] in model scale for one latent per seed (``z`` drawn from that seed alone).

        With ``truncation_psi < 1`` the centre is ``w_avg`` ([B, w_dim]) when given, else the
        per-condition average (``class_truncation``), else the tracked global average.
        """
        device = self.mapping.w_avg.device
        z = torch.stack([torch.randn(self.z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        z = z.to(device)
        if c is None:
            c = torch.zeros(len(seeds), self.c_dim, device=device)
        c = c.to(device)
        if w_avg is None and truncation_psi != 1 and class_truncation and self.c_dim > 0:
            w_avg = self.condition_w_avg(c, num_samples=w_avg_samples)
        return self(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, w_avg=w_avg,
                    noise_mode=noise_mode)


# =============================================================================================
# Discriminator
# =============================================================================================
class DiscriminatorBlock(nn.Module):
    """Residual block: [fromrgb,] conv 3x3, conv 3x3 down 2, plus a 1x1 down-2 skip, summed x sqrt(1/2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.is_first = in_channels == 0
        if self.is_first:
            self.fromrgb = EqualConv2d(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.is_first:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv, fc, and the output (a logit, or a projection vector)."""

    def __init__(self, in_channels: int, cmap_dim: int, *, mbstd_group_size: int = 4, mbstd_channels: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_channels) if mbstd_channels > 0 else None
        self.conv = EqualConv2d(in_channels + mbstd_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = EqualLinear(in_channels * 16, in_channels, activation="lrelu")
        self.out = EqualLinear(in_channels, max(cmap_dim, 1))

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:  # [B, C, 4, 4] -> [B, 1]
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator ``D(x, c)`` -> logits [B, 1], projection-conditioned on ``c``."""

    def __init__(self, *, c_dim: int = 0, img_resolution: int, img_channels: int = 1, channel_base: int = 16384,
                 channel_max: int = 512, cmap_dim: int | None = None, mapping_layers: int = 8,
                 mbstd_group_size: int = 4, mbstd_channels: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 8 or 2**log2 != img_resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {img_resolution}")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        resolutions = [2**i for i in range(log2, 2, -1)]
        self.blocks = nn.ModuleDict()
        for res in resolutions:
            in_ch = 0 if res == img_resolution else block_channels(res, channel_base, channel_max)
            tmp_ch = block_channels(res, channel_base, channel_max)
            out_ch = block_channels(res // 2, channel_base, channel_max)
            self.blocks[f"b{res}"] = DiscriminatorBlock(in_ch, tmp_ch, out_ch, img_channels, conv_clamp)
        ch4 = block_channels(4, channel_base, channel_max)
        cmap_dim = ch4 if cmap_dim is None else cmap_dim
        self.mapping = (MappingNetwork(0, c_dim, cmap_dim, None, num_layers=mapping_layers, w_avg_beta=None)
                        if c_dim > 0 else None)
        self.epilogue = DiscriminatorEpilogue(ch4, cmap_dim if c_dim > 0 else 0, mbstd_group_size=mbstd_group_size,
                                              mbstd_channels=mbstd_channels, conv_clamp=conv_clamp)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        r = self.img_resolution
        assert img.shape[1:] == (self.img_channels, r, r), img.shape
        x = None
        for block in self.blocks.values():
            x = block(x, img)
        cmap = self.mapping(None, c) if self.mapping is not None else None
        assert x is not None
        return self.epilogue(x, cmap)
