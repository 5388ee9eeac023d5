"""The domain encoder: a small CNN trained by the suite on the real train split.

Trained self-supervised (SimCLR, Chen et al. 2020: NT-Xent loss between two augmented views) or
as a classifier of a categorical condition; its pooled features (before any projection head) feed
FD_domain / KD_domain, precision/recall and the feature-space memorization search. The weights
are saved as safetensors with the architecture, input normalisation and training data hash in the
metadata; the file's sha256 goes into every recipe, so numbers from two evaluations compare only
when they name the same encoder hash. A matching file in the cache is reused instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgsynth.errors import DependencyError
from imgsynth.evaluation.config import DomainSection
from imgsynth.utils.io import atomic_path, sha256_file
from imgsynth.utils.log import get_logger

log = get_logger("evaluation")
ENCODER_FORMAT = "imgsynth-domain-encoder"


@dataclass(frozen=True)
class EncoderArch:
    spatial_dims: int
    in_channels: int
    width: int
    levels: int
    shape: tuple[int, ...]
    offset: float
    scale: float
    n_classes: int = 0

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (self.levels - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class DomainEncoder(nn.Module):
    """Conv stem, ``levels`` stages (stride 2 after the first; 3D: from the first), GroupNorm + SiLU, global
    average pool: ``[B, C, *S] -> [B, F]``."""

    def __init__(self, arch: EncoderArch) -> None:
        super().__init__()
        self.arch = arch
        conv = nn.Conv2d if arch.spatial_dims == 2 else nn.Conv3d
        layers: list[nn.Module] = [conv(arch.in_channels, arch.width, 3, padding=1), _norm(arch.width), nn.SiLU()]
        ch = arch.width
        for level in range(arch.levels):
            out = arch.width * 2 ** level
            stride = 1 if level == 0 and arch.spatial_dims == 2 else 2  # volumes: downsample at once
            layers += [conv(ch, out, 3, stride=stride, padding=1), _norm(out), nn.SiLU(),
                       conv(out, out, 3, padding=1), _norm(out), nn.SiLU()]
            ch = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(ch, arch.n_classes) if arch.n_classes else nn.Sequential(
            nn.Linear(ch, ch), nn.SiLU(), nn.Linear(ch, 128)
        )
        # Per-feature mean and std over the real train split, set after training and saved with the
        # weights: reported features are standardised, so distances read in the same units everywhere.
        self.register_buffer("feat_mean", torch.zeros(ch))
        self.register_buffer("feat_std", torch.ones(ch))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.arch.offset) / self.arch.scale
        return self.body(x).flatten(2).mean(-1)  # [B, F]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised pooled features ``[B, F]`` (what FD_domain and friends are computed on)."""
        return (self.pooled(x) - self.feat_mean) / self.feat_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop (affine), flips, intensity jitter and noise; ``[B, C, *S]`` in, same shape out."""
    b, dims = x.shape[0], x.ndim - 2
    scale = 0.7 + 0.3 * torch.rand(b, generator=gen)
    shift = (torch.rand(b, dims, generator=gen) * 2 - 1) * (1 - scale[:, None])
    theta = torch.zeros(b, dims, dims + 1)
    for i in range(dims):
        theta[:, i, i] = scale
    theta[:, :, dims] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), out.flip(-1), out)
    gain = 1 + 0.2 * (torch.rand(b, generator=gen) * 2 - 1)
    bias = 0.2 * (torch.rand(b, generator=gen) * 2 - 1)
    out = out * gain.view(-1, *([1] * (x.ndim - 1))) + bias.view(-1, *([1] * (x.ndim - 1)))
    return out + 0.03 * torch.randn(out.shape, generator=gen)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, eq. 1) over the 2B views of a batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def data_hash(images: np.ndarray, labels: list[int] | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    h.update(json.dumps(labels).encode())
    return h.hexdigest()


def cache_key(cfg: DomainSection, arch: EncoderArch, data_sha: str, seed: int) -> str:
    recipe = {"cfg": cfg.model_dump(exclude={"weights", "cache_dir", "time_budget_s"}), "arch": asdict(arch),
              "data": data_sha, "seed": seed, "format": ENCODER_FORMAT}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    import os

    root = os.environ.get("IMGSYNTH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imgsynth")
    return Path(root) / "encoders"


def train_encoder(
    images: np.ndarray,
    labels: list[int] | None,
    arch: EncoderArch,
    cfg: DomainSection,
    *,
    seed: int,
    device: torch.device,
) -> tuple[DomainEncoder, dict[str, object]]:
    """Train on ``images [N, C, *S]`` (model scale); returns the encoder and what was done."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = DomainEncoder(arch).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.tensor(labels) if labels is not None else None
    weights = None
    if y is not None:
        counts = torch.bincount(y, minlength=arch.n_classes).float().clamp_min(1)
        weights = (counts.sum() / counts / arch.n_classes).to(device)
    batch = min(cfg.batch_size, len(data))
    start, steps, losses = time.monotonic(), 0, []
    net.train()
    for step in range(cfg.steps):
        # Sample a batch and two views.
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x = data[idx]
        if cfg.method == "simclr":
            v1, v2 = augment(x, gen).to(device), augment(x, gen).to(device)
            loss = nt_xent(net(v1), net(v2), cfg.temperature)
        else:
            assert y is not None
            loss = F.cross_entropy(net(augment(x, gen).to(device)), y[idx].to(device), weight=weights)
        # Update weights.
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        steps = step + 1
        if time.monotonic() - start > cfg.time_budget_s:
            log.warning("domain encoder training stopped by its time budget after %d of %d steps", steps, cfg.steps)
            break
    net.eval()
    # Standardise the features with their real-train statistics.
    with torch.no_grad():
        pooled = torch.cat([net.pooled(data[i : i + 256].to(device)) for i in range(0, len(data), 256)])
        net.feat_mean.copy_(pooled.mean(0))
        net.feat_std.copy_(pooled.std(0).clamp_min(1e-6))
    info = {"steps_done": steps, "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.monotonic() - start, 2)}
    return net, info


def save_encoder(net: DomainEncoder, path: Path, meta: dict[str, object]) -> str:
    """Write the encoder as safetensors (metadata: format, arch, training) atomically; returns its sha256."""
    from safetensors.torch import save_file

    metadata = {"format": ENCODER_FORMAT, "arch": json.dumps(asdict(net.arch)), "meta": json.dumps(meta, default=str)}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return sha256_file(path)


def load_encoder(path: Path) -> tuple[DomainEncoder, dict[str, object]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise DependencyError("domain encoder weights not found; fix features.domain.weights", path=path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        if metadata.get("format") != ENCODER_FORMAT:
            raise DependencyError(f"not an imgsynth domain encoder (format {metadata.get('format')!r})", path=path)
        raw = json.loads(metadata["arch"])
        arch = EncoderArch(**{**raw, "shape": tuple(raw["shape"])})
        net = DomainEncoder(arch)
        net.load_state_dict(load_file(str(path)))
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        if isinstance(exc, DependencyError):
            raise
        raise DependencyError(f"cannot read the domain encoder ({exc})", path=path) from None
    net.eval()
    return net, json.loads(metadata.get("meta", "{}"))
