"""Perceptual loss on user-supplied VGG-16 weights (never downloaded).

Distance of unit-normalised VGG-16 activations after relu1_2, relu2_2, relu3_3, relu4_3 and
relu5_3 (Zhang et al., LPIPS, eq. 1 with uniform layer weights). The network mirrors
torchvision's ``vgg16().features`` so its ImageNet weights load as they are: a state dict with
keys ``features.<i>.weight`` / ``.bias`` (or without the ``features.`` prefix), as
``.safetensors`` or a ``.pt``/``.pth`` tensor file (read with ``weights_only=True``).
Grayscale inputs are repeated to three channels; 3D volumes use evenly spaced slices along each
axis (2.5D).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imgsynth.errors import DependencyError

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # indices of relu1_2 ... relu5_3 in torchvision's vgg16().features
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(v)
    return nn.Sequential(*layers)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DependencyError(
            "perceptual weights not found (model.losses.perceptual_weights must point to VGG-16 weights)", path=path
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    return state


class PerceptualLoss(nn.Module):
    """``(x, y) -> [B]`` perceptual distance; frozen VGG-16 from ``weights``."""

    def __init__(self, weights: str | Path, *, spatial_dims: int = 2, slices_per_axis: int = 4) -> None:
        super().__init__()
        self.features = vgg16_features()
        try:
            self.features.load_state_dict(load_weights(weights))
        except RuntimeError as exc:
            raise DependencyError(f"not VGG-16 feature weights ({str(exc).splitlines()[0]})", path=weights) from None
        self.features.eval().requires_grad_(False)
        self.spatial_dims = spatial_dims
        self.slices_per_axis = slices_per_axis
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # always frozen

    def _distance_2d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def prep(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :1].repeat(1, 3, 1, 1) if t.shape[1] != 3 else t
            return ((t + 1.0) * 0.5 - self.mean) / self.std

        h, g = prep(x), prep(y)
        total = torch.zeros(x.shape[0], device=x.device)
        for i, layer in enumerate(self.features[: _TAPS[-1] + 1]):
            h, g = layer(h), layer(g)
            if i in _TAPS:
                hn = h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                gn = g / (g.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + (hn - gn).pow(2).sum(1).flatten(1).mean(1)
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2:
            return self._distance_2d(x, y)
        b = x.shape[0]
        parts = []
        for axis in (2, 3, 4):  # [B, C, D, H, W]: slices across each spatial axis
            size = x.shape[axis]
            idx = torch.linspace(0, size - 1, self.slices_per_axis + 2)[1:-1].round().long().tolist()
            for i in idx:
                parts.append(self._distance_2d(x.select(axis, i), y.select(axis, i)))
        return torch.stack(parts, 1).mean(1).view(b)
