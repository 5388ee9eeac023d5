"""Schema of ``kind: evaluate`` configs (pydantic only: imported by every command, no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from imgsynth.config import ConfigBase, register_config

# CT tissue ranges in HU (lower bound inclusive, upper exclusive), as used by radiology windows.
DEFAULT_TISSUE_RANGES: dict[str, tuple[float, float]] = {
    "air": (-1100.0, -900.0),
    "lung": (-900.0, -500.0),
    "fat": (-150.0, -30.0),
    "water_soft_tissue": (-30.0, 100.0),
    "contrast_or_calcification": (100.0, 400.0),
    "bone": (400.0, 3000.0),
}


class DataSection(ConfigBase):
    """Which items are read and how many (a seeded random subset when a cap is smaller)."""

    max_synthetic: int | None = Field(default=None, ge=2)
    max_real_train: int | None = Field(default=None, ge=2)
    max_real_test: int | None = Field(default=None, ge=2)
    held_out_splits: list[Literal["test", "val"]] = Field(default_factory=lambda: ["test", "val"])
    batch_size: int = Field(default=64, ge=1)


class InceptionSection(ConfigBase):
    """InceptionV3 (FID) from the torch-fidelity weights file ``weights-inception-2015-12-05-6726825d.pth``."""

    weights: str | None = None
    batch_size: int = Field(default=32, ge=1)


class MedicalNetSection(ConfigBase):
    """A 3D ResNet (MedicalNet layout, e.g. ``resnet_10_23dataset.pth``) supplied by the user."""

    weights: str | None = None
    depth: Literal[10, 18, 34, 50] = 10
    batch_size: int = Field(default=4, ge=1)


class DomainSection(ConfigBase):
    """Encoder trained by the suite on the real train split (FD_domain / KD_domain)."""

    enabled: bool = True
    weights: str | None = None
    cache_dir: str | None = None
    method: Literal["simclr", "classifier"] = "simclr"
    condition: str | None = None
    width: int = Field(default=32, ge=4)
    levels: int = Field(default=4, ge=1, le=6)
    steps: int = Field(default=800, ge=1)
    batch_size: int = Field(default=128, ge=4)
    lr: float = Field(default=2e-3, gt=0)
    temperature: float = Field(default=0.2, gt=0)
    time_budget_s: float = Field(default=600.0, gt=0)


class SlicesSection(ConfigBase):
    """2.5D: which slices of each volume a 2D extractor sees, per plane."""

    center_ratio: float = Field(default=1.0, gt=0, le=1)
    every_k: int = Field(default=1, ge=1)


class FeaturesSection(ConfigBase):
    extractors: list[str] = Field(default_factory=lambda: ["auto"])
    primary: str | None = None
    inception: InceptionSection = Field(default_factory=InceptionSection)
    medicalnet: MedicalNetSection = Field(default_factory=MedicalNetSection)
    domain: DomainSection = Field(default_factory=DomainSection)
    slices: SlicesSection = Field(default_factory=SlicesSection)


class DistanceSection(ConfigBase):
    """Frechet distance and kernel (MMD) distance settings."""

    kid_subsets: int = Field(default=100, ge=1)
    kid_subset_size: int = Field(default=1000, ge=2)
    kid_degree: int = Field(default=3, ge=1)
    min_n: int = Field(default=2000, ge=2)
    bootstrap: int = Field(default=20, ge=0)
    ci_level: float = Field(default=0.95, gt=0, lt=1)


class PrecisionRecallSection(ConfigBase):
    enabled: bool = True
    k: int = Field(default=3, ge=1)
    max_n: int = Field(default=10000, ge=4)


class SimilaritySection(ConfigBase):
    """SSIM / MS-SSIM / PSNR settings; ``data_range`` is needed only for physical-unit datasets."""

    data_range: float | None = Field(default=None, gt=0)
    kernel_size: int = Field(default=11, ge=3)
    sigma: float = Field(default=1.5, gt=0)
    k1: float = 0.01
    k2: float = 0.03
    max_scales: int = Field(default=5, ge=1, le=5)

    @model_validator(mode="after")
    def _odd(self) -> SimilaritySection:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


class DiversitySection(ConfigBase):
    enabled: bool = True
    pairs: int = Field(default=500, ge=2)


class MemorizationSection(ConfigBase):
    """Nearest-training-neighbour search; flags copies against the held-out real distribution."""

    enabled: bool = True
    percentile: float = Field(default=1.0, gt=0, lt=50)
    ssim_threshold: float = Field(default=0.95, gt=0, le=1)
    flips: list[Literal["none", "lr", "ud"]] = Field(default_factory=lambda: ["none", "lr"])
    max_shift: int = Field(default=2, ge=0, le=8)
    candidates: int = Field(default=8, ge=1)
    downsample: int = Field(default=2, ge=1)
    feature_space: bool = True
    max_train: int | None = Field(default=None, ge=2)


class ValidatorsSection(ConfigBase):
    """Physical plausibility in original units (HU for CT)."""

    enabled: bool = True
    tissue_ranges: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_TISSUE_RANGES))
    background_threshold: float | None = None
    histogram_bins: int = Field(default=64, ge=4)
    max_values: int = Field(default=2_000_000, ge=1000)


class DownstreamSection(ConfigBase):
    """Train-on-synthetic / train-on-real classifiers tested on the real held-out split."""

    enabled: bool = True
    condition: str | None = None
    network: Literal["densenet_small", "densenet121", "resnet_small", "resnet10", "resnet18"] = "densenet_small"
    settings: list[Literal["tstr", "trtr", "mixed"]] = Field(default_factory=lambda: ["tstr", "trtr", "mixed"])
    headline: Literal["auroc", "balanced_accuracy", "accuracy"] = "auroc"
    seeds: int = Field(default=3, ge=1)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    augment: bool = True
    time_budget_s: float = Field(default=600.0, gt=0)
    bootstrap: int = Field(default=1000, ge=0)
    max_train: int | None = Field(default=None, ge=2)


class ReconstructionSection(ConfigBase):
    """With ``--run``: the autoencoder's reconstruction of the real held-out split."""

    max_items: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    ema: bool = True


class ReportSection(ConfigBase):
    grid_items: int = Field(default=16, ge=1, le=256)
    closest_pairs: int = Field(default=8, ge=0, le=64)
    bootstrap: int = Field(default=200, ge=0)


@register_config("evaluate")
class EvaluateConfig(ConfigBase):
    """Everything ``imgsynth evaluate`` does; each section can be switched off or sized."""

    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    data: DataSection = Field(default_factory=DataSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    distance: DistanceSection = Field(default_factory=DistanceSection)
    precision_recall: PrecisionRecallSection = Field(default_factory=PrecisionRecallSection)
    similarity: SimilaritySection = Field(default_factory=SimilaritySection)
    diversity: DiversitySection = Field(default_factory=DiversitySection)
    memorization: MemorizationSection = Field(default_factory=MemorizationSection)
    validators: ValidatorsSection = Field(default_factory=ValidatorsSection)
    downstream: DownstreamSection = Field(default_factory=DownstreamSection)
    reconstruction: ReconstructionSection = Field(default_factory=ReconstructionSection)
    report: ReportSection = Field(default_factory=ReportSection)
