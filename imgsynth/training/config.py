"""Schema of ``kind: train`` configs (pydantic only, no torch).

```yaml
kind: train
seed: 0
data:   {conditions: null, val_split: val}        # which dataset conditions the model sees
model:  {family: ldm, spatial_dims: 2, ...}       # the family's own schema (imgsynth.models.config)
stages:                                           # per-stage loop settings, in the family's order
  autoencoder: {kimg: 200, batch: 32, lr: 1.0e-4}
  diffusion:   {kimg: 500, batch: 64, lr: 1.0e-4, lr_schedule: cosine}
loop:   {mixed_precision: bf16, checkpoint_kimg: 50, keep_checkpoints: 3}
```

Progress is counted in thousands of images (kimg), so budgets and intervals mean the same
whatever the batch size or number of processes. ``batch`` is the global batch (images per
optimizer step, all processes together); ``batch_gpu`` the per-process micro-batch; gradient
accumulation makes up the difference.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from imgsynth.config import ConfigBase, register_config
from imgsynth.errors import ConfigError
from imgsynth.models.config import LDMConfig
from imgsynth.models.stylegan2_config import StyleGAN2Config

# One schema per family, told apart by `family`; each provides `stage_names() -> list[str]` and
# `spatial_dims`.
ModelConfig = Annotated[LDMConfig | StyleGAN2Config, Field(discriminator="family")]


class StageConfig(ConfigBase):
    """Loop settings of one training stage."""

    kimg: float = Field(100.0, gt=0)  # budget in thousands of images; raise it to extend a finished run
    batch: int = Field(32, ge=1)  # images per optimizer step, all processes together
    batch_gpu: int | None = Field(None, ge=1)  # micro-batch per process (None: batch / processes)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    lr_warmup_kimg: float = Field(0.0, ge=0)  # linear warm-up from 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_min: float = Field(0.0, ge=0, le=1)  # final lr of the cosine schedule, as a fraction of lr
    grad_clip: float | None = Field(1.0, gt=0)  # max global grad norm per optimizer (None: off)
    ema_halflife_kimg: float = Field(10.0, ge=0)  # EMA half-life in thousands of images (0: no EMA)
    ema_rampup: float | None = Field(0.05, gt=0)  # half-life at most this fraction of images seen

    def accumulation(self, processes: int, *, where: str) -> tuple[int, int]:
        """(batch_gpu, accumulation steps) for ``processes``; errors name ``where``."""
        if self.batch % processes:
            raise ConfigError(f"'{where}.batch'={self.batch} is not divisible by the {processes} processes")
        batch_gpu = self.batch_gpu or self.batch // processes
        if self.batch % (batch_gpu * processes):
            raise ConfigError(
                f"'{where}.batch'={self.batch} is not a multiple of '{where}.batch_gpu'={batch_gpu} x {processes} processes"
            )
        return batch_gpu, self.batch // (batch_gpu * processes)


class LoopConfig(ConfigBase):
    """Settings shared by every stage's loop."""

    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"  # autocast; weights stay fp32
    cpu: bool = False  # train on CPU even when a GPU is present
    compile: bool = False  # torch.compile the trained networks
    checkpoint_kimg: float = Field(50.0, gt=0)
    keep_checkpoints: int = Field(3, ge=1)
    val_kimg: float | None = Field(50.0, gt=0)  # validation loss on the val split (None: never)
    val_items: int | None = Field(512, ge=1)  # first N val items (None: all)
    val_batch: int = Field(32, ge=1)
    sample_kimg: float | None = Field(50.0, gt=0)  # preview grid into samples/ (None: never)
    sample_count: int = Field(16, ge=1)
    log_kimg: float = Field(1.0, gt=0)  # metrics.jsonl interval
    num_workers: int = Field(2, ge=0)
    progress: bool = True

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        return "no" if value is False else value  # YAML reads a bare `no` (e.g. --set loop.mixed_precision=no) as false


class DataConfig(ConfigBase):
    """Which part of the dataset folder the model sees."""

    conditions: list[str] | None = None  # condition fields to train on (None: all in dataset.json; []: none)
    train_split: Literal["train", "val", "test"] = "train"
    val_split: Literal["train", "val", "test"] | None = "val"
    cache: Literal["memory", "disk", "none"] = "memory"
    max_items: int | None = Field(None, ge=1)  # first N training items (quick experiments)


class LoggingConfig(ConfigBase):
    """metrics.jsonl is always written; MLflow in addition when asked for and installed."""

    mlflow: bool = False
    experiment: str = "imgsynth"
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI (Azure ML sets it)


@register_config("train")
class TrainConfig(ConfigBase):
    """A training run: one model family, its stages in order, the shared loop."""

    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=LDMConfig)
    stages: dict[str, StageConfig] = Field(default_factory=dict)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _stages(self) -> TrainConfig:
        names = self.model.stage_names()
        unknown = [s for s in self.stages if s not in names]
        if unknown:
            raise ConfigError(
                f"unknown stage 'stages.{unknown[0]}' for family '{self.model.family}' (stages: {', '.join(names)})"
            )
        # Every stage present, in training order; set without re-validating (validate_assignment is on).
        self.__dict__["stages"] = {s: self.stages.get(s, StageConfig()) for s in names}
        return self

    def stage(self, name: str) -> StageConfig:
        return self.stages[name]
