"""Perceptual loss: user weights only, torchvision's VGG-16 layout, zero on identical inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from imgsynth.errors import DependencyError
from imgsynth.models.perceptual import PerceptualLoss, vgg16_features


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}  # torchvision key names
    assert "features.28.weight" in state and len(state) == 26  # 13 conv layers, as torchvision's vgg16
    path = tmp_path_factory.mktemp("w") / "vgg16.pt"
    torch.save(state, path)
    save_file(state, str(path.with_suffix(".safetensors")))
    return path


def test_distance_zero_on_identical_and_positive_otherwise(weights: Path) -> None:
    torch.set_num_threads(1)
    loss = PerceptualLoss(weights)
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(x, x).abs().max() < 1e-6
    d = loss(x, y)
    assert d.shape == (2,) and (d > 0).all()
    same = PerceptualLoss(weights.with_suffix(".safetensors"))
    torch.testing.assert_close(same(x, y), d)
    vol = PerceptualLoss(weights, spatial_dims=3, slices_per_axis=1)(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32))
    assert vol.shape == (1,) and vol.item() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DependencyError, match="perceptual weights not found"):
        PerceptualLoss(tmp_path / "nope.pt")
    bad = tmp_path / "bad.safetensors"
    save_file({"0.weight": torch.zeros(3)}, str(bad))
    with pytest.raises(DependencyError, match="not VGG-16 feature weights"):
        PerceptualLoss(bad)
