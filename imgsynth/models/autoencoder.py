"""Stage 1 networks: KL autoencoder and patch discriminator (MONAI), and their losses.

The autoencoder maps ``[B, C, *spatial]`` images in model scale to latents
``[B, latent_channels, *spatial / 2**(levels-1)]``; ``C`` is the dataset's channel count (a
grayscale scan stays one channel end to end).
"""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from torch import nn

from imgsynth.models.config import LDMConfig


class KLAutoencoder(AutoencoderKL):
    """MONAI ``AutoencoderKL`` whose forward takes the reparameterisation noise.

    ``forward(x, eps)`` returns ``(reconstruction, z_mu, z_sigma)`` with ``z = z_mu + eps * z_sigma``
    (Kingma & Welling, eq. 10); ``eps=None`` decodes the mean. Passing ``eps`` in keeps the
    randomness keyed per item (same on any number of processes) and keeps the whole pass inside
    ``forward``, where DDP can see it.
    """

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        z_mu, z_sigma = self.encode(x)  # [B, L, *latent]
        z = z_mu if eps is None else z_mu + eps.to(z_mu.dtype) * z_sigma
        return self.decode(z), z_mu, z_sigma

    def latent(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Latent of ``x``: the mean, or a draw ``z_mu + eps * z_sigma``."""
        z_mu, z_sigma = self.encode(x)
        return z_mu if eps is None else z_mu + eps.to(z_mu.dtype) * z_sigma


def build_autoencoder(cfg: LDMConfig, channels: int) -> KLAutoencoder:
    ae = cfg.autoencoder
    return KLAutoencoder(
        spatial_dims=cfg.spatial_dims,
        in_channels=channels,
        out_channels=channels,
        channels=tuple(ae.channels),
        latent_channels=ae.latent_channels,
        num_res_blocks=ae.num_res_blocks,
        attention_levels=tuple(ae.attention_levels),
        norm_num_groups=ae.norm_num_groups,
        with_encoder_nonlocal_attn=ae.with_nonlocal_attn,
        with_decoder_nonlocal_attn=ae.with_nonlocal_attn,
        use_checkpoint=ae.gradient_checkpointing,
        use_flash_attention=True,  # torch SDPA
    )


def build_discriminator(cfg: LDMConfig, channels: int) -> PatchDiscriminator:
    d = cfg.discriminator
    norm: str | tuple = {"group": ("GROUP", {"num_groups": d.norm_num_groups}), "instance": "INSTANCE", "batch": "BATCH"}[d.norm]
    return PatchDiscriminator(
        spatial_dims=cfg.spatial_dims,
        channels=d.channels,
        in_channels=channels,
        out_channels=1,
        num_layers_d=d.num_layers,
        norm=norm,
    )


def latent_shape(cfg: LDMConfig, image_shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``[C, *spatial]`` image shape -> ``[latent_channels, *spatial / downsample]``."""
    f = cfg.autoencoder.downsample
    return (cfg.autoencoder.latent_channels, *(s // f for s in image_shape[1:]))


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per item, summed over latent elements: ``[B]``."""
    mu, sigma = z_mu.float(), z_sigma.float()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2).clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(1)


class AdversarialLoss(nn.Module):
    """Least-squares patch GAN loss (Mao et al.), MONAI's ``PatchAdversarialLoss`` on the last output."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = PatchAdversarialLoss(criterion="least_squares")

    def generator(self, logits_fake: torch.Tensor) -> torch.Tensor:
        return self.loss(logits_fake.float(), target_is_real=True, for_discriminator=False)

    def discriminator(self, logits_fake: torch.Tensor, logits_real: torch.Tensor) -> torch.Tensor:
        fake = self.loss(logits_fake.float(), target_is_real=False, for_discriminator=True)
        real = self.loss(logits_real.float(), target_is_real=True, for_discriminator=True)
        return 0.5 * (fake + real)
