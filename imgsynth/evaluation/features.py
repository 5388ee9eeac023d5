"""Feature extractors behind one typed registry, and the 2.5D (three-plane) wrapper.

An extractor maps images ``[N, C, *spatial]`` (model scale) to feature sets ``{view: [N, D]}``:
one view (``""``) for a native extractor, or one view per plane (axial, coronal, sagittal) when a
2D network reads 3D volumes slice by slice (2.5D, as MAISI reports FID). Scores are named for the
extractor: ``FID``/``KID`` only for InceptionV3 with the standard FID weights, else
``FD_<name>``/``KD_<name>``.

Built in:
- ``inception``: InceptionV3 from a user-supplied torch-fidelity FID weights file (never downloaded);
  grayscale replicated to 3 channels at its input, TF1 bilinear resize to 299 x 299.
- ``domain``: the suite's own encoder trained on the real train split (see ``encoder.py``).
- ``medicalnet``: a user-supplied 3D ResNet (MedicalNet layout) for volumes.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgsynth.errors import ConfigError, DependencyError
from imgsynth.evaluation.config import EvaluateConfig
from imgsynth.evaluation.sets import Inputs
from imgsynth.utils.io import atomic_path, sha256_file
from imgsynth.utils.log import get_logger

log = get_logger("evaluation")
PLANES = ("axial", "coronal", "sagittal")  # slices across D, H, W of [C, D, H, W]


@dataclass
class ExtractorContext:
    cfg: EvaluateConfig
    inputs: Inputs
    device: torch.device
    out_dir: Path
    notes: list[str] = field(default_factory=list)


class FeatureExtractor(ABC):
    """One feature space: a name, score names, a recipe, and ``extract``."""

    name: str
    dim: int

    @property
    @abstractmethod
    def score_names(self) -> tuple[str, str]:
        """(Frechet score name, kernel score name)."""

    @abstractmethod
    def recipe(self) -> dict[str, Any]:
        """Extractor name, weights sha256, preprocessing and resize, as recorded in the report."""

    @abstractmethod
    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images [N, C, *spatial]`` -> ``{view: features [N, D]}`` (float64)."""


Factory = Callable[[ExtractorContext, bool], FeatureExtractor | None]
_REGISTRY: dict[str, Factory] = {}


def register_extractor(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(ctx, required) -> extractor | None`` (None: not applicable, when not required)."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise RuntimeError(f"feature extractor {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def extractor_names() -> list[str]:
    return sorted(_REGISTRY)


def build_extractors(ctx: ExtractorContext) -> list[FeatureExtractor]:
    """The configured extractors; ``auto`` = domain encoder + any network whose weights were given."""
    wanted = list(ctx.cfg.features.extractors)
    out: list[FeatureExtractor] = []
    for name in wanted:
        if name == "auto":
            for auto in ("inception", "medicalnet", "domain"):
                if auto not in wanted and (ext := _REGISTRY[auto](ctx, False)) is not None:
                    out.append(ext)
            continue
        if name not in _REGISTRY:
            raise ConfigError(f"unknown feature extractor '{name}' in features.extractors (known: {', '.join(extractor_names())}, auto)")
        ext = _REGISTRY[name](ctx, True)
        if ext is not None:
            out.append(ext)
    if not out:
        raise ConfigError("no feature extractor is available: enable features.domain or give weights for inception / medicalnet")
    ctx.notes.append("feature extractors used: " + ", ".join(f"{e.name} ({e.score_names[0]})" for e in out))
    return out


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch: int, device: torch.device) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], dtype=np.float32)).to(device)
            outs.append(fn(x).double().cpu().numpy())
    return np.concatenate(outs)


def plane_slices(volumes: np.ndarray, plane: str, center_ratio: float, every_k: int) -> np.ndarray:
    """All 2D slices ``[N * S, C, a, b]`` of ``volumes [N, C, D, H, W]`` across one plane."""
    axis = 2 + PLANES.index(plane)
    n = volumes.shape[axis]
    lo = int((1.0 - center_ratio) / 2.0 * n)
    hi = max(lo + 1, int((1.0 + center_ratio) / 2.0 * n))
    picked = np.take(volumes, np.arange(lo, hi, every_k), axis=axis)  # [N, C, ..., S, ...]
    moved = np.moveaxis(picked, axis, 1)  # [N, S, C, a, b]
    return moved.reshape(-1, *moved.shape[2:])


