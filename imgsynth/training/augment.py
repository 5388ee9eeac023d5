"""Discriminator augmentation for GAN training on small datasets, pure PyTorch.

* :class:`AugmentPipe`: adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training
  Generative Adversarial Networks with Limited Data"). Every augmentation is applied to each
  image independently with probability ``p``; geometric ones are composed into one affine map
  and resampled once (``grid_sample``, reflection padding), intensity ones act on all channels
  alike (so they suit grayscale and multi-channel scans). All ops are differentiable, including
  the double backward that R1 needs through the augmented reals.
* :class:`AdaController`: the overfitting heuristic ``r_t = E[sign(D(x_real))]`` (ADA eq. 1); every
  ``interval`` steps ``p`` moves by ``sign(r_t - target) * N / (speed_kimg * 1000)`` where ``N`` is
  the number of real images seen since the last update (so ``p`` can go 0 -> 1 in ``speed_kimg``).
* :class:`DiffAugment`: differentiable augmentation (Zhao et al. 2020) with a fixed policy, the
  non-adaptive alternative.

Random operations are recorded: :meth:`AugmentPipe.sample` draws an :class:`AugmentParams` and
:meth:`AugmentPipe.apply` is a deterministic function of the image and those parameters, so an
augmentation can be replayed and inspected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
INTENSITY = ("brightness", "contrast")
CORRUPTION = ("noise", "cutout")
# Presets in the spirit of ADA's 'bgc' pipeline; 'bg' suits images whose intensities carry meaning.
PRESETS: dict[str, tuple[str, ...]] = {
    "bgc": GEOMETRIC + INTENSITY,
    "bg": GEOMETRIC,
    "bgcnc": GEOMETRIC + INTENSITY + CORRUPTION,
    "g": ("xint", "scale", "rotate", "aniso", "xfrac"),
}


@dataclass
class AugmentParams:
    """What one call of :class:`AugmentPipe` did to each image of a batch.

    ``theta`` [B, 2, 3]: output -> input map in normalised coordinates (``F.affine_grid``);
    ``brightness`` [B] additive offset; ``contrast`` [B] gain about the image mean; ``noise`` the
    added noise [B, C, H, W] or None; ``cutout`` [B, 1, H, W] keep-mask or None.
    """

    theta: torch.Tensor
    geometric: bool
    brightness: torch.Tensor
    contrast: torch.Tensor
    noise: torch.Tensor | None = None
    cutout: torch.Tensor | None = None


def _matrix(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """Batched 3x3 matrix from rows of scalars / [B] tensors."""
    b = like.shape[0]
    cols = [torch.as_tensor(v, dtype=like.dtype, device=like.device).expand(b) for row in rows for v in row]
    return torch.stack(cols, dim=1).reshape(b, 3, 3)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta)


class AugmentPipe(nn.Module):
    """ADA pipeline: each enabled augmentation fires per image with probability ``p`` (a buffer).

    Strengths follow ADA's defaults: integer translation up to 1/8 of the size, isotropic scale
    ``2^N(0, 0.2)``, rotation uniform in +-180 deg (applied twice, each with ``1 - sqrt(1 - p)``),
    anisotropic scale ``2^N(0, 0.2)``, fractional translation ``N(0, 0.125)`` of the size,
    brightness ``N(0, 0.2)``, contrast ``2^N(0, 0.5)``; corruptions: additive Gaussian noise with
    ``sigma ~ |N(0, 0.1)|`` and a cutout square of half the size.
    """

    def __init__(self, ops: tuple[str, ...] | list[str] = PRESETS["bgc"], *, xint_max: float = 0.125,
                 scale_std: float = 0.2, rotate_max: float = 1.0, aniso_std: float = 0.2,
                 xfrac_std: float = 0.125, brightness_std: float = 0.2, contrast_std: float = 0.5,
                 noise_std: float = 0.1, cutout_size: float = 0.5, p: float = 0.0) -> None:
        super().__init__()
        known = set(GEOMETRIC + INTENSITY + CORRUPTION)
        unknown = [op for op in ops if op not in known]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; valid: {', '.join(sorted(known))}")
        self.ops = tuple(ops)
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std
        self.noise_std, self.cutout_size = noise_std, cutout_size
        self.register_buffer("p", torch.tensor(float(p)))

    def num_draws(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        """Uniform and normal random numbers per image that :meth:`params_from_draws` consumes."""
        b, c, h, w = shape
        return 20, 7 + (c * h * w if "noise" in self.ops else 0)

    @torch.no_grad()
    def sample(self, shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the augmentation of a batch of ``shape`` [B, C, H, W] at the current ``p``."""
        nu, nn_ = self.num_draws(shape)
        u = torch.rand(shape[0], nu, generator=generator).to(device)
        n = torch.randn(shape[0], nn_, generator=generator).to(device)
        return self.params_from_draws(shape, u, n)

    @torch.no_grad()
    def params_from_draws(self, shape: torch.Size | tuple[int, ...], uniforms: torch.Tensor,
                          normals: torch.Tensor) -> AugmentParams:
        """The augmentation of a batch of ``shape`` at the current ``p`` from per-image random numbers.

        ``uniforms`` [B, nu] in [0, 1) and ``normals`` [B, nn] (see :meth:`num_draws`); row b decides
        image b alone, so an image's augmentation does not depend on the batch it is in.
        """
        b, c, h, w = shape
        device = uniforms.device
        p = self.p.to(device).clamp(0, 1)
        u = iter(uniforms.float().unbind(1))
        n = iter(normals.float()[:, :7].unbind(1))

        def fire(op: str, prob: torch.Tensor = p) -> torch.Tensor:
            """[B] 1.0 where ``op`` is applied to that image (always consumes one uniform)."""
            draw = next(u)
            return (draw < prob).float() if op in self.ops else torch.zeros_like(draw)

        ones = torch.ones(b, device=device)
        # Geometric: G_inv maps output pixel coordinates (centred) to input ones.
        eye = torch.eye(3, device=device).expand(b, 3, 3)
        g_inv = eye
        m = fire("xflip")
        g_inv = g_inv @ _scale(1 - 2 * torch.floor(next(u) * 2) * m, ones)
        m = fire("rotate90")
        g_inv = g_inv @ _rotate(-math.pi / 2 * torch.floor(next(u) * 4) * m)
        m = fire("xint")
        tx, ty = ((next(u) * 2 - 1) * self.xint_max * m, (next(u) * 2 - 1) * self.xint_max * m)
        g_inv = g_inv @ _translate(-torch.round(tx * w), -torch.round(ty * h))
        m = fire("scale")
        s = torch.exp2(next(n) * self.scale_std * m)
        g_inv = g_inv @ _scale(1 / s, 1 / s)
        p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))  # rotation applied twice: P(any) = p
        m = fire("rotate", p_rot)
        g_inv = g_inv @ _rotate(-(next(u) * 2 - 1) * math.pi * self.rotate_max * m)
        m = fire("aniso")
        s = torch.exp2(next(n) * self.aniso_std * m)
        g_inv = g_inv @ _scale(1 / s, s)
        m = fire("rotate", p_rot)
        g_inv = g_inv @ _rotate(-(next(u) * 2 - 1) * math.pi * self.rotate_max * m)
        m = fire("xfrac")
        tx, ty = next(n) * self.xfrac_std * m, next(n) * self.xfrac_std * m
        g_inv = g_inv @ _translate(-tx * w, -ty * h)
        geometric = bool((g_inv - eye).abs().amax() > 0)
        # Pixel units -> normalised [-1, 1] coordinates (align_corners=False): N G_inv N^-1.
        norm = _scale(torch.full((b,), 2.0 / w, device=device), torch.full((b,), 2.0 / h, device=device))
        theta = (norm @ g_inv @ torch.linalg.inv(norm))[:, :2, :]

        # Intensity: the same offset and gain on every channel of an image.
        brightness = next(n) * self.brightness_std * fire("brightness")
        contrast = torch.exp2(next(n) * self.contrast_std * fire("contrast"))

        # Corruptions.
        sigma = next(n).abs() * self.noise_std * fire("noise")
        noise = None
        if "noise" in self.ops and bool(sigma.any()):
            noise = normals[:, 7:].float().reshape(b, c, h, w) * sigma[:, None, None, None]
        m, cx, cy = fire("cutout"), next(u), next(u)
        cutout = None
        if "cutout" in self.ops and bool(m.any()):
            ys = (torch.arange(h, device=device) + 0.5) / h
            xs = (torch.arange(w, device=device) + 0.5) / w
            inside_x = (xs[None, :] - cx[:, None]).abs() < self.cutout_size / 2  # [B, W]
            inside_y = (ys[None, :] - cy[:, None]).abs() < self.cutout_size / 2  # [B, H]
            hole = inside_y[:, :, None] & inside_x[:, None, :] & (m[:, None, None] > 0)
            cutout = (~hole).float()[:, None]
        return AugmentParams(theta=theta, geometric=geometric, brightness=brightness, contrast=contrast,
                             noise=noise, cutout=cutout)

    def apply(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply recorded ``params`` to ``x`` [B, C, H, W] (deterministic, differentiable)."""
        if params.geometric:
            grid = F.affine_grid(params.theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if bool((params.brightness != 0).any()):
            x = x + params.brightness.to(x.dtype)[:, None, None, None]
        if bool((params.contrast != 1).any()):
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * params.contrast.to(x.dtype)[:, None, None, None] + mean
        if params.noise is not None:
            x = x + params.noise.to(x.dtype)
        if params.cutout is not None:
            x = x * params.cutout.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor, uniforms: torch.Tensor | None = None,
                normals: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``x`` [B, C, H, W]; with ``uniforms``/``normals`` given, from those numbers."""
        if float(self.p) <= 0:
            return x
        if uniforms is None or normals is None:
            return self.apply(x, self.sample(x.shape, x.device))
        return self.apply(x, self.params_from_draws(x.shape, uniforms, normals))

    def extra_repr(self) -> str:
        return f"ops={','.join(self.ops)}, p={float(self.p):.4f}"


class AdaController(nn.Module):
    """Adjusts ``pipe.p`` from the sign of the discriminator's outputs on reals (ADA sec. 2.3).

    Statistics and ``r_t`` are buffers, so they are saved and restored with the training state.
    Across processes the sums are all-reduced, so every rank moves ``p`` identically.
    """

    def __init__(self, pipe: AugmentPipe, *, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0,
                 p_max: float = 1.0) -> None:
        super().__init__()
        self.pipe, self.target, self.interval, self.speed_kimg, self.p_max = pipe, target, interval, speed_kimg, p_max
        self.register_buffer("stats", torch.zeros(2, dtype=torch.float64))  # [sum sign(D(real)), count]
        self.register_buffer("rt", torch.tensor(float("nan"), dtype=torch.float64))

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record ``sign(D(x_real))`` of one batch of (augmented) reals."""
        signs = real_logits.detach().float().sign()
        self.stats += torch.stack([signs.sum().double().to(self.stats.device),
                                   torch.tensor(float(signs.numel()), dtype=torch.float64, device=self.stats.device)])

    @torch.no_grad()
    def update(self) -> float | None:
        """Move ``p`` from the statistics since the last update; returns ``r_t`` (None when nothing seen)."""
        stats = self.stats.clone()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        self.stats.zero_()
        total, count = float(stats[0]), float(stats[1])
        if count == 0:
            return None
        rt = total / count
        adjust = math.copysign(1.0, rt - self.target) * count / (self.speed_kimg * 1000.0) if rt != self.target else 0.0
        self.pipe.p.copy_((self.pipe.p + adjust).clamp(0.0, self.p_max))
        self.rt.fill_(rt)
        return rt


class DiffAugment(nn.Module):
    """DiffAugment (Zhao et al. 2020): the same random ops on reals and fakes, always on.

    Policy ops: ``color`` (brightness, saturation, contrast as in the paper; saturation is a no-op
    on one channel), ``translation`` (up to 1/8 of the size, zero fill), ``cutout`` (half size).
    """

    POLICY_OPS = ("color", "translation", "cutout")

    def __init__(self, policy: str = "color,translation,cutout") -> None:
        super().__init__()
        self.policy = tuple(op for op in policy.split(",") if op)
        unknown = [op for op in self.policy if op not in self.POLICY_OPS]
        if unknown:
            raise ValueError(f"unknown DiffAugment op(s) {unknown}; valid: {', '.join(self.POLICY_OPS)}")
        self.register_buffer("p", torch.tensor(1.0))

    def num_draws(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
        return 7, 0

    def forward(self, x: torch.Tensor, uniforms: torch.Tensor | None = None,
                normals: torch.Tensor | None = None) -> torch.Tensor:
        """Augment ``x`` [B, C, H, W]; ``uniforms`` [B, 7] in [0, 1) decide each image (drawn when None)."""
        b, c, h, w = x.shape
        dev = x.device
        if uniforms is None:
            uniforms = torch.rand(b, 7, device=dev)
        u = [col.to(x.dtype)[:, None, None, None] for col in uniforms.unbind(1)]
        if "color" in self.policy:
            x = x + (u[0] - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (u[1] * 2) + mean
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * (u[2] + 0.5) + mean
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        if "translation" in self.policy:
            sx, sy = int(w * 0.125 + 0.5), int(h * 0.125 + 0.5)
            tx = torch.floor(u[3][:, 0].float() * (2 * sx + 1)).long() - sx  # [B, 1, 1] in [-sx, sx]
            ty = torch.floor(u[4][:, 0].float() * (2 * sy + 1)).long() - sy
            src_y, src_x = gy[None] - ty, gx[None] - tx
            valid = ((src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)).to(x.dtype)
            idx = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).reshape(b, 1, h * w)
            x = torch.gather(x.reshape(b, c, h * w), 2, idx.expand(-1, c, -1)).reshape(b, c, h, w)
            x = x * valid[:, None]
        if "cutout" in self.policy:
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            oy = torch.floor(u[5][:, 0].float() * (h + 1 - ch % 2)).long() - ch // 2  # [B, 1, 1]
            ox = torch.floor(u[6][:, 0].float() * (w + 1 - cw % 2)).long() - cw // 2
            hole = (gy[None] >= oy) & (gy[None] < oy + ch) & (gx[None] >= ox) & (gx[None] < ox + cw)
            x = x * (~hole).to(x.dtype)[:, None]
        return x
