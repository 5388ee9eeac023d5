"""StyleGAN2 losses and regularisers.

* Non-saturating logistic loss (Goodfellow et al. 2014): ``L_G = softplus(-D(G(z)))``,
  ``L_D = softplus(D(G(z))) + softplus(-D(x))``.
* R1 (Mescheder et al. 2018, eq. 9): ``gamma / 2 * ||grad_x D(x)||^2`` on reals, lazily every
  ``r1_interval`` steps with the penalty scaled by the interval (StyleGAN2 sec. 3.1).
* Path-length regularisation (StyleGAN2 eq. 4): ``(||J_w^T y||_2 - a)^2`` with
  ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running mean of the lengths.

:class:`StyleGAN2Task` runs them as the phases of the shared training loop
(``imgsynth.training.loop``); the family registration (networks from a config and a dataset, the
generator of a run folder) closes this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from imgsynth.contracts import DatasetInfo, RunFolder
from imgsynth.errors import ConfigError, ContractError, UsageError
from imgsynth.models.stylegan2 import ConditionLayout, Discriminator, Generator
from imgsynth.models.stylegan2_config import StyleGAN2AugmentConfig, StyleGAN2Config
from imgsynth.training.augment import PRESETS, AdaController, AugmentPipe, DiffAugment
from imgsynth.training.config import StageConfig, TrainConfig
from imgsynth.training.task import (
    Batch,
    ModelFamily,
    Phase,
    StageRequest,
    StageSetup,
    StateValue,
    StepContext,
    Task,
    register_family,
)
from imgsynth.utils.io import sha256_file

if TYPE_CHECKING:
    from accelerate import Accelerator


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(-D(G(z)))`` per item [B]."""
    return F.softplus(-fake_logits).flatten(1).mean(1)


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``softplus(D(G(z))) + softplus(-D(x))`` per item [B]."""
    return (F.softplus(fake_logits) + F.softplus(-real_logits)).flatten(1).mean(1)


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """``||grad_x D(x)||^2`` per item [B] (``real_img`` must require grad; graph kept for backward)."""
    (grads,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grads.square().flatten(1).sum(1)


def path_lengths(img: torch.Tensor, ws: torch.Tensor, pl_noise: torch.Tensor) -> torch.Tensor:
    """``||J_w^T y||_2`` per item [B], averaged over the ``num_ws`` layers of ``ws`` [B, L, w_dim].

    ``pl_noise`` is ``y`` [B, C, H, W], already scaled by ``1 / sqrt(H W)``.
    """
    (grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    return grads.square().sum(2).mean(1).sqrt()


# =============================================================================================
# The training task: phases G main / G reg / D main / D reg on the shared loop
# =============================================================================================
def keyed_draws(ctx: StepContext, salt: str, normals: int, uniforms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item random numbers ``([B, normals], [B, uniforms])`` drawn on the device.

    Row b comes from a generator seeded by (run seed, item key, salt) alone (see
    :class:`~imgsynth.training.task.KeyedRandom`), so it does not depend on the batch, the number
    of processes or a resume; drawing on the device keeps large noise maps off the host.
    """
    device = ctx.device
    rows_n, rows_u = [], []
    for key in ctx.rng.keys:
        gen = torch.Generator(device=device).manual_seed(ctx.rng.generator(key, salt).initial_seed())
        rows_n.append(torch.randn(normals, generator=gen, device=device))
        rows_u.append(torch.rand(uniforms, generator=gen, device=device))
    return torch.stack(rows_n), torch.stack(rows_u)


