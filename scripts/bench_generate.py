"""Generation throughput, measured side by side in one run: images/s by sampler and step count
(DPM-Solver++ 20 vs DDIM 50 vs DDPM 1000) and by batch size, plus what writing each format costs.

    python scripts/bench_generate.py                 # CPU: ldm_2d_tiny architecture at 32x32, ~2 minutes
    python scripts/bench_generate.py --device cuda --size 64 --images 256

The model has the ``ldm_2d_tiny`` architecture, trained for one step on synthetic blobs (sampling
speed does not depend on the weights). Every figure comes from the generation mini-batch entry
(``generate_batch``: EMA weights, ``torch.inference_mode``, bf16 on GPU); a warm-up batch runs
first. Ratios are against DDPM 1000 steps and against batch size 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsynth.config import load_config  # noqa: E402
from imgsynth.contracts import Condition, DatasetInfo, Intensity, save_item, write_dataset  # noqa: E402
from imgsynth.generate import SampleSettings, generate, generate_batch, load_generator, plan  # noqa: E402


def tiny_dataset(root: Path, size: int, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij"))
    rows = []
    for i in range(n):
        label = ["normal", "pneumonia"][i % 2]
        d2 = ((grid - rng.uniform(-0.5, 0.5, (2, 1, 1))) ** 2).sum(0)
        img = np.clip(np.exp(-d2 / 0.1) * 2 - 1, -1, 1).astype(np.float32)[None]
        rows.append({"id": f"i{i:03d}", "path": save_item(root, f"items/i{i:03d}.npy", img), "split": "train",
                     "subject": f"s{i}", "label": label})
    info = DatasetInfo(spatial_dims=2, shape=[1, size, size], spacing=[1.0, 1.0],
                       intensity=Intensity(kind="ct_window", low=-1000, high=1000, unit="HU"),
                       conditions=[Condition(name="label", type="categorical", categories=["normal", "pneumonia"])])
    write_dataset(root, info, rows)
    return root


def train_run(root: Path, size: int) -> Path:
    from imgsynth.training.run import train

    config = load_config("ldm_2d_tiny", [
        "stages.autoencoder.kimg=0.004", "stages.autoencoder.batch=4", "stages.diffusion.kimg=0.004",
        "stages.diffusion.batch=4", "loop.checkpoint_kimg=0.004", "loop.val_kimg=null", "loop.sample_kimg=null",
        "loop.progress=false", "model.latent_scale_items=8", "model.noise.num_train_timesteps=1000",
    ])
    train(tiny_dataset(root / "ds", size), root / "run", config)
    return root / "run"


def images_per_second(gen, settings: SampleSettings, out: Path, n: int, batch: int) -> float:  # noqa: ANN001
    requests = plan([gen.info.condition("label")], n, {}, seed=0)
    start = time.perf_counter()
    for i in range(0, n, batch):
        results = generate_batch(gen, requests[i : i + batch], out, settings)
        assert all(r.error is None for r in results), results[0].error
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=32, help="image size (pixels)")
    p.add_argument("--images", type=int, default=16, help="images per measurement (DDPM 1000: an eighth)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable figures on shared cores; "
                   "0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    try:
        run = train_run(tmp, args.size)
        gen = load_generator(run, args.device)
        precision = "bf16" if torch.device(args.device).type == "cuda" else "fp32"
        n = args.images
        warm = SampleSettings(sampler="dpm++", steps=2, formats=(), precision=precision)
        images_per_second(gen, warm, tmp / "warm", 16, 16)  # warm-up: first calls allocate and pick kernels
        print(f"device {args.device} ({precision}), {args.size}x{args.size}, ldm_2d_tiny architecture, "
              f"torch threads {torch.get_num_threads()}")

        print("\nby sampler (batches of up to 16, guidance 2: two UNet passes per step)")
        print(f"{'sampler':<10}{'steps':>6}{'images':>8}{'images/s':>12}{'vs DDPM 1000':>15}")
        rows = []
        for sampler, steps, count in (("dpm++", 20, n), ("ddim", 50, n), ("ddpm", 1000, max(2, n // 8))):
            s = SampleSettings(sampler=sampler, steps=steps, formats=(), precision=precision)
            rows.append((sampler, steps, count, images_per_second(gen, s, tmp / "s", count, 16)))
        base = rows[-1][3]
        for sampler, steps, count, ips in rows:
            print(f"{sampler:<10}{steps:>6}{count:>8}{ips:>12.3f}{ips / base:>14.1f}x")

        print("\nby batch size (dpm++, 20 steps)")
        print(f"{'batch':>6}{'images/s':>12}{'vs batch 1':>12}")
        base = None
        for batch in (1, 4, 16, 64):
            s = SampleSettings(sampler="dpm++", steps=20, formats=(), precision=precision)
            ips = images_per_second(gen, s, tmp / "b", max(n, batch), batch)
            base = base or ips
            print(f"{batch:>6}{ips:>12.3f}{ips / base:>11.2f}x")

        print("\nwriting formats (dpm++ 20 steps, batch 16, whole command incl. manifest)")
        print(f"{'formats':<18}{'images/s':>12}")
        for formats in ((), ("png",), ("png", "nifti"), ("png", "nifti", "dicom")):
            out = tmp / ("f-" + "-".join(formats or ("none",)))
            start = time.perf_counter()
            generate(run, out, n=n, sampler="dpm++", steps=20, batch_size=16, formats=formats, device=args.device)
            print(f"{','.join(formats) or 'npy only':<18}{n / (time.perf_counter() - start):>12.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
