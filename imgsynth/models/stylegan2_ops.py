"""Pure-PyTorch building blocks of StyleGAN2: FIR resampling, equalised-LR layers, modulated conv.

Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2). Every op
here is plain ``torch.nn.functional`` (no compiled extension), so it runs the same on CPU and GPU
and supports double backward (needed by R1 and path-length regularisation).

* **Equalised learning rate** (Karras et al. 2018, sec. 4.1): weights are stored as N(0, 1) (or
  N(0, 1/lr_mult^2)) and scaled at run time by ``lr_mult / sqrt(fan_in)``, so Adam's per-parameter
  step size is the same for every layer.
* **Modulation / demodulation** (StyleGAN2 eq. 1-3): ``w'_ijk = s_i w_ijk``,
  ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps)``.
* **FIR resampling** with the binomial filter [1, 3, 3, 1] (zero-insertion up, blur, subsample down).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit second moment along ``dim`` (pixel norm of z and of the embedded c)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(x: torch.Tensor, b: torch.Tensor | None, activation: str, gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """``act(x + b) * gain`` with the activation's own gain (sqrt 2 for leaky ReLU), then clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)
    elif activation == "linear":
        x = x * gain if gain != 1 else x
    else:
        raise ValueError(f"unknown activation {activation!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The separable binomial low-pass ``[1,3,3,1]^T [1,3,3,1] / 64`` as ``[4, 4]``."""
    f = torch.tensor(_FIR_TAPS, device=device, dtype=dtype)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def _blur(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    """Depthwise FIR filter of ``x`` [B, C, H, W] with zero padding (pad_before, pad_after) per axis."""
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = (f * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, stride=stride, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling: zero insertion then blur with gain 4. ``[B, C, H, W] -> [B, C, 2H, 2W]``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1]).reshape(b, c, 2 * h, 2 * w)
    return _blur(x, f, (2, 1), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling: blur then keep every other sample. ``[B, C, H, W] -> [B, C, H/2, W/2]``."""
    return _blur(x, f, (1, 1), stride=2)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate (weight gain ``lr_mult / sqrt(in)``)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: str = "linear") -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in] -> [B, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate, optional 2x FIR up/down sampling and output clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        if up not in (1, 2) or down not in (1, 2) or (up == 2 and down == 2):
            raise ValueError("EqualConv2d: up and down must be 1 or 2, not both 2")
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:  # [B, I, H, W] -> [B, O, H', W']
        w = self.weight.to(x.dtype) * self.weight_gain
        k = w.shape[-1]
        if self.up == 2:
            x = upsample2d(x, self.fir)
        if self.down == 2 and k == 1:
            x = F.conv2d(downsample2d(x, self.fir), w)
        elif self.down == 2:
            # Blur (padded so that the strided conv lands on H/2), then a strided valid conv.
            x = F.conv2d(_blur(x, self.fir, (self.padding + 1, self.padding + 1)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain=gain, clamp=clamp)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"in={i}, out={o}, k={k}, up={self.up}, down={self.down}, activation={self.activation}"


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, fir: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution (eq. 1 modulation, eq. 3 demodulation), same padding.

    ``x`` [B, I, H, W], ``weight`` [O, I, k, k], ``styles`` [B, I] -> [B, O, H*up, W*up]. ``fused``
    folds the per-sample weights into one grouped convolution; otherwise the input is scaled by
    the styles and the output by the demodulation coefficients around one shared convolution
    (the two are equal; the second is usually faster for large batches during training).
    """
    b, i, _, _ = x.shape
    o, i_w, k, _ = weight.shape
    assert i_w == i and styles.shape == (b, i), (x.shape, weight.shape, styles.shape)
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # [B, O]
    if up == 2:
        assert fir is not None
        x = upsample2d(x, fir)
    if not fused:
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=k // 2)
        return x * dcoefs[:, :, None, None] if dcoefs is not None else x
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    h, wd = x.shape[-2:]
    x = F.conv2d(x.reshape(1, b * i, h, wd), w.reshape(b * o, i, k, k), padding=k // 2, groups=b)
    return x.reshape(b, o, h, wd)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise + bias + leaky ReLU (one style input)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("fir", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool | None = None,
                noise: torch.Tensor | None = None, gain: float = 1.0) -> torch.Tensor:
        """``x`` [B, I, H, W], ``w`` [B, w_dim] -> [B, O, R, R]; ``noise`` [B, 1, R, R] replaces the
        freshly drawn noise of ``noise_mode="random"``."""
        styles = self.affine(w)  # [B, I]
        fused = (not self.training) if fused is None else fused
        x = modulated_conv2d(x, self.weight, styles, up=self.up, fir=self.fir, fused=fused)
        if noise_mode == "random":
            if noise is None:
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be random, const or none, not {noise_mode!r}")
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, "lrelu", gain=gain, clamp=clamp)


class ToImageLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation (the skip-architecture output)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool | None = None) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        fused = (not self.training) if fused is None else fused
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, sec. 3), as extra feature channel(s)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C + F, H, W]
        n, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n/G, F, c/F, H, W]: groups take every (n/G)-th sample
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n/G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [B, F, H, W]
        return torch.cat([x, y], dim=1)
