"""Benchmark: the shared training loop vs a bare hand-written loop, and fast vs 1000-step sampling.

    python scripts/bench_train.py [--steps 30] [--reps 3] [--device cpu|cuda] [--ddpm-steps 1000]

1. Loop overhead. The same MONAI UNet (``ldm_2d_tiny``'s diffusion stage: frozen autoencoder
   encoding 32x32 chest X-rays, conditional UNet, v-prediction, Adam, grad clipping, EMA) trained
   on the same batches, once through ``imgsynth.training.loop.training_loop`` and once through a
   plain PyTorch loop written out below. Each variant runs in its own process (so peak memory is
   its own), alternating A/B ``--reps`` times; the figure is the median time per step after
   warm-up: process CPU time on a CPU (one thread; immune to other load on a shared machine) and
   wall time on CUDA (synchronised); and the peak resident memory (CPU) or peak allocated memory
   (CUDA).
2. Sampling. Images/s of DPM-Solver++ with 20 steps vs DDPM with 1000 steps (guidance 2, decode
   included), same networks and batch.

Data: PneumoniaMNIST from ``../shared/data/medmnist`` when present (MedMNIST v2, Yang et al. 2023,
CC BY 4.0), else random images of the same shape (the timing does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
BATCH = 64


def _dataset(root: Path):  # noqa: ANN202
    from imgsynth.contracts import Condition, DatasetInfo, Intensity, save_item, write_dataset
    from imgsynth.data.medmnist import import_medmnist

    if SHARED.is_file():
        return import_medmnist(SHARED, root, max_per_split=1024)
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(1024):
        rows.append({"id": f"x{i}", "path": save_item(root, f"items/x{i}.npy", rng.uniform(-1, 1, (1, 32, 32)).astype("float32")),
                     "split": "train", "subject": f"x{i}", "label": ["normal", "pneumonia"][i % 2]})
    info = DatasetInfo(spatial_dims=2, shape=[1, 32, 32], intensity=Intensity(kind="minmax", low=0, high=255),
                       conditions=[Condition(name="label", type="categorical", categories=["normal", "pneumonia"])])
    return write_dataset(root, info, rows)


def _setup(device: str):  # noqa: ANN202
    import torch

    from imgsynth.config import load_config
    from imgsynth.models.autoencoder import build_autoencoder
    from imgsynth.models.conditioning import FieldSpec
    from imgsynth.models.diffusion import build_unet

    config = load_config("ldm_2d_tiny", ["loop.mixed_precision=no" if device == "cpu" else "loop.mixed_precision=bf16",
                                         f"stages.diffusion.batch={BATCH}"])
    torch.manual_seed(0)
    ae = build_autoencoder(config.model, 1)
    fields = [FieldSpec("label", "categorical", 2)]
    unet = build_unet(config.model, fields)
    return config, ae, unet, fields


def worker(mode: str, steps: int, device: str, out: Path) -> None:
    """One timed variant in this process; writes {step_seconds, peak_mb} to ``out``."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from imgsynth.data.loading import item_dataset
    from imgsynth.training.data import make_train_loader

    tmp = Path(tempfile.mkdtemp())
    ds = _dataset(tmp / "ds")
    config, ae, unet, fields = _setup(device)
    items = item_dataset(ds, "train")
    loader = make_train_loader(items, seed=0, batch=BATCH, batch_gpu=BATCH, pin_memory=device == "cuda")
    window = 5
    times: list[float] = []
    clock = _clock(device)
    if mode == "ours":
        from accelerate import Accelerator

        from imgsynth.contracts import RunFolder
        from imgsynth.training.ldm import DiffusionTask
        from imgsynth.training.loop import training_loop
        from imgsynth.training.metrics import Running

        class Sink:
            last = clock()
            last_step = 0

            def log(self, record: dict) -> None:
                if "seconds" in record:  # one record per window of steps (the last one may be shorter)
                    now = clock()
                    if int(record["step"]) - Sink.last_step == window:  # full windows only, as in the bare loop
                        times.append((now - Sink.last) / window)
                    Sink.last, Sink.last_step = now, int(record["step"])

            def close(self) -> None:
                pass

        cfg = config.model_copy(deep=True)
        stage = cfg.stage("diffusion").model_copy(update={"kimg": steps * BATCH / 1000})
        loop = cfg.loop.model_copy(update={"checkpoint_kimg": 1e9, "val_kimg": None, "sample_kimg": None,
                                           "log_kimg": window * BATCH / 1000, "progress": False})
        acc = Accelerator(cpu=device == "cpu", mixed_precision=cfg.loop.mixed_precision)
        task = DiffusionTask(cfg, ds.info, ae, 1.0, fields, {"label": torch.tensor([0, 1])})
        run = RunFolder(tmp / "run")
        assert Running  # the loop's own running means are part of what is timed
        training_loop(task=task, nets={"unet": unet}, train_loader=loader, val_loader=None, accelerator=acc, run=run,
                      stage=stage, loop=loop, seed=0, sink=Sink())
        times = times[1:]  # first window: warm-up
    else:
        times = bare_loop(config, ae, unet, loader, steps, device, window, clock)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"step_seconds": statistics.median(times), "step_min": min(times), "peak_mb": peak,
                               "windows": len(times)}))


def _clock(device: str):  # noqa: ANN202
    """Seconds: process CPU time on CPU, synchronised wall time on CUDA."""
    if device == "cpu":
        return time.process_time
    import torch

    def wall() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    return wall


