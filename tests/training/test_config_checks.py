"""Bad configs fail before anything trains, with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsynth.cli import main
from imgsynth.config import load_config
from imgsynth.contracts import Dataset
from imgsynth.errors import ConfigError
from imgsynth.training.run import train

from .conftest import tiny_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.unet.num_head_channels=24",), r"model\.unet\.channels\[1\]=32 is not divisible by model\.unet\.num_head_channels=24"),
        (("model.autoencoder.norm_num_groups=5",), r"model\.autoencoder\.channels\[0\]=8 is not divisible"),
        (("model.unet.attention_levels=[true]",), r"model\.unet\.attention_levels has 1 entries"),
        (("stages.foo.kimg=1",), r"unknown stage 'stages\.foo'"),
        (("model.losses.perceptual_weight=0.1",), r"model\.losses\.perceptual_weights"),
        (("model.noise.kind=rflow", "model.noise.sampler=ddim"), r"model\.noise\.sampler='ddim'"),
    ],
)
def test_config_errors_name_the_field(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.autoencoder.latent_size=[4,4]",), r"'model\.autoencoder\.latent_size'=\[4, 4\] but images \[16, 16\] downsampled by 2 give \[8, 8\]"),
        (("model.unet.channels=[16,16,16,16,16]", "model.unet.attention_levels=[false,false,false,false,false]"),
         r"latent size \[8, 8\] is not divisible by the UNet's downsampling 16"),
        (("model.autoencoder.channels=[8,8,8,8,8,8]", "model.autoencoder.attention_levels=[false,false,false,false,false,false]"),
         r"image size \[16, 16\] is not divisible by the autoencoder's downsampling 32"),
        (("data.conditions=[label,sex]",), r"'data\.conditions\[1\]'='sex' is not a condition of the dataset \(dataset\.json has: label, age\)"),
        (("model.spatial_dims=3", "model.autoencoder.latent_size=null"), r"'model\.spatial_dims'=3 but the dataset is 2D"),
        (("stages.autoencoder.batch=6", "stages.autoencoder.batch_gpu=4"), r"'stages\.autoencoder\.batch'=6 is not a multiple of 'stages\.autoencoder\.batch_gpu'=4"),
        (("model.discriminator.num_layers=5",), r"'model\.discriminator\.num_layers'=5"),
    ],
)
def test_dataset_mismatches_fail_before_training(tiny_dataset: Dataset, tmp_path: Path, overrides: tuple[str, ...],
                                                 message: str) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train(tiny_dataset.root, run, tiny_config(*overrides))
    assert not run.exists()  # nothing written


def test_cli_config_error_exit_2_one_line(tiny_dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(tiny_dataset.root), str(tmp_path / "run"), "--config", "ldm_2d_tiny",
                 "--set", "model.unet.num_head_channels=48"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model.unet.num_head_channels=48" in err
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_resolved_config_and_plan(tiny_dataset: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(tiny_dataset.root), str(tmp_path / "run"), "--config", "ldm_2d_tiny", "--dry-run",
                 "--set", "stages.diffusion.batch=64", "--set", "model.spatial_dims=2"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("kind: train") and "family: ldm" in out
    assert "# stage=diffusion, kimg=" in out and "batch=64" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["ldm_2d", "ldm_3d", "ldm_2d_tiny"])
def test_builtin_configs_validate(name: str) -> None:
    cfg = load_config(name)
    assert cfg.model.family == "ldm"  # type: ignore[attr-defined]


def test_mixed_precision_no_survives_yaml() -> None:
    assert tiny_config("loop.mixed_precision=no").loop.mixed_precision == "no"


def test_datasets_of_varying_size_are_refused(tmp_path: Path) -> None:
    from imgsynth.contracts import DatasetInfo, Intensity
    from imgsynth.training.ldm import check

    info = DatasetInfo(spatial_dims=2, shape=[1, -1, -1], intensity=Intensity(kind="none"))
    with pytest.raises(ConfigError, match=r"items vary in size \(shape \[1, -1, -1\]"):
        check(tiny_config(), info)
