"""The latent diffusion family: stage ``autoencoder`` then stage ``diffusion``.

* :class:`AutoencoderTask`: phases ``G_main`` (reconstruction + KL + adversarial after warm-up
  [+ perceptual]) and ``D_main`` (least-squares patch discriminator, from ``adv_warmup_kimg`` on).
* :class:`DiffusionTask`: phase ``main``, the denoising loss on latents ``scale * z`` of the frozen
  EMA autoencoder, with condition dropout for classifier-free guidance.

The latent scale factor (``1 / std(z)`` over training items, Rombach et al. sec. 4.3.2) is computed
once when the diffusion stage first starts, written to ``model.json``, kept in the diffusion
checkpoint state and in the header of ``weights/diffusion*.safetensors``, which is where
generation reads it from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from imgsynth.contracts import DatasetInfo, RunFolder
from imgsynth.data.loading import item_dataset
from imgsynth.errors import ConfigError, ContractError, DependencyError
from imgsynth.models.autoencoder import (
    AdversarialLoss,
    KLAutoencoder,
    build_autoencoder,
    build_discriminator,
    kl_divergence,
    latent_shape,
)
from imgsynth.models.conditioning import FieldSpec
from imgsynth.models.config import LDMConfig
from imgsynth.models.diffusion import ConditionalUNet, NoiseProcess, build_unet
from imgsynth.models.perceptual import PerceptualLoss
from imgsynth.models.sampling import LDMGenerator, item_noise, sample_latents
from imgsynth.training.config import TrainConfig
from imgsynth.training.task import (
    Batch,
    KeyedRandom,
    ModelFamily,
    Phase,
    StageRequest,
    StageSetup,
    StateValue,
    StepContext,
    Task,
    register_family,
)


def _adam(module: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=betas)


def _per_item(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


# =============================================================================================
# Stage 1: autoencoder
# =============================================================================================
class AutoencoderTask(Task):
    stage = "autoencoder"

    def __init__(self, config: TrainConfig, info: DatasetInfo, preview_images: torch.Tensor) -> None:
        self.cfg: LDMConfig = config.model
        self.stage_cfg = config.stage(self.stage)
        self.losses = self.cfg.losses
        self.latent = latent_shape(self.cfg, info.shape)
        self.adversarial = AdversarialLoss()
        self.perceptual = (
            PerceptualLoss(self.losses.perceptual_weights, spatial_dims=self.cfg.spatial_dims)
            if self.losses.perceptual_weight > 0 and self.losses.perceptual_weights
            else None
        )
        self.preview_images = preview_images  # [n, C, *spatial] fixed items shown with their reconstructions
        self._recon: dict[int, torch.Tensor] = {}  # G-phase reconstructions reused by the D phase

    def phases(self) -> list[Phase]:
        g = Phase("G_main", optimizer="autoencoder", trains=("autoencoder",))
        if self.losses.adv_weight <= 0:
            return [g]
        return [g, Phase("D_main", optimizer="discriminator", trains=("discriminator",), start_kimg=self.losses.adv_warmup_kimg)]

    def make_optimizers(self, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        s = self.stage_cfg
        return {name: _adam(nets[name], s.lr, s.betas, s.weight_decay) for name in ("autoencoder", "discriminator")}

    def ema_targets(self) -> list[str]:
        return ["autoencoder"]

    def setup(self, accelerator: Any) -> None:
        if self.perceptual is not None:
            self.perceptual.to(accelerator.device)

    def _reconstruction_terms(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor,
                              sigma: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = recon.float() - x.float()
        terms = {"recon": _per_item(diff.abs() if self.losses.recon == "l1" else diff.pow(2)), "kl": kl_divergence(mu, sigma)}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(recon.float(), x.float())
        return terms

    def loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["image"]  # [B, C, *spatial]
        w = self.losses
        if ctx.phase.name == "G_main":
            eps = ctx.rng.randn(self.latent, "z")  # reparameterisation noise, keyed per item
            recon, mu, sigma = nets["autoencoder"](x, eps)
            terms = self._reconstruction_terms(x, recon, mu, sigma)
            loss = terms["recon"].mean() + w.kl_weight * terms["kl"].mean()
            if "perceptual" in terms:
                loss = loss + w.perceptual_weight * terms["perceptual"].mean()
            logs = {k: v.detach().mean() for k, v in terms.items()}
            if w.adv_weight > 0 and ctx.kimg >= w.adv_warmup_kimg:
                g_adv = self.adversarial.generator(nets["discriminator"](recon.float().contiguous())[-1])
                loss = loss + w.adv_weight * g_adv
                logs["g_adv"] = g_adv.detach()
                self._recon[ctx.micro] = recon.detach()
            logs["loss"] = loss.detach()
            return loss, logs
        # D_main: real vs the reconstructions of the G phase, in one discriminator pass.
        fake = self._recon.pop(ctx.micro, None)
        if fake is None:
            with torch.no_grad():
                fake = nets["autoencoder"](x)[0]
        logits = nets["discriminator"](torch.cat([fake.float(), x.float()]).contiguous())[-1]
        logits_fake, logits_real = logits.chunk(2)
        d_loss = self.adversarial.discriminator(logits_fake, logits_real)
        return w.adv_weight * d_loss, {"loss": d_loss.detach()}

    def val_loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        x = batch["image"]
        recon, mu, sigma = nets["autoencoder"](x)  # the mean latent: deterministic
        terms = self._reconstruction_terms(x, recon, mu, sigma)
        terms["loss"] = terms["recon"]
        return terms

    @torch.no_grad()
    def preview(self, nets: Mapping[str, nn.Module], n: int, seed: int) -> torch.Tensor:
        ae = nets["autoencoder"]
        x = self.preview_images[:n].to(next(ae.parameters()).device)
        recon = ae(x)[0].clamp(-1, 1)
        return torch.stack([x, recon], dim=1).flatten(0, 1)  # original, reconstruction, ...


# =============================================================================================
# Stage 2: diffusion in latent space
# =============================================================================================
class DiffusionTask(Task):
    stage = "diffusion"

    def __init__(self, config: TrainConfig, info: DatasetInfo, autoencoder: KLAutoencoder, scale_factor: float,
                 fields: list[FieldSpec], preview_cond: dict[str, torch.Tensor]) -> None:
        self.cfg: LDMConfig = config.model
        self.stage_cfg = config.stage(self.stage)
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)
        self.fields = fields
        self.process = NoiseProcess(self.cfg.noise, self.cfg.spatial_dims)
        self.latent = latent_shape(self.cfg, info.shape)
        self.preview_cond = preview_cond

    def phases(self) -> list[Phase]:
        return [Phase("main", optimizer="unet", trains=("unet",))]

    def make_optimizers(self, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        s = self.stage_cfg
        return {"unet": _adam(nets["unet"], s.lr, s.betas, s.weight_decay)}

    def ema_targets(self) -> list[str]:
        return ["unet"]

    def setup(self, accelerator: Any) -> None:
        self.autoencoder.to(accelerator.device)

    @torch.no_grad()
    def latents(self, x: torch.Tensor, rng: KeyedRandom) -> torch.Tensor:
        """``scale * z`` with ``z = mu + sigma * eps`` from the frozen autoencoder, in fp32: ``[B, L, *latent]``."""
        return self.autoencoder.latent(x, rng.randn(self.latent, "z")).float() * self.scale_factor

    def _denoising(self, unet: nn.Module, batch: Batch, rng: KeyedRandom, dropout: float) -> torch.Tensor:
        z0 = self.latents(batch["image"], rng)
        noise = rng.randn(self.latent, "noise")
        t = self.process.sample_t(rng, self.latent)
        x_t, target = self.process.noisy(z0, noise, t)
        keep = rng.rand("cfg_drop") >= dropout  # [B] True: conditioned
        pred = unet(x_t, t, batch["cond"], keep)
        diff = pred.float() - target
        return _per_item(diff.pow(2) if self.cfg.noise.loss == "l2" else diff.abs())

    def loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        per_item = self._denoising(nets["unet"], batch, ctx.rng, self.cfg.conditioning.dropout)
        loss = per_item.mean()
        return loss, {"loss": loss.detach()}

    def val_loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {"loss": self._denoising(nets["unet"], batch, ctx.rng, 0.0)}

    @torch.no_grad()
    def preview(self, nets: Mapping[str, nn.Module], n: int, seed: int) -> torch.Tensor:
        unet: ConditionalUNet = nets["unet"]  # type: ignore[assignment]
        device = next(unet.parameters()).device
        n = min(n, next(iter(self.preview_cond.values())).shape[0]) if self.preview_cond else n
        cond = {k: v[:n].to(device) for k, v in self.preview_cond.items()}
        x_T, gens = item_noise([seed * 1000 + i for i in range(n)], self.latent, device)
        noise = self.cfg.noise
        z = sample_latents(unet, self.process, x_T, cond, sampler=noise.default_sampler, steps=noise.default_steps,
                           guidance=self.cfg.conditioning.guidance, generators=gens)
        return self.autoencoder.decode(z / self.scale_factor).float().clamp(-1, 1)

    def state_dict(self) -> dict[str, StateValue]:
        return {"latent_scale_factor": self.scale_factor}

    def load_state_dict(self, state: Mapping[str, StateValue]) -> None:
        saved = state.get("latent_scale_factor")
        if saved is not None and abs(float(saved) - self.scale_factor) > 1e-6 * abs(self.scale_factor):  # type: ignore[arg-type]
            raise ContractError(
                f"checkpoint latent scale factor {saved} differs from model.json's {self.scale_factor}; "
                "the autoencoder changed under a running diffusion stage"
            )

    def metadata(self) -> dict[str, str]:
        return {"latent_scale_factor": repr(self.scale_factor)}

    def model_info(self) -> dict[str, Any]:
        return {"latent_scale_factor": self.scale_factor}


# =============================================================================================
# Building stages, checking configs, loading generators
# =============================================================================================
def condition_fields(config: TrainConfig, info: DatasetInfo) -> list[FieldSpec]:
    names = info.condition_names if config.data.conditions is None else config.data.conditions
    return [FieldSpec.from_condition(info.condition(n)) for n in names]


def load_autoencoder(run: RunFolder, config: TrainConfig, info: DatasetInfo) -> KLAutoencoder:
    path = run.weights_path("autoencoder", ema=True)
    if not path.is_file():
        raise ContractError("autoencoder weights missing: the autoencoder stage has not completed", path=path)
    ae = build_autoencoder(config.model, info.channels)
    ae.load_state_dict({k.split(".", 1)[1]: v for k, v in load_file(str(path)).items() if k.startswith("autoencoder.")})
    return ae


@torch.no_grad()
def estimate_scale_factor(ae: KLAutoencoder, items: torch.utils.data.Dataset, n: int, latent: tuple[int, ...],
                          seed: int, device: torch.device, batch: int = 32) -> float:
    """``1 / std(z)`` over the first ``n`` training items, ``z`` drawn with keyed noise (deterministic)."""
    ae = ae.to(device).eval()
    zs = []
    count = min(n, len(items))  # type: ignore[arg-type]
    for start in range(0, count, batch):
        idx = list(range(start, min(count, start + batch)))
        x = torch.stack([items[i]["image"] for i in idx]).to(device)
        eps = KeyedRandom(seed, [-(i + 1) for i in idx], device).randn(latent, "scale")
        zs.append(ae.latent(x, eps).float().cpu())
    std = float(torch.cat(zs).std())
    if not std > 0:
        raise ContractError("latents have zero spread; the autoencoder collapsed (check the autoencoder stage)")
    return 1.0 / std


def _preview_items(items: torch.utils.data.Dataset, n: int) -> list[dict[str, Any]]:
    return [items[i] for i in range(min(n, len(items)))]  # type: ignore[arg-type]


def _preview_conditions(fields: list[FieldSpec], items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Conditions of the preview grid: categories in turn, continuous values across their range,
    masks of the first training items (so every class shows up, whatever the class balance)."""
    n = len(items)
    out = {}
    for f in fields:
        if f.type == "categorical":
            out[f.name] = torch.arange(n) % f.size
        elif f.type == "continuous":
            out[f.name] = torch.linspace(-1.0, 1.0, n)
        else:
            out[f.name] = torch.stack([p["cond"][f.name] for p in items])
    return out


