"""Sampling a trained latent diffusion model, and the LDM's :class:`ImageGenerator`.

Samplers: ``ddpm`` (ancestral, Ho et al. Alg. 2), ``ddim`` (Song et al. eq. 12, eta 0) and
``dpm++`` (DPM-Solver++(2M), Lu et al. 2022, Alg. 2) through diffusers' schedulers built from the
training noise schedule; ``euler`` for rectified flow (MONAI ``RFlowScheduler.step``).
Classifier-free guidance: ``out = out_uncond + g * (out_cond - out_uncond)`` (Ho & Salimans eq. 6).

Every random number of image b comes from generators seeded by its own seed, so an image does
not depend on the batch it was drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from monai.networks.schedulers import RFlowScheduler
from safetensors import safe_open
from safetensors.torch import load_file

from imgsynth.contracts import DatasetInfo, RunFolder
from imgsynth.errors import ContractError, UsageError
from imgsynth.models.autoencoder import KLAutoencoder, build_autoencoder, latent_shape
from imgsynth.models.conditioning import FieldSpec
from imgsynth.models.config import LDMConfig, NoiseConfig
from imgsynth.models.diffusion import ConditionalUNet, NoiseProcess, build_unet
from imgsynth.training.task import KeyedRandom
from imgsynth.utils.io import sha256_file

DDPM_SAMPLERS = ("dpm++", "ddim", "ddpm")
FLOW_SAMPLERS = ("euler",)


def samplers_for(noise: NoiseConfig) -> tuple[str, ...]:
    """Sampler names for a noise process, the default first."""
    names = FLOW_SAMPLERS if noise.kind == "rflow" else DDPM_SAMPLERS
    return (noise.default_sampler, *[n for n in names if n != noise.default_sampler])


def guided(
    model: ConditionalUNet, cond: Mapping[str, torch.Tensor], guidance: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(x_t, t) -> prediction`` with classifier-free guidance (one batched pass for both branches)."""
    conditional = bool(model.fields) and guidance != 1.0

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t = t.expand(b) if t.ndim == 0 else t
        if not conditional:
            keep = torch.ones(b, dtype=torch.bool, device=x.device)
            return model(x, t, cond, keep)
        both = {k: torch.cat([v, v]) for k, v in cond.items()}
        keep = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(x.device)
        out_c, out_u = model(torch.cat([x, x]), torch.cat([t, t]), both, keep).float().chunk(2)
        return out_u + guidance * (out_c - out_u)

    return predict