def bare_loop(config, ae, unet, loader, steps: int, device: str, window: int, clock) -> list[float]:  # noqa: ANN001
    """What one would write by hand: encode, noise, predict v, MSE, backward, clip, Adam, EMA."""
    import copy

    import torch
    from diffusers import DDPMScheduler

    dev = torch.device(device)
    ae, unet = ae.to(dev).eval().requires_grad_(False), unet.to(dev).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    s = config.stage("diffusion")
    opt = torch.optim.Adam(unet.parameters(), lr=s.lr, betas=s.betas)
    n = config.model.noise
    sched = DDPMScheduler(num_train_timesteps=n.num_train_timesteps, beta_start=n.beta_start, beta_end=n.beta_end,
                          beta_schedule="scaled_linear", prediction_type=n.prediction, clip_sample=False)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=device == "cuda")
    it = iter(loader)
    times, tick = [], clock()
    for step in range(steps):
        batch = next(it)
        x, label = batch["image"].to(dev), batch["cond"]["label"].to(dev)
        with torch.no_grad(), amp:
            mu, sigma = ae.encode(x)
            z0 = (mu + sigma * torch.randn_like(sigma)).float()
        noise = torch.randn_like(z0)
        t = torch.randint(0, n.num_train_timesteps, (z0.shape[0],), device=dev)
        keep = torch.rand(z0.shape[0], device=dev) >= config.model.conditioning.dropout
        with amp:
            pred = unet(sched.add_noise(z0, noise, t), t, {"label": label}, keep)
        loss = (pred.float() - sched.get_velocity(z0, noise, t)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - 0.999)
        loss.item()  # what a logging line costs
        if (step + 1) % window == 0:
            now = clock()
            times.append((now - tick) / window)
            tick = now
    return times[1:]


def sampling(device: str, ddpm_steps: int, batch: int) -> dict[str, float]:
    import torch

    from imgsynth.models.diffusion import NoiseProcess
    from imgsynth.models.sampling import item_noise, sample_latents

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    config, ae, unet, _ = _setup(device)
    dev, clock = torch.device(device), _clock(device)
    ae, unet = ae.to(dev).eval(), unet.to(dev).eval()
    process = NoiseProcess(config.model.noise, 2)
    cond = {"label": torch.tensor([i % 2 for i in range(batch)], device=dev)}
    out = {}
    for name, sampler, steps in (("dpm++20", "dpm++", 20), (f"ddpm{ddpm_steps}", "ddpm", ddpm_steps)):
        x_T, gens = item_noise(list(range(batch)), (3, 8, 8), dev)
        start = clock()
        with torch.no_grad():
            z = sample_latents(unet, process, x_T, cond, sampler=sampler, steps=steps, guidance=2.0, generators=gens)
            ae.decode(z)
        out[name] = batch / (clock() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=8)
    p.add_argument("--worker", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], args.steps, args.device, Path(args.worker[1]))
        return
    results: dict[str, list[dict]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for mode in ("bare", "ours") if rep % 2 == 0 else ("ours", "bare"):
                out = Path(tmp) / f"{mode}{rep}.json"
                subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--device", args.device,
                                "--worker", mode, str(out)], check=True)
                results[mode].append(json.loads(out.read_text()))
    ours = statistics.median(r["step_seconds"] for r in results["ours"])
    bare = statistics.median(r["step_seconds"] for r in results["bare"])
    # Interference from other work only ever adds time: the fastest window is the cleanest figure.
    ours_min = min(r["step_min"] for r in results["ours"])
    bare_min = min(r["step_min"] for r in results["bare"])
    mem_o = max(r["peak_mb"] for r in results["ours"])
    mem_b = max(r["peak_mb"] for r in results["bare"])
    data = "PneumoniaMNIST (MedMNIST v2, CC BY 4.0)" if SHARED.is_file() else "random 32x32 images"
    print(f"device {args.device}; data {data}; ldm_2d_tiny diffusion stage, batch {BATCH}, {args.steps} steps x {args.reps} runs each")
    kind = "CPU time" if args.device == "cpu" else "wall time"
    print(f"step {kind}  median  ours {ours * 1000:8.1f} ms   bare {bare * 1000:8.1f} ms   overhead {100 * (ours / bare - 1):+.1f}%")
    print(f"step {kind}  fastest ours {ours_min * 1000:8.1f} ms   bare {bare_min * 1000:8.1f} ms   "
          f"overhead {100 * (ours_min / bare_min - 1):+.1f}% (target <= 5%)")
    print("per run (ms): ours " + " ".join(f"{r['step_seconds'] * 1000:.0f}" for r in results["ours"])
          + " | bare " + " ".join(f"{r['step_seconds'] * 1000:.0f}" for r in results["bare"]))
    print(f"peak memory ours {mem_o:8.0f} MB   bare {mem_b:8.0f} MB   ratio {mem_o / mem_b:.3f}")
    s = sampling(args.device, args.ddpm_steps, args.sample_batch)
    fast, slow = s["dpm++20"], s[f"ddpm{args.ddpm_steps}"]
    print(f"sampling    DPM-Solver++ 20 steps {fast:8.2f} img/s   DDPM {args.ddpm_steps} steps {slow:8.3f} img/s   "
          f"speed-up x{fast / slow:.1f} (batch {args.sample_batch}, guidance 2, decode included; {kind})")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
