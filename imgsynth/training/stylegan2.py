"""StyleGAN2 losses and regularisers.

* Non-saturating logistic loss (Goodfellow et al. 2014): ``L_G = softplus(-D(G(z)))``,
  ``L_D = softplus(D(G(z))) + softplus(-D(x))``.
* R1 (Mescheder et al. 2018, eq. 9): ``gamma / 2 * ||grad_x D(x)||^2`` on reals, lazily every
  ``r1_interval`` steps with the penalty scaled by the interval (StyleGAN2 sec. 3.1).
* Path-length regularisation (StyleGAN2 eq. 4): ``(||J_w^T y||_2 - a)^2`` with
  ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running mean of the lengths.

:class:`StyleGAN2Task` runs them as the phases of the shared training loop
(``imgsynth.training.loop``); the family registration (networks from a config and a dataset, the
generator of a run folder) is in ``imgsynth.training.stylegan2_family``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from imgsynth.models.stylegan2 import ConditionLayout, Generator
from imgsynth.models.stylegan2_config import StyleGAN2AugmentConfig, StyleGAN2Config
from imgsynth.training.augment import PRESETS, AdaController, AugmentPipe, DiffAugment
from imgsynth.training.task import Batch, Phase, StateValue, StepContext, Task

if TYPE_CHECKING:
    from accelerate import Accelerator

    from imgsynth.training.config import StageConfig


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
            fake = self._generate(G, c, ctx, "G_main", update_w_avg=True)
            logits = self._discriminate(D, fake, c, ctx, "G_main:augment")
            loss = g_nonsaturating_loss(logits).mean()
            return loss, {"loss": float(loss), "fake_score": float(logits.mean())}
        if phase.name == "G_reg":
            n = max(1, len(real) // self.cfg.loss.pl_batch_shrink)
            with torch.autocast(ctx.device.type, enabled=False):
                fake, ws = self._generate(G, c[:n], ctx, "G_reg", return_ws=True)
                y, _ = keyed_draws(ctx, "G_reg:pl_noise", fake[0].numel(), 0)
                y = y[:n].reshape(fake.shape) / math.sqrt(fake.shape[2] * fake.shape[3])
                lengths = path_lengths(fake, ws, y)
                self.pl_mean.copy_(self.pl_mean.lerp(ctx.reduce_mean(lengths.detach().mean()), self.cfg.loss.pl_decay))
                penalty = (lengths - self.pl_mean).square()
                # fake * 0 keeps every weight in the graph (DDP expects a gradient for each).
                loss = (fake[:, 0, 0, 0] * 0 + penalty * self.cfg.loss.pl_weight).mean() * phase.interval
            return loss, {"loss": float(loss), "pl_length": float(lengths.mean()), "pl_mean": float(self.pl_mean)}
        if phase.name == "D_main":
            with torch.no_grad():
                fake = self._generate(G, c, ctx, "D_main")
            fake_logits = self._discriminate(D, fake, c, ctx, "D_main:augment_fake")
            real_logits = self._discriminate(D, real, c, ctx, "D_main:augment_real")
            if self.ada is not None:
                self.ada.accumulate(real_logits)
            loss = d_logistic_loss(real_logits, fake_logits).mean()
            return loss, {"loss": float(loss), "real_score": float(real_logits.mean()),
                          "fake_score": float(fake_logits.mean())}
        if phase.name == "D_reg":
            with torch.autocast(ctx.device.type, enabled=False):
                x = real.detach().float().requires_grad_(True)
                logits = self._discriminate(D, x, c, ctx, "D_reg:augment")
                r1 = r1_penalty(x, logits)
                loss = (logits[:, 0] * 0 + r1 * (self.r1_gamma / 2)).mean() * phase.interval
            return loss, {"loss": float(loss), "r1": float(r1.mean())}
        raise ValueError(f"unknown phase {phase.name!r}")

    # -- per-step hooks, previews, state ------------------------------------------------------
    def end_step(self, ctx: StepContext) -> dict[str, float]:
        logs: dict[str, float] = {}
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
                "conditions": json.dumps([list(f) for f in self.layout.fields])}


def preview_conditions(layout: ConditionLayout, n: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Conditions for a preview grid: every categorical field cycles its classes, covariates sit mid-range."""
    cond = {}
    for name, kind, width in layout.fields:
        if kind == "categorical":
            cond[name] = torch.arange(n, device=device) % width
        else:
            cond[name] = torch.zeros(n, device=device)
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