@torch.no_grad()
def sample_latents(
    model: ConditionalUNet,
    process: NoiseProcess,
    x_T: torch.Tensor,
    cond: Mapping[str, torch.Tensor],
    *,
    sampler: str,
    steps: int,
    guidance: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Integrate from noise ``x_T [B, L, *latent]`` to a clean latent with ``steps`` model calls."""
    predict = guided(model, cond, guidance)
    device = x_T.device
    if process.cfg.kind == "rflow":
        if sampler not in FLOW_SAMPLERS:
            raise UsageError(f"sampler '{sampler}' does not apply to rectified flow (use: {', '.join(FLOW_SAMPLERS)})")
        flow = RFlowScheduler(
            num_train_timesteps=process.T,
            use_discrete_timesteps=False,
            use_timestep_transform=process.cfg.rflow_timestep_transform,
            spatial_dim=process.spatial_dims,
        )
        numel = int(torch.tensor(x_T.shape[2:]).prod())
        flow.set_timesteps(steps, device=device, input_img_size_numel=numel)
        ts = flow.timesteps.float()
        nexts = torch.cat([ts[1:], torch.zeros(1, device=ts.device)])
        x = x_T
        for t, t_next in zip(ts, nexts, strict=True):
            v = predict(x, t.float().to(device))
            x, _ = flow.step(v, float(t), x, float(t_next))
        return x
    if sampler not in DDPM_SAMPLERS:
        raise UsageError(f"sampler '{sampler}' does not apply to DDPM models (use: {', '.join(DDPM_SAMPLERS)})")
    base = process.ddpm.config
    if sampler == "ddpm":
        sched = DDPMScheduler.from_config(base)
    elif sampler == "ddim":
        sched = DDIMScheduler.from_config(base, timestep_spacing="trailing", set_alpha_to_one=True)
    else:
        sched = DPMSolverMultistepScheduler.from_config(
            base, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
        )
    sched.set_timesteps(steps, device=device)
    x = x_T * sched.init_noise_sigma
    for t in sched.timesteps:
        out = predict(sched.scale_model_input(x, t), t.to(device))
        kwargs = {"generator": list(generators)} if sampler == "ddpm" and generators is not None else {}
        x = sched.step(out.to(x.dtype), t, x, **kwargs).prev_sample
    return x


def item_noise(seeds: Sequence[int], shape: Sequence[int], device: torch.device) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Initial noise ``[B, *shape]`` and per-item generators for later steps, from the seeds alone."""
    rng = KeyedRandom(0, seeds, device)
    noise = rng.randn(shape, "x_T")
    return noise, [rng.generator(s, "steps") for s in rng.keys]


class LDMGenerator:
    """Samples a trained LDM run with its EMA weights (``imgsynth.training.task.ImageGenerator``)."""

    def __init__(self, run: RunFolder, config: LDMConfig, conditions: Sequence[str] | None, device: torch.device) -> None:
        self.run, self.cfg, self.device = run, config, torch.device(device)
        self.info: DatasetInfo = run.dataset_info()
        names = self.info.condition_names if conditions is None else list(conditions)
        self.fields = [FieldSpec.from_condition(self.info.condition(n)) for n in names]
        self.condition_names = [f.name for f in self.fields]
        self.samplers = samplers_for(config.noise)
        self.default_steps = config.noise.default_steps
        self.default_guidance = config.conditioning.guidance
        ae_path, unet_path = run.weights_path("autoencoder", ema=True), run.weights_path("diffusion", ema=True)
        for path in (ae_path, unet_path):
            if not path.is_file():
                raise ContractError("missing weights: the run has not finished a checkpoint of this stage", path=path)
        self.autoencoder: KLAutoencoder = build_autoencoder(config, self.info.channels)
        self.autoencoder.load_state_dict(_prefixed(load_file(str(ae_path)), "autoencoder"))
        self.unet: ConditionalUNet = build_unet(config, self.fields)
        self.unet.load_state_dict(_prefixed(load_file(str(unet_path)), "unet"))
        self.autoencoder.to(self.device).eval()
        self.unet.to(self.device).eval()
        self.scale_factor = read_scale_factor(unet_path)
        self.process = NoiseProcess(config.noise, config.spatial_dims)
        self.latent_shape = latent_shape(config, self.info.shape)
        self.checkpoint = {"path": str(unet_path.relative_to(run.root)), "sha256": sha256_file(unet_path),
                           "autoencoder_sha256": sha256_file(ae_path)}

    def resolve_settings(self, sampler: str | None, steps: int | None, guidance: float | None) -> tuple[str, int, float]:
        """The sampler, steps and guidance a call with these arguments uses (defaults filled in)."""
        sampler = sampler or self.samplers[0]
        if sampler not in self.samplers:
            raise UsageError(f"unknown sampler '{sampler}' for this model (choose from {', '.join(self.samplers)})")
        steps = steps or (self.process.T if sampler == "ddpm" else self.default_steps)
        return sampler, steps, self.default_guidance if guidance is None else guidance

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images: ``D(z / scale_factor)`` (the diffusion model works on ``scale * z``)."""
        return self.autoencoder.decode(z / self.scale_factor).clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample(
        self,
        cond: Mapping[str, torch.Tensor],
        seeds: Sequence[int],
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        sampler, steps, guidance = self.resolve_settings(sampler, steps, guidance)
        x_T, gens = item_noise(seeds, self.latent_shape, self.device)
        cond = {k: v.to(self.device) for k, v in cond.items()}
        z = sample_latents(self.unet, self.process, x_T, cond, sampler=sampler, steps=steps, guidance=guidance, generators=gens)
        images = self.decode(z.float())
        expected = (len(seeds), *self.info.shape)
        assert tuple(images.shape) == expected, f"decoded {tuple(images.shape)}, expected {expected}"
        return images


def _prefixed(state: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}."
    out = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise ContractError(f"weights hold no '{name}' network")
    return out


def read_scale_factor(path: Path) -> float:
    """The latent scale factor stored in a diffusion weights file's header."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "latent_scale_factor" not in meta:  # a checkpoint's ema.safetensors: the value is in its state.json
        import json

        state = path.parent / "state.json"
        saved = json.loads(state.read_text(encoding="utf-8")).get("task", {}) if state.is_file() else {}
        if saved.get("latent_scale_factor") is not None:
            return float(saved["latent_scale_factor"])
        raise ContractError("weights lack 'latent_scale_factor' metadata (not a diffusion stage file?)", path=path)
    return float(meta["latent_scale_factor"])
