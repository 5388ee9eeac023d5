"""Schema of the ``model:`` section for ``family: stylegan2`` (pydantic only, no torch).

```yaml
model:
  family: stylegan2
  generator: {z_dim: 512, w_dim: 512, mapping_layers: 8, channel_base: 16384, channel_max: 512}
  discriminator: {channel_base: 16384, channel_max: 512, mbstd_group_size: 4}
  loss: {r1_gamma: null, r1_interval: 16, pl_weight: 2.0, pl_interval: 4, style_mixing_prob: 0.9}
  augment: {kind: ada, ops: bgc, target: 0.6, speed_kimg: 500}
  sampling: {truncation_psi: 1.0, class_truncation: true}
stages:
  stylegan2: {kimg: 5000, batch: 32, lr: 0.0025, betas: [0.0, 0.99], grad_clip: null}
```

The networks' resolution and channel count come from the dataset (``dataset.json`` shape), the
condition vector from its categorical and continuous conditions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from imgsynth.config import ConfigBase
from imgsynth.errors import ConfigError

AUGMENT_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
               "noise", "cutout")
AUGMENT_PRESETS = ("bgc", "bg", "bgcnc", "g")


class StyleGAN2GeneratorConfig(ConfigBase):
    """Mapping and synthesis networks; channels per resolution ``min(channel_base / res, channel_max)``."""

    z_dim: int = Field(512, ge=1)
    w_dim: int = Field(512, ge=1)
    mapping_layers: int = Field(8, ge=1)
    mapping_lr_multiplier: float = Field(0.01, gt=0)
    w_avg_beta: float = Field(0.998, ge=0, lt=1)  # decay of the tracked average w (truncation centre)
    channel_base: int = Field(16384, ge=1)
    channel_max: int = Field(512, ge=1)


class StyleGAN2DiscriminatorConfig(ConfigBase):
    """Residual discriminator with minibatch std and projection conditioning."""

    channel_base: int = Field(16384, ge=1)
    channel_max: int = Field(512, ge=1)
    mapping_layers: int = Field(8, ge=1)  # condition embedding network of the projection
    mbstd_group_size: int = Field(4, ge=1)
    mbstd_channels: int = Field(1, ge=0)


class StyleGAN2LossConfig(ConfigBase):
    """Non-saturating logistic loss, lazy R1 and path-length regularisation, style mixing."""

    r1_gamma: float | None = Field(None, ge=0)  # None: 0.0002 * resolution^2 / batch (ADA's heuristic)
    r1_interval: int = Field(16, ge=1)  # lazy regularisation: every N steps, penalty x N
    pl_weight: float = Field(2.0, ge=0)  # 0: no path-length regularisation
    pl_interval: int = Field(4, ge=1)
    pl_batch_shrink: int = Field(2, ge=1)
    pl_decay: float = Field(0.01, gt=0, le=1)
    style_mixing_prob: float = Field(0.9, ge=0, le=1)
    d_lr: float | None = Field(None, gt=0)  # discriminator learning rate (None: the stage's lr)


class StyleGAN2AugmentConfig(ConfigBase):
    """Discriminator augmentation: adaptive (ADA), DiffAugment with a fixed policy, or none."""

    kind: Literal["ada", "diffaugment", "none"] = "ada"
    ops: str | list[str] = "bgc"  # a preset (bgc, bg, bgcnc, g) or a list of ops
    p: float = Field(0.0, ge=0, le=1)  # initial probability (kept fixed when target is null)
    target: float | None = Field(0.6, gt=-1, lt=1)  # r_t target; None: fixed p
    interval: int = Field(4, ge=1)  # steps between adjustments
    speed_kimg: float = Field(500.0, gt=0)  # p can go 0 -> 1 in this many thousand real images
    p_max: float = Field(1.0, gt=0, le=1)
    policy: str = "color,translation,cutout"  # DiffAugment ops

    @model_validator(mode="after")
    def _check(self) -> StyleGAN2AugmentConfig:
        if isinstance(self.ops, str) and self.ops not in AUGMENT_PRESETS:
            raise ConfigError(f"model.augment.ops='{self.ops}' is not a preset ({', '.join(AUGMENT_PRESETS)}) "
                              "nor a list of ops")
        unknown = [op for op in (self.ops if isinstance(self.ops, list) else []) if op not in AUGMENT_OPS]
        if unknown:
            raise ConfigError(f"model.augment.ops has unknown op(s) {unknown}; valid: {', '.join(AUGMENT_OPS)}")
        bad = [op for op in self.policy.split(",") if op and op not in ("color", "translation", "cutout")]
        if bad:
            raise ConfigError(f"model.augment.policy has unknown op(s) {bad}; valid: color, translation, cutout")
        return self


class StyleGAN2SamplingConfig(ConfigBase):
    """Defaults of ``imgsynth generate`` for this model."""

    truncation_psi: float = Field(1.0, ge=0, le=2)
    truncation_cutoff: int | None = Field(None, ge=0)  # truncate the first N layers' w (None: all)
    class_truncation: bool = True  # centre on the per-condition average w (else the global one)
    w_avg_samples: int = Field(2048, ge=1)
    noise_mode: Literal["const", "random", "none"] = "const"


class StyleGAN2Config(ConfigBase):
    """Conditional StyleGAN2 with adaptive discriminator augmentation: one stage, ``stylegan2``."""

    family: Literal["stylegan2"] = "stylegan2"
    spatial_dims: Literal[2] = 2
    generator: StyleGAN2GeneratorConfig = Field(default_factory=StyleGAN2GeneratorConfig)
    discriminator: StyleGAN2DiscriminatorConfig = Field(default_factory=StyleGAN2DiscriminatorConfig)
    loss: StyleGAN2LossConfig = Field(default_factory=StyleGAN2LossConfig)
    augment: StyleGAN2AugmentConfig = Field(default_factory=StyleGAN2AugmentConfig)
    sampling: StyleGAN2SamplingConfig = Field(default_factory=StyleGAN2SamplingConfig)
    conv_clamp: float | None = Field(None, gt=0)  # clamp conv outputs (stabilises fp16)

    def stage_names(self) -> list[str]:
        return ["stylegan2"]
