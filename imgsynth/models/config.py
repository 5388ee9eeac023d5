"""Model schemas of the ``model:`` section of a ``kind: train`` config (pydantic only, no torch).

One class per family, told apart by ``family``; :class:`LDMConfig` is the latent diffusion
model (KL autoencoder + patch discriminator, then a conditional diffusion UNet in latent space).
Checks that need only the config live here; checks against a dataset (shapes, condition
fields) live in ``imgsynth.models.checks``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from imgsynth.config import ConfigBase
from imgsynth.errors import ConfigError


class AutoencoderConfig(ConfigBase):
    """MONAI ``AutoencoderKL``: each level after the first halves the spatial size."""

    channels: list[int] = Field(default_factory=lambda: [64, 128, 128], min_length=1)
    latent_channels: int = Field(4, ge=1)
    num_res_blocks: int = Field(2, ge=1)
    attention_levels: list[bool] = Field(default_factory=lambda: [False, False, False])
    norm_num_groups: int = Field(32, ge=1)
    with_nonlocal_attn: bool = True
    latent_size: list[int] | None = None  # expected latent spatial size; checked against the data
    gradient_checkpointing: bool = False

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


class DiscriminatorConfig(ConfigBase):
    """MONAI ``PatchDiscriminator``. ``batch`` norm becomes SyncBatchNorm under DDP (CUDA only);
    ``group`` and ``instance`` behave the same on any number of processes."""

    channels: int = Field(64, ge=1)
    num_layers: int = Field(3, ge=1)
    norm: Literal["group", "instance", "batch"] = "group"
    norm_num_groups: int = Field(8, ge=1)


class UNetConfig(ConfigBase):
    """MONAI ``DiffusionModelUNet`` in latent space (SDPA attention)."""

    channels: list[int] = Field(default_factory=lambda: [128, 256, 256], min_length=1)
    attention_levels: list[bool] = Field(default_factory=lambda: [False, True, True])
    num_res_blocks: int = Field(2, ge=1)
    num_head_channels: int = Field(32, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    transformer_num_layers: int = Field(1, ge=1)
    resblock_updown: bool = False
    gradient_checkpointing: bool = False

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


class NoiseConfig(ConfigBase):
    """The forward process: DDPM (epsilon or v prediction) or rectified flow (velocity)."""

    kind: Literal["ddpm", "rflow"] = "ddpm"
    prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    num_train_timesteps: int = Field(1000, ge=2)
    schedule: Literal["linear", "scaled_linear", "cosine"] = "scaled_linear"
    beta_start: float = Field(0.0015, gt=0)
    beta_end: float = Field(0.0195, gt=0, lt=1)
    rflow_sample_method: Literal["uniform", "logit-normal"] = "logit-normal"
    rflow_timestep_transform: bool = False
    loss: Literal["l2", "l1"] = "l2"
    sampler: Literal["ddpm", "ddim", "dpm++", "euler"] | None = None  # default sampler for generate
    steps: int | None = Field(None, ge=1)  # default number of sampling steps

    @model_validator(mode="after")
    def _check(self) -> NoiseConfig:
        if self.kind == "rflow" and self.sampler not in (None, "euler"):
            _fail(f"model.noise.sampler='{self.sampler}': rectified flow samples with 'euler'")
        if self.kind == "ddpm" and self.sampler == "euler":
            _fail("model.noise.sampler='euler' is for rectified flow (kind: rflow); use ddpm, ddim or dpm++")
        if self.beta_start >= self.beta_end:
            _fail(f"model.noise.beta_start={self.beta_start} must be below model.noise.beta_end={self.beta_end}")
        return self

    @property
    def default_sampler(self) -> str:
        return self.sampler or ("euler" if self.kind == "rflow" else "dpm++")

    @property
    def default_steps(self) -> int:
        return self.steps or (30 if self.kind == "rflow" else 20)


class ConditioningConfig(ConfigBase):
    """How conditions enter the UNet.

    Categorical and continuous fields are embedded (one embedding table or Fourier-feature MLP
    per field, plus a learned "no condition" vector for classifier-free guidance) and either
    added to the timestep embedding (``add``), given as cross-attention tokens
    (``cross_attention``), or both. Masks are resized to the latent grid and concatenated to the
    UNet input (``mask_mode: concat``).
    """

    mode: Literal["add", "cross_attention", "both"] = "add"
    embed_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, le=1)  # probability of dropping all conditions of an item
    mask_mode: Literal["concat"] = "concat"
    guidance: float = Field(3.0, ge=0)  # default guidance scale for generate


class AutoencoderLossConfig(ConfigBase):
    """Stage-1 objective: reconstruction + KL + patch-adversarial (+ perceptual with user weights)."""

    recon: Literal["l1", "l2"] = "l1"
    kl_weight: float = Field(1e-6, ge=0)
    adv_weight: float = Field(0.01, ge=0)
    adv_warmup_kimg: float = Field(10.0, ge=0)  # no adversarial term (and no D updates) before this
    perceptual_weight: float = Field(0.0, ge=0)
    perceptual_weights: str | None = None  # torchvision ResNet-50 state dict (.safetensors/.pt), never downloaded

    @model_validator(mode="after")
    def _check(self) -> AutoencoderLossConfig:
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            _fail(
                "model.losses.perceptual_weight > 0 needs model.losses.perceptual_weights "
                "(path to torchvision ResNet-50 weights; nothing is downloaded)"
            )
        return self


class LDMConfig(ConfigBase):
    """Latent diffusion: stage ``autoencoder``, then stage ``diffusion``."""

    family: Literal["ldm"] = "ldm"
    spatial_dims: Literal[2, 3] = 2
    autoencoder: AutoencoderConfig = Field(default_factory=AutoencoderConfig)
    discriminator: DiscriminatorConfig = Field(default_factory=DiscriminatorConfig)
    unet: UNetConfig = Field(default_factory=UNetConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    conditioning: ConditioningConfig = Field(default_factory=ConditioningConfig)
    losses: AutoencoderLossConfig = Field(default_factory=AutoencoderLossConfig)
    latent_scale_items: int = Field(256, ge=1)  # training items encoded to estimate the latent std

    def stage_names(self) -> list[str]:
        return ["autoencoder", "diffusion"]

    @model_validator(mode="after")
    def _check(self) -> LDMConfig:
        # Raised as ConfigError (not ValueError) so the message names the full field path alone.
        ae, unet, disc = self.autoencoder, self.unet, self.discriminator
        _same_length("autoencoder", ae.channels, ae.attention_levels)
        _same_length("unet", unet.channels, unet.attention_levels)
        for i, ch in enumerate(ae.channels):
            if ch % ae.norm_num_groups:
                _fail(f"model.autoencoder.channels[{i}]={ch} is not divisible by model.autoencoder.norm_num_groups={ae.norm_num_groups}")
        for i, ch in enumerate(unet.channels):
            if ch % unet.norm_num_groups:
                _fail(f"model.unet.channels[{i}]={ch} is not divisible by model.unet.norm_num_groups={unet.norm_num_groups}")
            if unet.attention_levels[i] and ch % unet.num_head_channels:
                _fail(
                    f"model.unet.channels[{i}]={ch} is not divisible by model.unet.num_head_channels="
                    f"{unet.num_head_channels} (attention heads must split the channels evenly)"
                )
        if disc.norm == "group" and disc.channels % disc.norm_num_groups:
            _fail(
                f"model.discriminator.channels={disc.channels} is not divisible by "
                f"model.discriminator.norm_num_groups={disc.norm_num_groups}"
            )
        if ae.latent_size is not None and len(ae.latent_size) != self.spatial_dims:
            _fail(f"model.autoencoder.latent_size needs {self.spatial_dims} values, got {ae.latent_size}")
        return self


def _fail(message: str) -> None:
    raise ConfigError(message)


def _same_length(section: str, channels: list[int], attention: list[bool]) -> None:
    if len(attention) != len(channels):
        _fail(
            f"model.{section}.attention_levels has {len(attention)} entries but model.{section}.channels has "
            f"{len(channels)}; give one per level"
        )
