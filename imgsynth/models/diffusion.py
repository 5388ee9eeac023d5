"""Stage 2: the conditional latent UNet and the forward noise process it learns to reverse.

* :class:`ConditionalUNet` wraps MONAI's ``DiffusionModelUNet``: condition tokens are added to the
  timestep embedding (``add``, through the UNet's class-embedding slot) and/or attended to
  (``cross_attention``); masks are concatenated to the input. Its forward runs the UNet's blocks
  itself so that each block can be gradient-checkpointed (3D) — MONAI's UNet cannot.
* :class:`NoiseProcess` gives the training pair (noisy latent, target) for DDPM with epsilon or
  v prediction (diffusers' ``DDPMScheduler`` tables) or rectified flow (MONAI ``RFlowScheduler``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from diffusers import DDPMScheduler
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.schedulers import RFlowScheduler
from monai.networks.schedulers.rectified_flow import timestep_transform
from torch import nn
from torch.utils.checkpoint import checkpoint

from imgsynth.models.conditioning import (
    ConditionEmbedder,
    FieldSpec,
    mask_channels,
    masks_on_grid,
    split_fields,
)
from imgsynth.models.config import LDMConfig, NoiseConfig
from imgsynth.training.task import KeyedRandom

DIFFUSERS_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


class ConditionalUNet(nn.Module):
    """``(x_t [B, L, *latent], t [B], conditions, keep [B]) -> prediction [B, L, *latent]``."""

    def __init__(self, cfg: LDMConfig, fields: Sequence[FieldSpec]) -> None:
        super().__init__()
        u, c = cfg.unet, cfg.conditioning
        self.fields = list(fields)
        embedded, _ = split_fields(self.fields)
        self.mode = c.mode
        self.cross = bool(embedded) and c.mode in ("cross_attention", "both")
        self.add = bool(embedded) and c.mode in ("add", "both")
        self.checkpointing = u.gradient_checkpointing
        latent = cfg.autoencoder.latent_channels
        self.unet = DiffusionModelUNet(
            spatial_dims=cfg.spatial_dims,
            in_channels=latent + mask_channels(self.fields),
            out_channels=latent,
            num_res_blocks=u.num_res_blocks,
            channels=tuple(u.channels),
            attention_levels=tuple(u.attention_levels),
            norm_num_groups=u.norm_num_groups,
            resblock_updown=u.resblock_updown,
            num_head_channels=u.num_head_channels,
            transformer_num_layers=u.transformer_num_layers,
            with_conditioning=self.cross,
            cross_attention_dim=c.embed_dim if self.cross else None,
            use_flash_attention=True,  # torch SDPA
        )
        self.embedder = ConditionEmbedder(embedded, c.embed_dim) if embedded else None
        if self.add:
            # All field tokens, flattened, projected onto the timestep embedding (added to it).
            self.cond_proj = nn.Linear(len(embedded) * c.embed_dim, u.channels[0] * 4)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Mapping[str, torch.Tensor] | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        unet, cond = self.unet, cond or {}
        masks = masks_on_grid(cond, self.fields, x.shape[2:], keep)
        h = x if masks is None else torch.cat([x, masks.to(x.dtype)], dim=1)  # [B, L + M, *latent]

        # Timestep embedding (+ condition tokens, Ho et al. DDPM sinusoidal embedding).
        emb = unet.time_embed(get_timestep_embedding(t, unet.block_out_channels[0]).to(x.dtype))
        context = None
        if self.embedder is not None:
            tokens = self.embedder(cond, keep)  # [B, F, dim]
            if self.add:
                emb = emb + self.cond_proj(tokens.flatten(1)).to(emb.dtype)
            if self.cross:
                context = tokens

        # UNet body (MONAI DiffusionModelUNet.forward, blocks optionally checkpointed).
        h = unet.conv_in(h)
        skips = [h]
        for block in unet.down_blocks:
            h, res = self._run(block, h, emb, context)
            skips.extend(res)
        h = self._run(unet.middle_block, h, emb, context)
        for block in unet.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            h = self._run(block, h, emb, context, res)
        return unet.out(h)

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
             res: list[torch.Tensor] | None = None):  # noqa: ANN202
        kwargs = {"hidden_states": h, "temb": emb, "context": context}
        if res is not None:
            kwargs["res_hidden_states_list"] = res
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, use_reentrant=False, **kwargs)
        return block(**kwargs)


def build_unet(cfg: LDMConfig, fields: Sequence[FieldSpec]) -> ConditionalUNet:
    return ConditionalUNet(cfg, fields)


class NoiseProcess:
    """Forward process of training: ``(z0, noise, t) -> (x_t, target)``.

    DDPM (Ho et al., eq. 4): ``x_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) eps``; the target
    is ``eps`` or ``v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z0`` (Salimans & Ho, sec. 4).
    Rectified flow (Liu et al.; MONAI convention, ``s = t / T``): ``x_t = (1 - s) z0 + s eps`` and the
    target is the velocity ``z0 - eps``.
    """

    def __init__(self, cfg: NoiseConfig, spatial_dims: int) -> None:
        self.cfg = cfg
        self.spatial_dims = spatial_dims
        self.T = cfg.num_train_timesteps
        if cfg.kind == "ddpm":
            self.ddpm = DDPMScheduler(
                num_train_timesteps=self.T,
                beta_start=cfg.beta_start,
                beta_end=cfg.beta_end,
                beta_schedule=DIFFUSERS_SCHEDULES[cfg.schedule],
                prediction_type=cfg.prediction,
                clip_sample=False,
            )
        else:
            self.rflow = RFlowScheduler(
                num_train_timesteps=self.T,
                use_discrete_timesteps=False,
                sample_method=cfg.rflow_sample_method,
                use_timestep_transform=cfg.rflow_timestep_transform,
                spatial_dim=spatial_dims,
            )

    def sample_t(self, rng: KeyedRandom, latent_shape: Sequence[int]) -> torch.Tensor:
        """Training timesteps ``[B]``: uniform integers (DDPM) or uniform / logit-normal reals (flow)."""
        if self.cfg.kind == "ddpm":
            return rng.randint(self.T, "t")
        if self.cfg.rflow_sample_method == "uniform":
            s = rng.rand("t")
        else:
            s = torch.sigmoid(rng.randn((), "t"))  # logit-normal(0, 1), Esser et al. (SD3) eq. 19
        t = s * self.T
        if self.cfg.rflow_timestep_transform:
            numel = int(torch.tensor(latent_shape[1:]).prod())
            t = timestep_transform(t, input_img_size_numel=numel, num_train_timesteps=self.T, spatial_dim=self.spatial_dims)
        return t

    def noisy(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.kind == "ddpm":
            x_t = self.ddpm.add_noise(z0, noise, t)
            target = noise if self.cfg.prediction == "epsilon" else self.ddpm.get_velocity(z0, noise, t)
            return x_t, target
        return self.rflow.add_noise(z0, noise, t), z0 - noise
