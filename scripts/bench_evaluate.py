"""Benchmark of the evaluation suite, measured side by side in one run (2 CPU threads by default).

1. Feature extraction throughput (images/s) of the domain encoder and of InceptionV3 (random weights:
   the speed is that of the FID network) on 64x64 images.
2. Frechet and kernel distance on the same features: imgsynth vs torchmetrics' FID / KID (time and values).
3. The whole ``evaluate`` run on 10,000 synthetic 64x64 images against PneumoniaMNIST (real train and
   test splits resized to 64x64); the "synthetic" images are perturbed real training images
   (noise, flips, small shifts), written through the dataset contract.

Data: PneumoniaMNIST (MedMNIST v2, CC BY 4.0; Yang et al., Scientific Data 2023; Kermany et al., Cell 2018)
from ../shared/data/medmnist/pneumoniamnist.npz.

    python3 scripts/bench_evaluate.py [--threads 2] [--synthetic 10000] [--features 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imgsynth.contracts import Condition, DatasetInfo, Intensity, save_item, write_dataset  # noqa: E402
from imgsynth.data.medmnist import fit_to_size  # noqa: E402
from imgsynth.evaluation.encoder import DomainEncoder, EncoderArch  # noqa: E402
from imgsynth.evaluation.fid import frechet_distance_features, kernel_distance  # noqa: E402
from imgsynth.evaluation.inception import FIDInceptionV3  # noqa: E402

NPZ = REPO.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_extraction(n_domain: int = 2048, n_inception: int = 32) -> None:
    x = torch.rand(n_domain, 1, 64, 64) * 2 - 1
    net = DomainEncoder(EncoderArch(2, 1, 32, 4, (1, 64, 64), 0.0, 1.0)).eval()
    with torch.no_grad():
        net.features(x[:64])
        _, t = _timed(lambda: [net.features(x[i : i + 256]) for i in range(0, n_domain, 256)])
    print(f"feature extraction, domain encoder (width 32, 4 levels, 256-d): {n_domain / t:8.1f} images/s")
    inc = FIDInceptionV3().eval()
    xi = (torch.rand(n_inception, 3, 64, 64) * 255).round()
    with torch.no_grad():
        inc(xi[:4])
        _, t = _timed(lambda: [inc(xi[i : i + 16]) for i in range(0, n_inception, 16)])
    print(f"feature extraction, InceptionV3 (resize to 299, 2048-d):     {n_inception / t:8.1f} images/s")


class _Identity(torch.nn.Module):
    """Hands precomputed features to torchmetrics unchanged."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchmetrics(metric: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> float:
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    out = metric.compute()
    return float(out[0] if isinstance(out, tuple) else out)


def bench_distances(n: int) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(0)
    for dim, subsets in ((256, 100), (2048, 20)):
        real = rng.normal(size=(n, dim))
        fake = rng.normal(0.05, 1.1, size=(n, dim)) + rng.normal(size=(1, dim)) * 0.1
        fd, t_fd = _timed(frechet_distance_features, real, fake)
        tm_fd, t_tm_fd = _timed(_torchmetrics, FrechetInceptionDistance(feature=_Identity(dim), normalize=True), real, fake)
        kd, t_kd = _timed(kernel_distance, real, fake, subsets=subsets, subset_size=1000)
        tm_kid = KernelInceptionDistance(feature=_Identity(dim), subsets=subsets, subset_size=1000, normalize=True)
        tm_kd, t_tm_kd = _timed(_torchmetrics, tm_kid, real, fake)
        print(f"N={n}, dim={dim}: FD imgsynth {fd:.6f} in {t_fd:6.2f} s | torchmetrics {tm_fd:.6f} in {t_tm_fd:6.2f} s "
              f"| rel. diff {abs(fd - tm_fd) / tm_fd:.1e} | torchmetrics/imgsynth time {t_tm_fd / t_fd:5.2f}x")
        print(f"N={n}, dim={dim}: KD imgsynth {kd.mean:.6f} +- {kd.std:.6f} in {t_kd:6.2f} s | torchmetrics {tm_kd:.6f} "
              f"in {t_tm_kd:6.2f} s | torchmetrics/imgsynth time {t_tm_kd / t_kd:5.2f}x ({subsets} subsets of 1000; "
              "the random subsets differ)")