class StyleGAN2Task(Task):
    """StyleGAN2-ADA training as four phases of the shared loop (stylegan2-ada's ``StyleGAN2Loss``).

    ``G_main``: non-saturating loss of augmented fakes (with style mixing). ``G_reg`` (every
    ``pl_interval`` steps): path-length penalty x interval. ``D_main``: logistic loss on augmented
    fakes and reals, collecting ``sign(D(real))`` for ADA. ``D_reg`` (every ``r1_interval`` steps):
    R1 x gamma/2 x interval through the augmentation. Fakes take the conditions of the real batch.
    Regularisers run in fp32 (autocast off); Adam's lr and betas of a lazily regularised network
    are scaled by ``interval / (interval + 1)`` (StyleGAN2 appendix B).
    """

    stage = "stylegan2"

    def __init__(self, model: StyleGAN2Config, stage: StageConfig, layout: ConditionLayout, generator: Generator) -> None:
        self.cfg, self.stage_cfg, self.layout = model, stage, layout
        self.resolution, self.channels = generator.img_resolution, generator.img_channels
        self.z_dim, self.num_ws, self.noise_numel = generator.z_dim, generator.num_ws, generator.synthesis.noise_numel
        loss = model.loss
        self.r1_gamma = loss.r1_gamma if loss.r1_gamma is not None else 0.0002 * self.resolution**2 / stage.batch
        self.augment, self.ada = build_augment(model.augment)
        self.pl_mean = torch.zeros([])
        # Running statistics gathered over a step's micro-batches, folded in by end_step with the
        # mean over processes, so that 1 or N processes (and any accumulation) track the same values.
        self._stats: dict[str, list[torch.Tensor]] = {"w": [], "pl": []}
        self._mapping: nn.Module | None = None

    # -- structure -----------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        loss = self.cfg.loss
        phases = [Phase("G_main", "G", ("G",))]
        if loss.pl_weight > 0:
            phases.append(Phase("G_reg", "G", ("G",), interval=loss.pl_interval))
        phases.append(Phase("D_main", "D", ("D",)))
        if self.r1_gamma > 0:
            phases.append(Phase("D_reg", "D", ("D",), interval=loss.r1_interval))
        return phases

    def make_optimizers(self, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        loss, st = self.cfg.loss, self.stage_cfg
        out = {}
        for name, lr, interval in (("G", st.lr, loss.pl_interval if loss.pl_weight > 0 else None),
                                   ("D", loss.d_lr or st.lr, loss.r1_interval if self.r1_gamma > 0 else None)):
            ratio = interval / (interval + 1) if interval else 1.0
            betas = (st.betas[0] ** ratio, st.betas[1] ** ratio)
            out[name] = torch.optim.Adam(nets[name].parameters(), lr=lr * ratio, betas=betas, eps=1e-8,
                                         weight_decay=st.weight_decay)
        self._mapping = nets["G"].mapping  # the trained G's, whose average w end_step tracks
        return out

    def ema_targets(self) -> list[str]:
        return ["G"]

    def setup(self, accelerator: Accelerator) -> None:
        device = accelerator.device
        self.pl_mean = self.pl_mean.to(device)
        if self.augment is not None:
            self.augment.to(device)
        if self.ada is not None:
            self.ada.to(device)

    # -- losses --------------------------------------------------------------------------------
    def _generate(self, G: nn.Module, c: torch.Tensor, ctx: StepContext, salt: str,
                  **kwargs: Any) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Fakes for conditions ``c`` with per-item latents, style mixing and noise maps."""
        n, u = keyed_draws(ctx, salt, 2 * self.z_dim + self.noise_numel, 2)
        n, u = n[: len(c)], u[: len(c)]
        z, mix_z, noise = n.split([self.z_dim, self.z_dim, self.noise_numel], dim=1)
        span = self.num_ws - 1  # cutoff uniform in [1, num_ws - 1] with probability style_mixing_prob
        cutoff = torch.where(u[:, 0] < self.cfg.loss.style_mixing_prob,
                             1 + (u[:, 1] * span).long().clamp(max=span - 1), torch.full_like(u[:, 0], self.num_ws).long())
        return G(z, c, mix_z=mix_z, mix_cutoff=cutoff, noise=noise, **kwargs)

    def _discriminate(self, D: nn.Module, img: torch.Tensor, c: torch.Tensor, ctx: StepContext, salt: str) -> torch.Tensor:
        """``D(augment(img), c)``: logits [B, 1]."""
        if self.augment is not None and float(self.augment.p) > 0:
            nu, nn_ = self.augment.num_draws(img.shape)
            normals, uniforms = keyed_draws(ctx, salt, nn_, nu)
            img = self.augment(img, uniforms[: len(img)], normals[: len(img)])
        return D(img, c)

    def loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        G, D = nets["G"], nets["D"]
        real = batch["image"]
        c = self.layout.encode(batch["cond"], batch=len(real), device=real.device)
        phase = ctx.phase
        if phase.name == "G_main":
            fake, ws = self._generate(G, c, ctx, "G_main", return_ws=True)
            self._stats["w"].append(ws[:, 0].detach().float())  # never mixed nor truncated
            logits = self._discriminate(D, fake, c, ctx, "G_main:augment")
            loss = g_nonsaturating_loss(logits).mean()
            return loss, {"loss": loss.item(), "fake_score": logits.mean().item()}
        if phase.name == "G_reg":
            n = max(1, len(real) // self.cfg.loss.pl_batch_shrink)
            with torch.autocast(ctx.device.type, enabled=False):
                fake, ws = self._generate(G, c[:n], ctx, "G_reg", return_ws=True)
                y, _ = keyed_draws(ctx, "G_reg:pl_noise", fake[0].numel(), 0)
                y = y[:n].reshape(fake.shape) / math.sqrt(fake.shape[2] * fake.shape[3])
                lengths = path_lengths(fake, ws, y)
                self._stats["pl"].append(lengths.detach())
                penalty = (lengths - self.pl_mean).square()  # a: the running mean up to the previous step
                # fake * 0 keeps every weight in the graph (DDP expects a gradient for each).
                loss = (fake[:, 0, 0, 0] * 0 + penalty * self.cfg.loss.pl_weight).mean() * phase.interval
            return loss, {"loss": loss.item(), "pl_length": lengths.mean().item(), "pl_mean": self.pl_mean.item()}
        if phase.name == "D_main":
            with torch.no_grad():
                fake = self._generate(G, c, ctx, "D_main")
            fake_logits = self._discriminate(D, fake, c, ctx, "D_main:augment_fake")
            real_logits = self._discriminate(D, real, c, ctx, "D_main:augment_real")
            if self.ada is not None:
                self.ada.accumulate(real_logits)
            loss = d_logistic_loss(real_logits, fake_logits).mean()
            return loss, {"loss": loss.item(), "real_score": real_logits.mean().item(),
                          "fake_score": fake_logits.mean().item()}
        if phase.name == "D_reg":
            with torch.autocast(ctx.device.type, enabled=False):
                x = real.detach().float().requires_grad_(True)
                logits = self._discriminate(D, x, c, ctx, "D_reg:augment")
                r1 = r1_penalty(x, logits)
                loss = (logits[:, 0] * 0 + r1 * (self.r1_gamma / 2)).mean() * phase.interval
            return loss, {"loss": loss.item(), "r1": r1.mean().item()}
        raise ValueError(f"unknown phase {phase.name!r}")

    # -- per-step hooks, previews, state ------------------------------------------------------
    def end_step(self, ctx: StepContext) -> dict[str, float]:
        logs: dict[str, float] = {}
        # Fold this step's statistics into the running averages (means over all processes' items).
        w, pl = self._stats["w"], self._stats["pl"]
        if w and self._mapping is not None:
            self._mapping.track_w_avg(ctx.reduce_mean(torch.cat(w).mean(dim=0)))
        if pl:
            mean = ctx.reduce_mean(torch.cat(pl).mean())
            self.pl_mean.copy_(self.pl_mean.lerp(mean, self.cfg.loss.pl_decay))
        self._stats = {"w": [], "pl": []}
        if self.ada is not None and (ctx.step + 1) % self.cfg.augment.interval == 0:
            rt = self.ada.update()
            if rt is not None:
                logs["augment/rt"] = rt
        if self.augment is not None:
            logs["augment/p"] = float(self.augment.p)
        return logs

    @torch.no_grad()
    def preview(self, nets: Mapping[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        G = nets["G"]
        device = next(G.parameters()).device
        cond = preview_conditions(self.layout, n, device)
        return G.sample(self.layout.encode(cond, batch=n, device=device), seeds=[seed * 100003 + i for i in range(n)],
                        truncation_psi=1.0)

    def state_dict(self) -> dict[str, StateValue]:
        state: dict[str, StateValue] = {"pl_mean": self.pl_mean.detach().clone()}
        for module, prefix in ((self.ada, "ada."), (None if self.ada else self.augment, "augment.")):
            if module is not None:
                state.update({prefix + k: v.detach().clone() for k, v in module.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, StateValue]) -> None:
        if "pl_mean" in state:
            self.pl_mean.copy_(torch.as_tensor(state["pl_mean"]))
        for module, prefix in ((self.ada, "ada."), (None if self.ada else self.augment, "augment.")):
            if module is not None:
                own = {k[len(prefix):]: torch.as_tensor(v) for k, v in state.items() if k.startswith(prefix)}
                if own:
                    module.load_state_dict(own)

    def metadata(self) -> dict[str, str]:
        return {"family": "stylegan2", "resolution": str(self.resolution), "channels": str(self.channels),
                "conditions": json.dumps([[f.name, f.type, f.size] for f in self.layout.fields])}


def preview_conditions(layout: ConditionLayout, n: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Conditions for a preview grid: every categorical field cycles its classes, covariates sit mid-range."""
    cond = {}
    for f in layout.fields:
        if f.type == "categorical":
            cond[f.name] = torch.arange(n, device=device) % f.size
        else:
            cond[f.name] = torch.zeros(n, device=device)
    return cond


def build_augment(cfg: StyleGAN2AugmentConfig) -> tuple[nn.Module | None, AdaController | None]:
    """The augmentation of a config, and ADA's controller when ``p`` adapts."""
    if cfg.kind == "none":
        return None, None
    if cfg.kind == "diffaugment":
        return DiffAugment(cfg.policy), None
    ops = PRESETS[cfg.ops] if isinstance(cfg.ops, str) else tuple(cfg.ops)
    pipe = AugmentPipe(ops, p=cfg.p)
    if cfg.target is None:
        return pipe, None
    return pipe, AdaController(pipe, target=cfg.target, interval=cfg.interval, speed_kimg=cfg.speed_kimg, p_max=cfg.p_max)


# =============================================================================================
# The family: networks from a config and a dataset, the generator of a run folder
# =============================================================================================
def condition_layout(config: TrainConfig, info: DatasetInfo) -> ConditionLayout:
    """The condition vector of the conditions the run trains on (``data.conditions``, default all)."""
    names = info.condition_names if config.data.conditions is None else list(config.data.conditions)
    return ConditionLayout.from_conditions([info.condition(n) for n in names])


def build_networks(model: StyleGAN2Config, info: DatasetInfo, layout: ConditionLayout,
                   seed: int = 0) -> tuple[Generator, Discriminator]:
    """``G`` and ``D`` (fp32, CPU) for images of ``info.shape``, initialised from ``seed`` alone."""
    channels, resolution = info.shape[0], info.shape[-1]
    g, d = model.generator, model.discriminator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(z_dim=g.z_dim, c_dim=layout.c_dim, w_dim=g.w_dim, img_resolution=resolution,
                      img_channels=channels, mapping_layers=g.mapping_layers,
                      mapping_lr_multiplier=g.mapping_lr_multiplier, w_avg_beta=g.w_avg_beta,
                      channel_base=g.channel_base, channel_max=g.channel_max, conv_clamp=model.conv_clamp)
        D = Discriminator(c_dim=layout.c_dim, img_resolution=resolution, img_channels=channels,
                          channel_base=d.channel_base, channel_max=d.channel_max, mapping_layers=d.mapping_layers,
                          mbstd_group_size=d.mbstd_group_size, mbstd_channels=d.mbstd_channels,
                          conv_clamp=model.conv_clamp)
    return G, D


def check(config: TrainConfig, info: DatasetInfo) -> None:
    """Fail before training, naming the field, when the dataset cannot train a StyleGAN2."""
    if info.spatial_dims != 2:
        raise ConfigError(f"'model.family'='stylegan2' trains 2D images but the dataset is {info.spatial_dims}D "
                          "(use an ldm_3d config for volumes)")
    _, h, w = info.shape
    if h != w or h < 8 or h & (h - 1):
        raise ConfigError(f"StyleGAN2 needs square images with a power-of-two size >= 8 (32 to 512 tested); "
                          f"the dataset's shape is {info.shape} (resize it in preprocessing)")
    names = info.condition_names if config.data.conditions is None else config.data.conditions
    for i, name in enumerate(names):
        if name not in info.condition_names:
            raise ConfigError(f"'data.conditions[{i}]'='{name}' is not a condition of the dataset "
                              f"(dataset.json has: {', '.join(info.condition_names) or 'none'})")
        if info.condition(name).type == "mask":
            keep = [n for n in info.condition_names if info.condition(n).type != "mask"]
            raise ConfigError(f"condition '{name}' is a mask, which StyleGAN2 cannot take; set 'data.conditions' "
                              f"to the categorical/continuous ones: [{', '.join(keep)}]")


def build_stage(req: StageRequest) -> StageSetup:
    if req.stage != "stylegan2":
        raise ConfigError(f"unknown StyleGAN2 stage '{req.stage}' (the family has one stage, 'stylegan2')")
    config, info = req.config, req.dataset.info
    model = config.model
    assert isinstance(model, StyleGAN2Config)
    layout = condition_layout(config, info)
    G, D = build_networks(model, info, layout, seed=config.seed)
    return StageSetup(task=StyleGAN2Task(model, config.stage("stylegan2"), layout, G), nets={"G": G, "D": D})


class StyleGAN2Generator:
    """Samples a trained StyleGAN2 run with its EMA generator (``imgsynth.training.task.ImageGenerator``).

    One forward pass per image: ``steps`` and ``guidance`` do not apply; ``truncation`` is the
    truncation ``psi`` (default: ``model.sampling.truncation_psi``), centred on the per-condition
    average ``w`` when ``model.sampling.class_truncation`` is on.
    """

    samplers = ("direct",)
    default_steps = None  # one forward pass of G: no steps, no guidance
    default_guidance = None

    def __init__(self, run: RunFolder, config: TrainConfig, device: torch.device | str) -> None:
        from safetensors.torch import load_file

        self.run, self.device = run, torch.device(device)
        model = config.model
        assert isinstance(model, StyleGAN2Config)
        self.sampling = model.sampling
        self.info: DatasetInfo = run.dataset_info()
        self.layout = condition_layout(config, self.info)
        self.condition_names = self.layout.names
        self.options = {"truncation": self.sampling.truncation_psi}
        path = run.weights_path("stylegan2", ema=True)
        tensors = load_file(str(path)) if path.is_file() else {}
        if not any(k.startswith("G.") for k in tensors):  # no EMA kept (ema_halflife_kimg: 0): live weights
            path = run.weights_path("stylegan2")
            if not path.is_file():
                raise ContractError("missing weights: the run has not finished a checkpoint of this stage", path=path)
            tensors = load_file(str(path))
        self.G, _ = build_networks(model, self.info, self.layout, seed=config.seed)
        self.G.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
        self.G.to(self.device).eval().requires_grad_(False)
        self.checkpoint = {"path": str(path.relative_to(run.root)), "sha256": sha256_file(path)}
        self._centre_cache: dict[tuple[float, ...], torch.Tensor] = {}

    @torch.no_grad()
    def sample(self, cond: Mapping[str, torch.Tensor], seeds: Sequence[int], *, sampler: str | None = None,
               steps: int | None = None, guidance: float | None = None, truncation: float | None = None) -> torch.Tensor:
        if sampler not in (None, *self.samplers):
            raise UsageError(f"unknown sampler '{sampler}' for this model (StyleGAN2 samples '{self.samplers[0]}')")
        if steps is not None:
            raise UsageError("--steps applies to diffusion models; StyleGAN2 draws each image in one pass")
        if guidance is not None:
            raise UsageError("--guidance applies to diffusion models; StyleGAN2 is steered with --truncation")
        psi = self.sampling.truncation_psi if truncation is None else float(truncation)
        if not 0.0 <= psi <= 2.0:
            raise UsageError(f"--truncation {psi} is outside [0, 2] (1 = none, 0.5-0.8 typical)")
        c = self.layout.encode({k: v.to(self.device) for k, v in cond.items()}, batch=len(seeds), device=self.device)
        w_avg = self._centres(c) if psi != 1 and self.sampling.class_truncation and self.G.c_dim > 0 else None
        images = self.G.sample(c, seeds=seeds, truncation_psi=psi, truncation_cutoff=self.sampling.truncation_cutoff,
                               class_truncation=False, w_avg=w_avg, noise_mode=self.sampling.noise_mode)
        images = images.float().clamp(-1.0, 1.0)
        assert tuple(images.shape) == (len(seeds), *self.info.shape), images.shape
        return images


    def _centres(self, c: torch.Tensor) -> torch.Tensor:
        """Per-condition truncation centres [B, w_dim], each distinct condition computed once per generator."""
        keys = [tuple(row) for row in c.cpu().tolist()]
        missing = sorted(set(keys) - set(self._centre_cache))
        if missing:
            rows = torch.tensor(missing, dtype=c.dtype, device=c.device)
            for key, centre in zip(missing, self.G.condition_w_avg(rows, num_samples=self.sampling.w_avg_samples),
                                   strict=True):
                self._centre_cache[key] = centre
        return torch.stack([self._centre_cache[k] for k in keys])


def load_generator(run: RunFolder, device: torch.device) -> StyleGAN2Generator:
    import yaml

    from imgsynth.config import config_from_dict

    config = config_from_dict(yaml.safe_load(run.config_path.read_text(encoding="utf-8")), source=run.config_path)
    assert isinstance(config, TrainConfig)
    return StyleGAN2Generator(run, config, device)


STYLEGAN2 = register_family(
    ModelFamily(
        name="stylegan2",
        stages=lambda config: config.model.stage_names(),
        build_stage=build_stage,
        load_generator=load_generator,
        check=check,
    )
)
