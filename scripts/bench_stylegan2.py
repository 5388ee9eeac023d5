"""StyleGAN2 on the shared training loop vs a bare hand-written loop: step time and peak memory by resolution.

    python scripts/bench_stylegan2.py                     # CPU: 32, 64, 128 px, ~3 minutes on 2 cores; GPU: 32-512 px
    python scripts/bench_stylegan2.py --resolutions 32 64 128 256 512 --batch 16 --channel-max 64

Both sides train the same networks with the same losses (``StyleGAN2Task.loss``: all four phases,
ADA, lazy R1 and path length) on the same images, side by side in this process:

* **loop**: ``imgsynth.training.run.train`` (accelerate, stream loader, EMA, metrics, checkpoint),
  timed by the loop's own ``seconds`` between two log records;
* **bare**: ``for step: for phase: loss.backward(); opt.step()`` + a hand-written EMA and ADA update,
  over batches already in memory.

Each side runs ``--warmup`` steps, then ``--steps`` timed steps (both multiples of 16, so the lazy
regularisation phases fall alike); the best of ``--repeats`` runs counts. Peak memory is the
CUDA allocator's peak on a GPU, and the process's peak resident memory (sampled every 2 ms) on
CPU. Images: PneumoniaMNIST (``../shared/data``) resized to each resolution when present, else
a fixed random set.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imgsynth.config import load_config  # noqa: E402
from imgsynth.contracts import Condition, Dataset, DatasetInfo, Intensity, save_item, write_dataset  # noqa: E402
from imgsynth.training.stylegan2 import StyleGAN2Task, build_networks, condition_layout  # noqa: E402
from imgsynth.training.task import KeyedRandom, StepContext  # noqa: E402

PNEUMONIA = REPO.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or resident set size sampled every 2 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def make_dataset(root: Path, resolution: int, n: int) -> Dataset:
    """``n`` training images at ``resolution`` (chest X-rays when available) with their labels."""
    if PNEUMONIA.is_file():
        from imgsynth.data.medmnist import import_medmnist

        ds = import_medmnist(PNEUMONIA, root, size=resolution, max_per_split=n)
        return ds
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        item = f"train-{i:04d}"
        img = np.tanh(rng.normal(0, 1, (1, resolution, resolution))).astype(np.float32)
        rows.append({"id": item, "path": save_item(root, f"items/{item}.npy", img), "split": "train", "subject": item,
                     "label": ["a", "b"][i % 2]})
    info = DatasetInfo(spatial_dims=2, shape=[1, resolution, resolution], intensity=Intensity(kind="none"),
                       conditions=[Condition(name="label", type="categorical", categories=["a", "b"])])
    return write_dataset(root, info, rows)


def bench_config(args: argparse.Namespace, steps: int):
    b = args.batch
    return load_config("stylegan2_2d_tiny", [
        f"model.generator.channel_base={args.channel_base}", f"model.generator.channel_max={args.channel_max}",
        f"model.discriminator.channel_base={args.channel_base}", f"model.discriminator.channel_max={args.channel_max}",
        f"stages.stylegan2.batch={b}", f"stages.stylegan2.kimg={steps * b / 1000}",
        f"loop.log_kimg={16 * b / 1000}", "loop.checkpoint_kimg=1000000", "loop.sample_kimg=null", "loop.val_kimg=null",
        "loop.progress=false", f"loop.cpu={str(args.device == 'cpu').lower()}",
        f"loop.mixed_precision='{args.precision}'", "data.val_split=null",
    ])


def run_loop(dataset: Dataset, args: argparse.Namespace, device: torch.device) -> tuple[float, float, int]:
    """Wall and CPU seconds per step over the timed window, and peak memory, of ``imgsynth.training.run.train``.

    The window runs from the loop's log record after the warm-up to its log record after the
    timed steps (the clocks are read as the loop calls its ``_log``).
    """
    from accelerate.state import AcceleratorState, GradientState

    import imgsynth.training.loop as loop_module
    from imgsynth.training.run import train

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    work = Path(tempfile.mkdtemp(prefix="bench-sg2-"))
    marks: dict[int, tuple[float, float]] = {}
    original = loop_module._log

    def timed_log(sink, accelerator, stage, state, *rest, **kw):  # noqa: ANN001, ANN202
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks[state.step] = (time.perf_counter(), time.process_time())
        return original(sink, accelerator, stage, state, *rest, **kw)

    loop_module._log = timed_log
    try:
        with PeakMemory(device) as mem:
            train(dataset.root, work / "run", bench_config(args, args.warmup + args.steps))
    finally:
        loop_module._log = original
        shutil.rmtree(work, ignore_errors=True)
    (w0, c0), (w1, c1) = marks[args.warmup], marks[args.warmup + args.steps]
    return (w1 - w0) / args.steps, (c1 - c0) / args.steps, mem.peak


def run_bare(dataset: Dataset, args: argparse.Namespace, device: torch.device) -> tuple[float, float, int]:
    """The same networks, task losses, optimizers, EMA and ADA in a hand-written loop."""
    config = bench_config(args, args.warmup + args.steps)
    stage = config.stage("stylegan2")
    with PeakMemory(device) as mem:
        layout = condition_layout(config, dataset.info)
        G, D = build_networks(config.model, dataset.info, layout, seed=config.seed)
        G, D = G.to(device).train(), D.to(device).train()
        G_ema = build_networks(config.model, dataset.info, layout, seed=config.seed)[0].to(device).eval()
        G_ema.load_state_dict(G.state_dict())
        G_ema.requires_grad_(False)
        ema_params, live_params = list(G_ema.parameters()), list(G.parameters())
        task = StyleGAN2Task(config.model, stage, layout, G)
        task.pl_mean = task.pl_mean.to(device)
        task.augment.to(device)
        task.ada.to(device)
        nets = {"G": G, "D": D}
        opts = task.make_optimizers(nets)
        rows = dataset.split("train")
        images = torch.stack([torch.from_numpy(dataset.load(r)) for r in rows]).to(device)
        labels = torch.tensor([dataset.info.conditions[0].categories.index(r["label"]) for r in rows], device=device)
        b = args.batch
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
        total = args.warmup + args.steps
        trainable = None
        for step in range(total):
            if step == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, cpu_start = time.perf_counter(), time.process_time()
            idx = torch.arange(step * b, (step + 1) * b) % len(rows)
            batch = {"image": images[idx], "cond": {"label": labels[idx]}, "key": torch.arange(step * b, (step + 1) * b)}
            for phase in task.phases():
                if not phase.due(step, step * b / 1000):
                    continue
                if trainable != phase.trains:
                    G.requires_grad_("G" in phase.trains)
                    D.requires_grad_("D" in phase.trains)
                    trainable = phase.trains
                ctx = StepContext(step=step, kimg=step * b / 1000, micro=0, accum=1, phase=phase,
                                  rng=KeyedRandom(config.seed, batch["key"], device), device=device)
                with autocast:
                    loss, _ = task.loss(nets, batch, ctx)
                loss.backward()
                opts[phase.optimizer].step()
                opts[phase.optimizer].zero_grad(set_to_none=True)
            with torch.no_grad():  # EMA with ramp-up, as StyleGAN2-ADA, in one fused lerp
                nimg = (step + 1) * b
                halflife = min(stage.ema_halflife_kimg * 1000, nimg * (stage.ema_rampup or math.inf))
                beta = 0.5 ** (b / max(halflife, 1e-8))
                torch._foreach_lerp_(ema_params, [p.detach() for p in live_params], 1.0 - beta)
                for be, bu in zip(G_ema.buffers(), G.buffers(), strict=True):
                    be.copy_(bu)
            task.end_step(ctx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = (time.perf_counter() - start) / args.steps, (time.process_time() - cpu_start) / args.steps
    return wall, cpu, mem.peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+",
                   default=[32, 64, 128, 256, 512] if torch.cuda.is_available() else [32, 64, 128])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channel-base", type=int, default=1024)
    p.add_argument("--channel-max", type=int, default=32)
    p.add_argument("--warmup", type=int, default=16)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--items", type=int, default=64, help="training images per resolution")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["no", "bf16"], default="no")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on shared machines)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.warmup % 16 or args.steps % 16:
        p.error("--warmup and --steps must be multiples of 16 (so R1's lazy phase falls alike on both sides)")
    logging.getLogger("imgsynth").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    import imgsynth.training.loop  # noqa: F401
    import imgsynth.training.run  # noqa: F401  (import everything first: both sides start from the same memory)
    device = torch.device(args.device)
    source = "PneumoniaMNIST (MedMNIST v2, CC BY 4.0), resized" if PNEUMONIA.is_file() else "random images"
    print(f"StyleGAN2 step time and peak memory: shared loop vs bare loop ({device}, {args.threads} thread(s), "
          f"batch {args.batch}, channel_base {args.channel_base}, channel_max {args.channel_max}, "
          f"precision {args.precision}; data: {source}; best of {args.repeats} x {args.steps} steps)")
    # Overhead is judged on CPU time on a CPU (robust to other processes sharing the cores) and on
    # wall time on a GPU; both clocks are printed.
    clock = "wall" if device.type == "cuda" else "cpu"
    print(f"{'res':>5} {'bare ms/step':>13} {'loop ms/step':>13} {'bare cpu ms':>12} {'loop cpu ms':>12} "
          f"{'overhead':>9} {'bare peak MiB':>14} {'loop peak MiB':>14}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sg2-data-") as tmp:
        for res in args.resolutions:
            dataset = make_dataset(Path(tmp) / f"r{res}", res, args.items)
            bare, loop = [], []
            for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
                bare.append(run_bare(dataset, args, device))
                loop.append(run_loop(dataset, args, device))
            row = {"resolution": res,
                   "bare_wall_s": min(r[0] for r in bare), "loop_wall_s": min(r[0] for r in loop),
                   "bare_cpu_s": min(r[1] for r in bare), "loop_cpu_s": min(r[1] for r in loop),
                   "bare_peak_bytes": max(r[2] for r in bare), "loop_peak_bytes": max(r[2] for r in loop)}
            row["overhead"] = row[f"loop_{clock}_s"] / row[f"bare_{clock}_s"] - 1
            rows.append(row)
            print(f"{res:>5} {row['bare_wall_s'] * 1000:>13.1f} {row['loop_wall_s'] * 1000:>13.1f} "
                  f"{row['bare_cpu_s'] * 1000:>12.1f} {row['loop_cpu_s'] * 1000:>12.1f} {row['overhead'] * 100:>8.1f}% "
                  f"{row['bare_peak_bytes'] / 2**20:>14.1f} {row['loop_peak_bytes'] / 2**20:>14.1f}", flush=True)
    worst = max(r["overhead"] for r in rows)
    print(f"worst overhead of the shared loop ({clock} time): {worst * 100:.1f}% (target <= 5%)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