def make_datasets(root: Path, n_synthetic: int) -> tuple[Path, Path]:
    raw = np.load(NPZ)
    intensity = Intensity(kind="minmax", low=0.0, high=255.0)
    cond = Condition(name="label", type="categorical", categories=["normal", "pneumonia"])
    info = DatasetInfo(spatial_dims=2, shape=[1, 64, 64], intensity=intensity, conditions=[cond])
    names = ["normal", "pneumonia"]
    rows, train = [], []
    for split in ("train", "test"):
        for i, (img, lab) in enumerate(zip(raw[f"{split}_images"], raw[f"{split}_labels"][:, 0], strict=True)):
            arr = intensity.to_model(fit_to_size(img.astype(np.float32), 64))[None]
            rel = save_item(root / "real", f"items/{split}-{i:05d}.npy", arr)
            rows.append({"id": f"{split}-{i:05d}", "path": rel, "split": split, "subject": f"{split}-{i:05d}", "label": names[lab]})
            if split == "train":
                train.append((arr, names[lab]))
    write_dataset(root / "real", info, rows)
    rng = np.random.default_rng(0)
    syn_rows = []
    for k in range(n_synthetic):
        arr, lab = train[rng.integers(len(train))]
        out = arr[..., ::-1] if rng.random() < 0.5 else arr
        out = np.roll(out, tuple(rng.integers(-3, 4, 2)), axis=(1, 2))
        out = np.clip(out + rng.normal(0, 0.1, out.shape), -1, 1).astype(np.float32)
        rel = save_item(root / "synthetic", f"items/s{k:05d}.npy", out)
        syn_rows.append({"id": f"s{k:05d}", "path": rel, "split": "synthetic", "subject": f"s{k:05d}", "label": lab})
    write_dataset(root / "synthetic", info, syn_rows)
    return root / "real", root / "synthetic"


def bench_whole(n_synthetic: int, threads: int) -> None:
    from imgsynth.evaluation import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        (real, syn), t_data = _timed(make_datasets, Path(tmp), n_synthetic)
        overrides = [f"threads={threads}", f"features.domain.cache_dir={tmp}/cache", "features.domain.width=16",
                     "features.domain.steps=100", "features.domain.batch_size=64", "downstream.network=resnet_small",
                     "downstream.seeds=1", "downstream.epochs=2", "downstream.time_budget_s=40", "distance.bootstrap=10"]
        res, t = _timed(evaluate, real, syn, Path(tmp) / "evaluation", "evaluate", overrides=overrides)
        counts = res.report.inputs["counts"]
        print(f"whole evaluation: {counts['synthetic']} synthetic vs {counts['real_train']} real train + "
              f"{counts['real_heldout']} real test (64x64), {threads} threads: {t:.1f} s (+ {t_data:.1f} s writing the folders)")
        print("  stage timings (s):", res.report.extra["timings_s"])
        m = res.report.metrics
        for name in ("FD_domain", "KD_domain", "precision.domain", "recall.domain", "memorization.fraction",
                     "memorization.nn_distance_ratio", "downstream.tstr", "downstream.trtr", "downstream.ratio"):
            if name in m:
                print(f"  {name:32s} {m[name].value:.4g}  (floor {m[name].floor if m[name].floor is None else round(m[name].floor, 4)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--synthetic", type=int, default=10000)
    parser.add_argument("--features", type=int, default=10000)
    parser.add_argument("--parts", default="extract,distances,whole", help="comma-separated subset of extract,distances,whole")
    args = parser.parse_args()
    if not NPZ.is_file():
        sys.exit(f"PneumoniaMNIST not found at {NPZ} (the ../shared/data folder beside the checkout)")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    parts = set(args.parts.split(","))
    if "extract" in parts:
        bench_extraction()
    if "distances" in parts:
        bench_distances(args.features)
    if "whole" in parts:
        bench_whole(args.synthetic, args.threads)


if __name__ == "__main__":
    main()