def build_stage(req: StageRequest) -> StageSetup:
    config, info, cfg = req.config, req.dataset.info, req.config.model
    fields = condition_fields(config, info)
    items = item_dataset(req.dataset, config.data.train_split, conditions=[f.name for f in fields], cache="none",
                         max_items=max(cfg.latent_scale_items, config.loop.sample_count))
    preview = _preview_items(items, config.loop.sample_count)
    if req.stage == "autoencoder":
        nets = {"autoencoder": build_autoencoder(cfg, info.channels), "discriminator": build_discriminator(cfg, info.channels)}
        images = torch.stack([p["image"] for p in preview[: max(1, config.loop.sample_count // 2)]])
        return StageSetup(task=AutoencoderTask(config, info, images), nets=nets)
    if req.stage == "diffusion":
        ae = load_autoencoder(req.run, config, info)
        model = req.run.model_info()
        scale = model.latent_scale_factor
        if scale is None:
            scale = estimate_scale_factor(ae, items, cfg.latent_scale_items, latent_shape(cfg, info.shape), config.seed, req.device)
        preview_cond = _preview_conditions(fields, preview)
        task = DiffusionTask(config, info, ae, scale, fields, preview_cond)
        return StageSetup(task=task, nets={"unet": build_unet(cfg, fields)})
    raise ConfigError(f"unknown LDM stage '{req.stage}'")


def check(config: TrainConfig, info: DatasetInfo) -> None:
    """Fail before training, naming the field, when config and dataset do not fit together."""
    cfg = config.model
    if cfg.spatial_dims != info.spatial_dims:
        raise ConfigError(
            f"'model.spatial_dims'={cfg.spatial_dims} but the dataset is {info.spatial_dims}D (use the ldm_{info.spatial_dims}d config)"
        )
    spatial = info.shape[1:]
    if any(size < 1 for size in spatial):
        raise ConfigError(
            f"the dataset's items vary in size (shape {info.shape} in dataset.json); latent diffusion needs one "
            "size: preprocess with a config that resamples or crops to a fixed shape"
        )
    f = cfg.autoencoder.downsample
    if any(s % f for s in spatial):
        raise ConfigError(
            f"image size {spatial} is not divisible by the autoencoder's downsampling {f} "
            f"(2^(len(model.autoencoder.channels)-1)); change 'model.autoencoder.channels' or the preprocessing size"
        )
    latent = [s // f for s in spatial]
    if cfg.autoencoder.latent_size is not None and list(cfg.autoencoder.latent_size) != latent:
        raise ConfigError(
            f"'model.autoencoder.latent_size'={cfg.autoencoder.latent_size} but images {spatial} downsampled by {f} give {latent}"
        )
    g = cfg.unet.downsample
    if any(s % g for s in latent):
        raise ConfigError(
            f"latent size {latent} is not divisible by the UNet's downsampling {g} "
            "(2^(len(model.unet.channels)-1)); use fewer 'model.unet.channels' levels"
        )
    smallest = min(spatial)
    if 2 ** cfg.discriminator.num_layers > smallest:
        raise ConfigError(
            f"'model.discriminator.num_layers'={cfg.discriminator.num_layers} downsamples {smallest}-pixel images below 1 pixel"
        )
    if config.data.conditions is not None:
        for i, name in enumerate(config.data.conditions):
            if name not in info.condition_names:
                raise ConfigError(
                    f"'data.conditions[{i}]'='{name}' is not a condition of the dataset "
                    f"(dataset.json has: {', '.join(info.condition_names) or 'none'})"
                )
    weights = cfg.losses.perceptual_weights
    if cfg.losses.perceptual_weight > 0 and weights and not Path(weights).expanduser().is_file():
        raise DependencyError(
            f"'model.losses.perceptual_weights'={weights} is not a file (VGG-16 weights are never downloaded)"
        )


def load_generator(run: RunFolder, device: torch.device) -> LDMGenerator:
    import yaml

    from imgsynth.config import config_from_dict

    config = config_from_dict(yaml.safe_load(run.config_path.read_text(encoding="utf-8")), source=run.config_path)
    assert isinstance(config, TrainConfig)
    return LDMGenerator(run, config.model, config.data.conditions, device)


LDM = register_family(
    ModelFamily(
        name="ldm",
        stages=lambda config: config.model.stage_names(),
        build_stage=build_stage,
        load_generator=load_generator,
        check=check,
    )
)