def _weights_file(path: str, network: str, key: str) -> Path:
    weights = Path(path).expanduser()
    if not weights.is_file():
        raise DependencyError(f"{network} weights file not found; fix {key}", path=weights)
    return weights


# =============================================================================================
# InceptionV3 (FID)
# =============================================================================================
class InceptionExtractor(FeatureExtractor):
    name = "inception"
    dim = 2048

    def __init__(self, weights: Path, ctx: ExtractorContext) -> None:
        from imgsynth.evaluation.inception import STANDARD_SHA256_PREFIX, FIDInceptionV3, load_state_dict_file

        self.weights = weights
        self.sha256 = sha256_file(weights)
        self.standard = self.sha256.startswith(STANDARD_SHA256_PREFIX)
        net = FIDInceptionV3()
        try:
            net.load_state_dict(load_state_dict_file(weights), strict=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DependencyError(f"not an InceptionV3 FID weights file ({str(exc).splitlines()[0]})", path=weights) from None
        self.net = net.eval().to(ctx.device)
        self.device = ctx.device
        self.batch = ctx.cfg.features.inception.batch_size
        self.slices = ctx.cfg.features.slices
        self.spatial_dims = ctx.inputs.spatial_dims
        intensity = ctx.inputs.info.intensity
        if intensity.kind == "none":
            lo, hi = np.percentile(ctx.inputs.real_train.images, [0.5, 99.5])
            self.window = (float(lo), float(max(hi, lo + 1e-6)))
        else:
            self.window = (-1.0, 1.0)
        if not self.standard:
            ctx.notes.append(
                f"inception weights {weights.name} (sha256 {self.sha256[:12]}...) are not the standard FID weights "
                f"(sha256 {STANDARD_SHA256_PREFIX}...): scores are named FD_inception, not FID"
            )

    @property
    def score_names(self) -> tuple[str, str]:
        suffix = "_2.5d" if self.spatial_dims == 3 else ""
        return ("FID" + suffix, "KID" + suffix) if self.standard else ("FD_inception" + suffix, "KD_inception" + suffix)

    def recipe(self) -> dict[str, Any]:
        lo, hi = self.window
        out = {
            "extractor": "InceptionV3 (TF FID graph, pool3 2048-d)",
            "weights": self.weights.name,
            "weights_sha256": self.sha256,
            "standard_fid_weights": self.standard,
            "preprocessing": f"[{lo:g}, {hi:g}] -> [0, 255] rounded; grayscale replicated to 3 channels at the network input",
            "resize": "TensorFlow-1 bilinear to 299x299 (torch-fidelity's FID resize)",
        }
        if self.spatial_dims == 3:
            out["slices"] = (
                f"2.5D: every {self.slices.every_k}th slice of the central {self.slices.center_ratio:g} of each axis; "
                "axial/coronal/sagittal = slices across D/H/W of [C, D, H, W]; score = mean over the 3 planes"
            )
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.window
        x = ((x - lo) / (hi - lo)).clamp(0, 1).mul(255).round()  # [B, C, H, W] in 0..255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        return self.net(x)

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if images.ndim == 4:
            return {"": _batched(self._forward, images, self.batch, self.device)}
        return {
            plane: _batched(self._forward, plane_slices(images, plane, self.slices.center_ratio, self.slices.every_k),
                            self.batch, self.device)
            for plane in PLANES
        }


@register_extractor("inception")
def _inception(ctx: ExtractorContext, required: bool) -> FeatureExtractor | None:
    path = ctx.cfg.features.inception.weights
    if path is None:
        if required:
            raise DependencyError(
                "extractor 'inception' needs the FID weights file: set features.inception.weights to "
                "weights-inception-2015-12-05-6726825d.pth (distributed with torch-fidelity; install imgsynth[fid])"
            )
        return None
    return InceptionExtractor(_weights_file(path, "InceptionV3", "features.inception.weights"), ctx)


# =============================================================================================
# MedicalNet-style 3D ResNet
# =============================================================================================
class MedicalNetExtractor(FeatureExtractor):
    name = "medicalnet"

    def __init__(self, weights: Path, ctx: ExtractorContext) -> None:
        from monai.networks.nets.resnet import ResNet, get_medicalnet_pretrained_resnet_args, resnet_params

        from imgsynth.evaluation.inception import load_state_dict_file

        depth = ctx.cfg.features.medicalnet.depth
        block, layers, _, _, _ = resnet_params[f"resnet{depth}"]
        bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(depth)
        net = ResNet(block, layers, [64, 128, 256, 512], spatial_dims=3, n_input_channels=1, conv1_t_stride=2,
                     shortcut_type=shortcut, bias_downsample=bias_downsample, feed_forward=False)
        self.depth = depth
        self.weights = weights
        self.sha256 = sha256_file(weights)
        try:
            state = {k: v for k, v in load_state_dict_file(weights).items() if not k.startswith(("conv_seg", "fc."))}
            net.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DependencyError(
                f"not a MedicalNet resnet{depth} weights file ({str(exc).splitlines()[0]}); check features.medicalnet.depth",
                path=weights,
            ) from None
        self.net = net.eval().to(ctx.device)
        self.device = ctx.device
        self.batch = ctx.cfg.features.medicalnet.batch_size
        self.dim = 512 if depth < 50 else 2048

    @property
    def score_names(self) -> tuple[str, str]:
        return "FD_medicalnet", "KD_medicalnet"

    def recipe(self) -> dict[str, Any]:
        return {
            "extractor": f"MedicalNet 3D ResNet-{self.depth} (global average pool)",
            "weights": self.weights.name,
            "weights_sha256": self.sha256,
            "preprocessing": "channels averaged; per-volume z-score (MedicalNet normalisation)",
            "resize": "none (native volume size)",
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(1, keepdim=True)
        flat = x.flatten(1)
        x = (x - flat.mean(1).view(-1, 1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1, 1) + 1e-5)
        return self.net(x)

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"": _batched(self._forward, images, self.batch, self.device)}


@register_extractor("medicalnet")
def _medicalnet(ctx: ExtractorContext, required: bool) -> FeatureExtractor | None:
    path = ctx.cfg.features.medicalnet.weights
    if path is None or ctx.inputs.spatial_dims != 3:
        if required:
            why = "needs 3D data" if ctx.inputs.spatial_dims != 3 else "needs features.medicalnet.weights (a MedicalNet .pth)"
            raise DependencyError(f"extractor 'medicalnet' {why}")
        return None
    return MedicalNetExtractor(_weights_file(path, "MedicalNet", "features.medicalnet.weights"), ctx)


# =============================================================================================
# Domain encoder trained on the real train split
# =============================================================================================
class DomainExtractor(FeatureExtractor):
    name = "domain"

    def __init__(self, net: Any, path: Path, sha256: str, meta: dict[str, Any], ctx: ExtractorContext) -> None:
        self.net = net.to(ctx.device).eval()
        self.path = path
        self.sha256 = sha256
        self.meta = meta
        self.device = ctx.device
        self.batch = ctx.cfg.data.batch_size
        self.dim = net.arch.feature_dim

    @property
    def score_names(self) -> tuple[str, str]:
        return "FD_domain", "KD_domain"

    def recipe(self) -> dict[str, Any]:
        arch = self.net.arch
        return {
            "extractor": f"domain encoder ({self.meta.get('method', '?')}, {arch.spatial_dims}D CNN, {self.dim}-d pooled features)",
            "weights": self.path.name,
            "weights_sha256": self.sha256,
            "trained_on": self.meta.get("trained_on", {}),
            "preprocessing": f"(x - {arch.offset:g}) / {arch.scale:g}; pooled features standardised with real-train mean/std",
            "resize": "none (native size)",
        }

    def extract(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return {"": _batched(self.net.features, images, self.batch, self.device)}


def _labels(ctx: ExtractorContext, name: str | None) -> tuple[str, list[int], int] | None:
    info = ctx.inputs.info
    cats = [c for c in info.conditions if c.type == "categorical"]
    if name is None:
        if not cats:
            return None
        name = cats[0].name
    cond = info.condition(name)
    if cond.type != "categorical":
        raise ConfigError(f"features.domain.condition '{name}' is not categorical")
    categories = cond.categories or []
    values = ctx.inputs.real_train.conditions[name]
    return name, [categories.index(v) for v in values], len(categories)


@register_extractor("domain")
def _domain(ctx: ExtractorContext, required: bool) -> FeatureExtractor | None:
    from imgsynth.evaluation import encoder as enc

    dcfg = ctx.cfg.features.domain
    if not dcfg.enabled and not required:
        return None
    train = ctx.inputs.real_train.images
    if dcfg.weights is not None:
        path = Path(dcfg.weights).expanduser()
        net, meta = enc.load_encoder(path)
        if list(net.arch.shape) != list(train.shape[1:]):
            raise DependencyError(
                f"domain encoder was trained on items of shape {list(net.arch.shape)}, these are {list(train.shape[1:])}",
                path=path,
            )
        ctx.notes.append(f"domain encoder loaded from features.domain.weights ({path.name})")
    else:
        labels = None
        n_classes = 0
        label_name = None
        if dcfg.method == "classifier":
            found = _labels(ctx, dcfg.condition)
            if found is None:
                raise ConfigError("features.domain.method 'classifier' needs a categorical condition; the dataset has none")
            label_name, labels, n_classes = found
        lo, hi = (-1.0, 1.0) if ctx.inputs.info.intensity.kind != "none" else tuple(np.percentile(train, [0.5, 99.5]))
        dims = ctx.inputs.spatial_dims
        levels = max(1, min(dcfg.levels, int(np.log2(min(train.shape[2:]))) - 1))
        arch = enc.EncoderArch(
            spatial_dims=dims, in_channels=train.shape[1], width=dcfg.width, levels=levels,
            shape=tuple(train.shape[1:]), offset=float((lo + hi) / 2), scale=float(max((hi - lo) / 2, 1e-6)),
            n_classes=n_classes,
        )
        data_sha = enc.data_hash(train, labels)
        key = enc.cache_key(dcfg, arch, data_sha, ctx.cfg.seed)
        cache = Path(dcfg.cache_dir).expanduser() if dcfg.cache_dir else enc.default_cache_dir()
        path = cache / f"domain-{key}.safetensors"
        if path.is_file():
            net, meta = enc.load_encoder(path)
            ctx.notes.append(f"domain encoder reused from the cache ({path.name}): same data, config and seed")
        else:
            log.info("training the domain encoder (%s, %d steps) on %d real train items", dcfg.method, dcfg.steps, len(train))
            net, info = enc.train_encoder(train, labels, arch, dcfg, seed=ctx.cfg.seed, device=ctx.device)
            meta = {
                "method": dcfg.method,
                "trained_on": {"dataset": Path(ctx.inputs.real_train.source).name, "split": "train",
                               "items": len(train), "data_sha256": data_sha, "condition": label_name},
                "config": dcfg.model_dump(exclude={"weights", "cache_dir"}),
                "seed": ctx.cfg.seed,
                **info,
            }
            if info["steps_done"] < dcfg.steps:
                ctx.notes.append(f"domain encoder training hit its time budget: {info['steps_done']} of {dcfg.steps} steps")
            enc.save_encoder(net.cpu(), path, meta)
            ctx.notes.append(f"domain encoder trained on the real train split and cached as {path}")
    sha = sha256_file(path)
    local = ctx.out_dir / "domain-encoder.safetensors"
    if path.resolve() != local.resolve():
        with atomic_path(local) as tmp:
            shutil.copyfile(path, tmp)
    return DomainExtractor(net, local, sha, meta, ctx)
