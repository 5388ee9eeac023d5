"""Downstream utility: classifiers trained on synthetic (TSTR), real (TRTR) and real + synthetic data,
all tested on the real held-out split (Esteban et al. 2017's train-on-synthetic, test-on-real).

A MONAI DenseNet or ResNet (2D or 3D, small variants by default) predicts a categorical
condition. Several seeds per setting; each run is time-boxed. Accuracy, balanced accuracy and
AUROC are averaged over seeds, with percentile bootstrap intervals over the test items; the
headline ``downstream.ratio`` = TSTR / TRTR of the headline metric, with its own interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from imgsynth.evaluation.config import DownstreamSection
from imgsynth.utils.log import get_logger

log = get_logger("evaluation")
METRICS = ("auroc", "balanced_accuracy", "accuracy")


def build_network(name: str, spatial_dims: int, in_channels: int, n_classes: int) -> nn.Module:
    from monai.networks import nets

    if name == "densenet_small":
        return nets.DenseNet(spatial_dims, in_channels, n_classes, init_features=16, growth_rate=8, block_config=(2, 3, 4))
    if name == "densenet121":
        return nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=n_classes)
    if name == "resnet_small":
        return nets.ResNet("basic", [1, 1, 1, 1], [16, 32, 64, 128], spatial_dims=spatial_dims,
                           n_input_channels=in_channels, num_classes=n_classes, conv1_t_size=3, no_max_pool=True)
    if name in ("resnet10", "resnet18"):
        return getattr(nets, name)(spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=n_classes)
    raise ValueError(f"unknown downstream network {name!r}")


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC as the Mann-Whitney U statistic (average ranks for ties)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metric_values(y: np.ndarray, prob: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, balanced accuracy and AUROC (one-vs-rest macro for > 2 classes; NaN if undefined)."""
    pred = prob.argmax(1)
    correct = pred == y
    present = np.unique(y)
    recalls = [correct[y == c].mean() for c in present]
    if n_classes == 2:
        auroc = _binary_auroc(y == 1, prob[:, 1])
    else:
        per_class = [_binary_auroc(y == c, prob[:, c]) for c in range(n_classes)]
        auroc = float(np.mean(per_class)) if np.isfinite(per_class).all() else float("nan")
    return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls)), "auroc": auroc}


@dataclass
class RunResult:
    setting: str
    seed: int
    prob: np.ndarray
    epochs_done: float
    seconds: float
    stopped_by_budget: bool


@dataclass
class DownstreamResult:
    condition: str
    categories: list[str]
    runs: list[RunResult] = field(default_factory=list)
    y_test: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    train_sizes: dict[str, int] = field(default_factory=dict)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
    shift = int(torch.randint(-2, 3, (1,), generator=gen))
    return torch.roll(x, shift, dims=-2)


def train_classifier(
    x: np.ndarray, y: np.ndarray, n_classes: int, cfg: DownstreamSection, *, seed: int, budget_s: float, device: torch.device
) -> tuple[nn.Module, float, bool]:
    """Train with class-balanced cross-entropy for ``cfg.epochs`` or until ``budget_s``; (net, epochs, cut)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_network(cfg.network, x.ndim - 2, x.shape[1], n_classes).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = torch.from_numpy(y.astype(np.int64))
    counts = torch.bincount(labels, minlength=n_classes).float().clamp_min(1)
    weight = (counts.sum() / counts / n_classes).to(device)
    batch = min(cfg.batch_size, len(data))
    steps_per_epoch = max(1, len(data) // batch)
    total = cfg.epochs * steps_per_epoch
    start, step = time.monotonic(), 0
    net.train()
    while step < total:
        perm = torch.randperm(len(data), generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch : (b + 1) * batch]
            xb = data[idx]
            if cfg.augment:
                xb = _augment(xb, gen)
            loss = F.cross_entropy(net(xb.to(device)), labels[idx].to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if time.monotonic() - start > budget_s:
                net.eval()
                return net, step / steps_per_epoch, True
    net.eval()
    return net, step / steps_per_epoch, False


def predict(net: nn.Module, x: np.ndarray, device: torch.device, batch: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch], dtype=np.float32)).to(device)
            out.append(torch.softmax(net(xb).float(), dim=1).cpu().numpy())
    return np.concatenate(out)


def run_downstream(
    sets: dict[str, tuple[np.ndarray, np.ndarray]],
    x_test: np.ndarray,
    y_test: np.ndarray,
    condition: str,
    categories: list[str],
    cfg: DownstreamSection,
    *,
    seed: int,
    device: torch.device,
) -> DownstreamResult:
    """Train each setting in ``sets`` ({setting: (x, y)}) for ``cfg.seeds`` seeds and predict ``x_test``."""
    result = DownstreamResult(condition, categories, y_test=y_test)
    runs = [(s, seed + k) for s in sets for k in range(cfg.seeds)]
    per_run = cfg.time_budget_s / max(1, len(runs))
    for setting, run_seed in runs:
        x, y = sets[setting]
        result.train_sizes[setting] = len(y)
        start = time.monotonic()
        net, epochs, cut = train_classifier(x, y, len(categories), cfg, seed=run_seed, budget_s=per_run, device=device)
        prob = predict(net, x_test, device)
        result.runs.append(RunResult(setting, run_seed, prob, round(epochs, 2), round(time.monotonic() - start, 2), cut))
        if cut:
            result.notes.append(f"{setting} seed {run_seed}: stopped by the time budget after {epochs:.1f} of {cfg.epochs} epochs")
    return result


def summarise(result: DownstreamResult, *, rounds: int, level: float, seed: int) -> dict[str, dict[str, object]]:
    """{setting: {metric: (value, ci)}} plus the TSTR/TRTR ratio of every metric, bootstrapped over test items."""
    y = result.y_test
    assert y is not None
    n_classes = len(result.categories)
    by_setting: dict[str, list[np.ndarray]] = {}
    for run in result.runs:
        by_setting.setdefault(run.setting, []).append(run.prob)

    def mean(values: list[float]) -> float:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    def scores(idx: np.ndarray) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for s, probs in by_setting.items():
            per_seed = [metric_values(y[idx], p[idx], n_classes) for p in probs]
            out[s] = {m: mean([v[m] for v in per_seed]) for m in METRICS}
        return out

    full = scores(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    boots: list[dict[str, dict[str, float]]] = [scores(rng.integers(0, len(y), len(y))) for _ in range(rounds)]
    alpha = (1 - level) / 2

    def ci(values: list[float]) -> tuple[float, float] | None:
        v = np.asarray([x for x in values if np.isfinite(x)])
        return (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) > 1 else None

    out: dict[str, dict[str, object]] = {}
    for s in full:
        out[s] = {m: (full[s][m], ci([b[s][m] for b in boots])) for m in METRICS}
    if "tstr" in full and "trtr" in full:
        def ratio(d: dict[str, dict[str, float]], m: str) -> float:
            return d["tstr"][m] / d["trtr"][m] if d["trtr"][m] else float("nan")

        out["ratio"] = {m: (ratio(full, m), ci([ratio(b, m) for b in boots])) for m in METRICS}
    return out
