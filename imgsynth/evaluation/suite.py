"""``evaluate(real, synthetic, out_dir, config, run=None)``: every metric, one report.

Order: read both dataset folders; extract features with each extractor; Frechet and kernel
distances with their real-vs-real floors, precision/recall; diversity; memorization; physical
validators; downstream classifiers; (``--run``) autoencoder reconstruction; then ``report.json``
and ``report.html``. Every number is a ``Metric`` with its recipe (extractor and weights hash,
preprocessing, sample sizes, split, seed), its floor where one exists, and an interval.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgsynth.config import ConfigBase, config_hash, config_to_dict, load_config
from imgsynth.contracts import Metric, Report, write_report
from imgsynth.errors import EXIT_OK, EXIT_PARTIAL, ConfigError, UsageError
from imgsynth.evaluation.config import EvaluateConfig
from imgsynth.evaluation.features import ExtractorContext, FeatureExtractor, build_extractors
from imgsynth.evaluation.sets import Inputs, data_range, load_inputs
from imgsynth.evaluation.similarity import SSIMSettings, mean_ci, ms_ssim, psnr, ssim
from imgsynth.utils.io import is_within
from imgsynth.utils.log import get_logger

log = get_logger("evaluation")


@dataclass
class Visuals:
    """What the HTML report shows besides the numbers (arrays stay out of report.json)."""

    inputs: Inputs
    closest: list[dict[str, Any]] = field(default_factory=list)
    histograms: dict[str, Any] = field(default_factory=dict)
    reconstructions: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class EvaluationResult:
    out_dir: Path
    report: Report
    skipped: list[dict[str, str]]
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.skipped else EXIT_OK


def resolve_config(config: EvaluateConfig | str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> EvaluateConfig:
    if isinstance(config, EvaluateConfig):
        if overrides:
            from imgsynth.config import apply_overrides, validate_config

            data = apply_overrides(config.model_dump(mode="json"), list(overrides))
            return validate_config(EvaluateConfig, data)
        return config
    if isinstance(config, ConfigBase):
        raise ConfigError(f"evaluate needs a config of kind 'evaluate', got {type(config).__name__}")
    cfg = load_config(config or "evaluate", list(overrides), expect_kind="evaluate")
    assert isinstance(cfg, EvaluateConfig)
    return cfg


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device '{name}' is not a torch device (use auto, cpu, cuda, cuda:1)") from None


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class _Collector:
    def __init__(self, seed: int) -> None:
        self.metrics: dict[str, Metric] = {}
        self.seed = seed

    def add(self, name: str, value: float | None, recipe: dict[str, Any], *, floor: float | None = None,
            ci: tuple[float, float] | None = None, note: str = "", **extra: Any) -> None:
        recipe = _clean({**recipe, "seed": self.seed})
        ci = None if ci is None or not all(math.isfinite(c) for c in ci) else (float(ci[0]), float(ci[1]))
        self.metrics[name] = Metric(value=_finite(value), recipe=recipe, floor=_finite(floor), ci=ci, note=note, **_clean(extra))


# =============================================================================================
# Feature-space distances
# =============================================================================================
def _rows(feats: np.ndarray, idx: np.ndarray, n_items: int) -> np.ndarray:
    """Rows of the chosen items (2.5D feature arrays hold S consecutive slice rows per item)."""
    per = feats.shape[0] // n_items
    return feats[(idx[:, None] * per + np.arange(per)[None]).reshape(-1)] if per > 1 else feats[idx]


def _distances(ext: FeatureExtractor, feats: dict[str, dict[str, np.ndarray]], inputs: Inputs, cfg: EvaluateConfig,
               out: _Collector, warnings: list[str]) -> None:
    from imgsynth.evaluation.fid import (
        bootstrap_pair,
        frechet_distance_features,
        kernel_distance,
        precision_recall,
        small_n_warning,
    )

    rng = np.random.default_rng(cfg.seed)
    n_syn, n_train, n_test = len(inputs.synthetic), len(inputs.real_train), len(inputs.real_test)
    n = min(n_syn, n_train)
    syn_idx = np.sort(rng.choice(n_syn, n, replace=False))
    train_idx = np.sort(rng.choice(n_train, n, replace=False))
    test_idx = np.arange(n_test)
    fd_name, kd_name = ext.score_names
    dcfg = cfg.distance
    base = {**ext.recipe(), "n_synthetic": n, "n_real_heldout": n_test, "heldout_split": ",".join(inputs.real_test.splits),
            "floor": f"real train (N={n}) vs real held-out (N={n_test})"}
    if n < n_syn:
        base["subsampled"] = f"{n} of {n_syn} synthetic items (seeded) to match the real train size for the floor"
    views = list(feats["synthetic"])
    fd_vals, fd_floors, kd_vals, kd_floors = [], [], [], []
    for view in views:
        s = _rows(feats["synthetic"][view], syn_idx, n_syn)
        t = _rows(feats["real_train"][view], train_idx, n_train)
        h = _rows(feats["real_test"][view], test_idx, n_test)
        suffix = f".{view}" if view else ""
        recipe = {**base, "view": view or "native", "feature_rows": {"synthetic": len(s), "real_heldout": len(h)}}
        fd = frechet_distance_features(s, h)
        fd_floor = frechet_distance_features(t, h)
        ci = bootstrap_pair(s, h, frechet_distance_features, rounds=dcfg.bootstrap, level=dcfg.ci_level, seed=cfg.seed)
        warn = small_n_warning(fd_name + suffix, min(len(s), len(h)), s.shape[1], dcfg.min_n)
        if warn:
            warnings.append(warn)
        out.add(fd_name + suffix, fd, {**recipe, "ci": f"percentile bootstrap, {dcfg.bootstrap} rounds"}, floor=fd_floor,
                ci=ci, note=warn or "")
        kd = kernel_distance(s, h, subsets=dcfg.kid_subsets, subset_size=dcfg.kid_subset_size, degree=dcfg.kid_degree, seed=cfg.seed)
        kd_floor = kernel_distance(t, h, subsets=dcfg.kid_subsets, subset_size=dcfg.kid_subset_size, degree=dcfg.kid_degree, seed=cfg.seed)
        kci = (float(np.quantile(kd.values, 0.025)), float(np.quantile(kd.values, 0.975))) if kd.subsets > 1 else None
        out.add(kd_name + suffix, kd.mean, {**recipe, "kernel": f"(x.y/d + 1)^{dcfg.kid_degree}, unbiased MMD^2",
                                             "subsets": kd.subsets, "subset_size": kd.subset_size,
                                             "ci": "2.5-97.5 percentiles of the subset estimates"},
                floor=kd_floor.mean, ci=kci, std=kd.std, floor_std=kd_floor.std)
        fd_vals.append(fd)
        fd_floors.append(fd_floor)
        kd_vals.append(kd.mean)
        kd_floors.append(kd_floor.mean)
        if cfg.precision_recall.enabled:
            m = min(len(s), len(h), cfg.precision_recall.max_n)
            if m > cfg.precision_recall.k:
                pick = np.random.default_rng(cfg.seed + 1)
                si, hi_, ti = (np.sort(pick.choice(len(a), m, replace=False)) for a in (s, h, t))
                p, r = precision_recall(h[hi_], s[si], cfg.precision_recall.k)
                pf, rf = precision_recall(h[hi_], t[ti], cfg.precision_recall.k)
                pr_recipe = {**recipe, "k": cfg.precision_recall.k, "n_each": m,
                             "method": "improved precision/recall (Kynkaanniemi et al. 2019), k-NN hyperspheres"}
                out.add(f"precision.{ext.name}{suffix}", p, pr_recipe, floor=pf)
                out.add(f"recall.{ext.name}{suffix}", r, pr_recipe, floor=rf)
    if len(views) > 1:
        recipe = {**base, "view": "mean over " + ", ".join(views)}
        out.add(fd_name, float(np.mean(fd_vals)), recipe, floor=float(np.mean(fd_floors)))
        out.add(kd_name, float(np.mean(kd_vals)), recipe, floor=float(np.mean(kd_floors)))


# =============================================================================================
# Memorization
# =============================================================================================
def _memorization(inputs: Inputs, primary: tuple[FeatureExtractor, dict[str, dict[str, np.ndarray]]] | None,
                  cfg: EvaluateConfig, settings: SSIMSettings, out: _Collector, visuals: Visuals,
                  device: torch.device) -> dict[str, Any]:
    from imgsynth.evaluation.privacy import flag_copies, nearest_features, nearest_train, split_half_floor

    mcfg = cfg.memorization
    train = inputs.real_train
    ref_idx = np.arange(len(train))
    if mcfg.max_train is not None and len(train) > mcfg.max_train:
        ref_idx = np.sort(np.random.default_rng(cfg.seed).choice(len(train), mcfg.max_train, replace=False))
    ref = train.images[ref_idx]
    t0 = time.monotonic()
    syn_nn = nearest_train(inputs.synthetic.images, ref, mcfg, settings, device=device)
    held_nn = nearest_train(inputs.real_test.images, ref, mcfg, settings, device=device)
    tau = float(np.percentile(held_nn.distance, mcfg.percentile))
    flags = flag_copies(syn_nn.distance, syn_nn.ssim, tau, mcfg.ssim_threshold)
    floor = split_half_floor(held_nn.distance, held_nn.ssim, mcfg.percentile, mcfg.ssim_threshold, cfg.seed)
    n_syn = len(flags)
    method = (f"pixel space: RMS difference (model scale) to the nearest real train image, minimised over flips "
              f"{mcfg.flips} and shifts up to {mcfg.max_shift} px; copy if below the {mcfg.percentile:g}% quantile of "
              f"real held-out-to-train distances or SSIM >= {mcfg.ssim_threshold:g}")
    recipe = {"method": method, "threshold": tau, "percentile": mcfg.percentile, "ssim_threshold": mcfg.ssim_threshold,
              "n_synthetic": n_syn, "n_real_train": len(ref), "n_real_heldout": len(held_nn.distance),
              "floor": "real held-out images flagged with the threshold from the other half (split-half)",
              "ci": "Wilson 95% interval"}
    out.add("memorization.fraction", float(flags.mean()), recipe, floor=floor, ci=_wilson(int(flags.sum()), n_syn),
            flagged=int(flags.sum()))
    ratio = float(np.median(syn_nn.distance) / max(np.median(held_nn.distance), 1e-12))
    boot = np.random.default_rng(cfg.seed)
    ratios = [np.median(syn_nn.distance[boot.integers(0, n_syn, n_syn)]) / max(np.median(held_nn.distance), 1e-12)
              for _ in range(cfg.report.bootstrap)]
    out.add("memorization.nn_distance_ratio", ratio,
            {"method": "median nearest-train RMS distance of synthetic / of real held-out (< 1: closer to training data "
                       "than new real images are)", "n_synthetic": n_syn, "n_real_heldout": len(held_nn.distance)},
            floor=1.0, ci=(float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))) if ratios else None)
    out.add("memorization.nn_ssim", float(syn_nn.ssim.mean()),
            {"method": "mean SSIM of each synthetic sample with its aligned nearest train image", **settings.recipe(),
             "n_synthetic": n_syn}, floor=float(held_nn.ssim.mean()), ci=mean_ci(syn_nn.ssim, rounds=cfg.report.bootstrap, seed=cfg.seed))
    details: dict[str, Any] = {"threshold": tau, "seconds": round(time.monotonic() - t0, 2),
                               "flagged": [{"synthetic": inputs.synthetic.ids[i], "train": train.ids[ref_idx[syn_nn.index[i]]],
                                            "distance": float(syn_nn.distance[i]), "ssim": float(syn_nn.ssim[i]),
                                            "alignment": syn_nn.transform[i]} for i in np.flatnonzero(flags)[:1000]]}
    if primary is not None and mcfg.feature_space:
        ext, feats = primary
        _, fd_syn = nearest_features(feats["synthetic"][""], feats["real_train"][""][ref_idx])
        _, fd_held = nearest_features(feats["real_test"][""], feats["real_train"][""][ref_idx])
        ftau = float(np.percentile(fd_held, mcfg.percentile))
        fflags = fd_syn < ftau
        ffloor = split_half_floor(fd_held, None, mcfg.percentile, mcfg.ssim_threshold, cfg.seed)
        out.add("memorization.feature_fraction", float(fflags.mean()),
                {"method": f"{ext.name} feature space: nearest train neighbour closer than the {mcfg.percentile:g}% "
                           "quantile of real held-out-to-train feature distances", "threshold": ftau,
                 "extractor": ext.recipe().get("extractor"), "weights_sha256": ext.recipe().get("weights_sha256"),
                 "n_synthetic": n_syn, "floor": "split-half on real held-out", "ci": "Wilson 95% interval"},
                floor=ffloor, ci=_wilson(int(fflags.sum()), n_syn), flagged=int(fflags.sum()))
        out.add("memorization.feature_nn_distance_ratio",
                float(np.median(fd_syn) / max(np.median(fd_held), 1e-12)),
                {"method": f"median nearest-train {ext.name} feature distance of synthetic / of real held-out"}, floor=1.0)
    order = np.argsort(syn_nn.distance)[: cfg.report.closest_pairs]
    visuals.closest = [{"synthetic": int(i), "train": int(ref_idx[syn_nn.index[i]]), "distance": float(syn_nn.distance[i]),
                        "ssim": float(syn_nn.ssim[i]), "alignment": syn_nn.transform[i], "flagged": bool(flags[i]),
                        "synthetic_id": inputs.synthetic.ids[i], "train_id": train.ids[ref_idx[syn_nn.index[i]]]}
                       for i in order]
    return details


# =============================================================================================
# Downstream
# =============================================================================================
def _downstream(inputs: Inputs, cfg: EvaluateConfig, device: torch.device, out: _Collector, warnings: list[str]) -> dict[str, Any]:
    from imgsynth.evaluation.downstream import METRICS, run_downstream, summarise

    dcfg = cfg.downstream
    cats = [c for c in inputs.info.conditions if c.type == "categorical"]
    name = dcfg.condition or (cats[0].name if cats else None)
    if name is None:
        warnings.append("downstream skipped: the real dataset has no categorical condition to predict")
        return {}
    cond = inputs.info.condition(name)
    if cond.type != "categorical":
        raise ConfigError(f"downstream.condition '{name}' is not categorical (it is {cond.type})")
    categories = list(cond.categories or [])

    def labelled(s: Any) -> tuple[np.ndarray, np.ndarray] | None:
        values = s.conditions.get(name)
        if values is None:
            return None
        keep = [i for i, v in enumerate(values) if v in categories]
        if len(keep) < len(values):
            warnings.append(f"downstream: {len(values) - len(keep)} {s.name} items carry a '{name}' value unknown to the real data")
        idx = np.asarray(keep, dtype=np.int64)
        y = np.asarray([categories.index(values[i]) for i in keep], dtype=np.int64)
        if dcfg.max_train is not None and len(idx) > dcfg.max_train:
            pick = np.sort(np.random.default_rng(cfg.seed).choice(len(idx), dcfg.max_train, replace=False))
            idx, y = idx[pick], y[pick]
        return s.images[idx], y

    real = labelled(inputs.real_train)
    syn = labelled(inputs.synthetic)
    test = labelled(inputs.real_test)
    assert real is not None and test is not None
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for setting in dcfg.settings:
        if setting == "trtr":
            sets["trtr"] = real
        elif syn is None:
            warnings.append(f"downstream {setting} skipped: the synthetic dataset has no '{name}' condition")
        elif setting == "tstr":
            sets["tstr"] = syn
        else:
            sets["mixed"] = (np.concatenate([real[0], syn[0]]), np.concatenate([real[1], syn[1]]))
    if not sets:
        return {}
    result = run_downstream(sets, test[0], test[1], name, categories, dcfg, seed=cfg.seed, device=device)
    warnings.extend(result.notes)
    summary = summarise(result, rounds=dcfg.bootstrap, level=0.95, seed=cfg.seed)
    base = {"network": dcfg.network, "condition": name, "categories": categories, "seeds": dcfg.seeds,
            "epochs": dcfg.epochs, "time_budget_s": dcfg.time_budget_s, "n_test": len(test[1]),
            "test_split": ",".join(inputs.real_test.splits), "ci": f"percentile bootstrap over test items, {dcfg.bootstrap} rounds",
            "train_sizes": result.train_sizes}
    for setting, values in summary.items():
        for metric in METRICS:
            value, ci = values[metric]
            out.add(f"downstream.{setting}.{metric}", value, {**base, "metric": metric}, ci=ci)
        value, ci = values[dcfg.headline]
        note = "TSTR / TRTR" if setting == "ratio" else ""
        out.add(f"downstream.{setting}", value, {**base, "metric": dcfg.headline}, ci=ci, note=note)
    return {"runs": [{"setting": r.setting, "seed": r.seed, "epochs": r.epochs_done, "seconds": r.seconds,
                      "stopped_by_budget": r.stopped_by_budget} for r in result.runs]}


# =============================================================================================
# The whole evaluation
# =============================================================================================
def evaluate(
    real: str | Path,
    synthetic: str | Path,
    out_dir: str | Path,
    config: EvaluateConfig | str | Path | None = None,
    run: str | Path | None = None,
    *,
    overrides: list[str] | tuple[str, ...] = (),
) -> EvaluationResult:
    """Evaluate ``synthetic`` against ``real`` (dataset folders); write ``report.json`` and ``report.html``."""
    start = time.monotonic()
    cfg = resolve_config(config, overrides)
    real, synthetic, out_dir = Path(real), Path(synthetic), Path(out_dir)
    for name, src in (("--real", real), ("--synthetic", synthetic)) + ((("--run", Path(run)),) if run else ()):
        if is_within(out_dir, src) or is_within(src, out_dir):
            raise UsageError(f"the output folder {out_dir} must lie outside {name} {src} (inputs are never modified)")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _evaluate(real, synthetic, out_dir, cfg, run, start)
    finally:
        torch.set_num_threads(threads)


def _evaluate(real: Path, synthetic: Path, out_dir: Path, cfg: EvaluateConfig, run: str | Path | None, start: float) -> EvaluationResult:
    from imgsynth import provenance
    from imgsynth.evaluation.report import write_html

    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    inputs = load_inputs(real, synthetic, cfg.data, seed=cfg.seed)
    warnings = list(inputs.notes)
    out = _Collector(cfg.seed)
    visuals = Visuals(inputs=inputs)
    extra: dict[str, Any] = {"timings_s": {}}
    timings = extra["timings_s"]
    rng_dr, dr_source = data_range(inputs.info, cfg.similarity.data_range)
    s = cfg.similarity
    settings = SSIMSettings(rng_dr, s.kernel_size, s.sigma, s.k1, s.k2, s.max_scales)

    # Features and distances.
    t = time.monotonic()
    ctx = ExtractorContext(cfg, inputs, device, out_dir)
    extractors = build_extractors(ctx)
    warnings.extend(ctx.notes)
    primary = None
    for ext in extractors:
        log.info("extracting %s features", ext.name)
        feats = {name: ext.extract(getattr(inputs, name).images) for name in ("synthetic", "real_train", "real_test")}
        _distances(ext, feats, inputs, cfg, out, warnings)
        wanted = cfg.features.primary or "domain"
        if set(feats["synthetic"]) == {""} and (primary is None or ext.name == wanted):
            primary = (ext, feats)
    timings["features_and_distances"] = round(time.monotonic() - t, 2)

    # Diversity.
    if cfg.diversity.enabled:
        from imgsynth.evaluation.diversity import pairwise_ms_ssim

        log.info("diversity (pairwise MS-SSIM)")
        t = time.monotonic()
        d_syn = pairwise_ms_ssim(inputs.synthetic.images, settings, pairs=cfg.diversity.pairs, seed=cfg.seed, bootstrap=cfg.report.bootstrap)
        d_real = pairwise_ms_ssim(inputs.real_test.images, settings, pairs=d_syn.pairs, seed=cfg.seed, bootstrap=cfg.report.bootstrap)
        out.add("diversity.ms_ssim", d_syn.mean,
                {"method": "mean MS-SSIM over random pairs within the synthetic set (lower = more diverse)",
                 **settings.recipe(), "data_range_source": dr_source, "pairs": d_syn.pairs,
                 "floor": f"the same within the real held-out set ({d_real.pairs} pairs)", "ci": "bootstrap over pairs"},
                floor=d_real.mean, ci=d_syn.ci, note=d_syn.note)
        timings["diversity"] = round(time.monotonic() - t, 2)

    # Memorization.
    if cfg.memorization.enabled:
        log.info("memorization: nearest training neighbours of %d synthetic items", len(inputs.synthetic))
        t = time.monotonic()
        extra["memorization"] = _memorization(inputs, primary, cfg, settings, out, visuals, device)
        timings["memorization"] = round(time.monotonic() - t, 2)

    # Physical validators.
    if cfg.validators.enabled:
        from imgsynth.evaluation.validators import validate

        t = time.monotonic()
        vr = validate(inputs.real_train.images, inputs.real_test.images, inputs.synthetic.images, inputs.info.intensity,
                      cfg.validators, raw_synthetic=inputs.synthetic.images, seed=cfg.seed)
        for check in vr.checks:
            out.add(f"validators.{check.name}", check.value,
                    {"method": check.note, "unit": check.unit, "floor": "real train vs real held-out"},
                    floor=check.floor, synthetic=check.synthetic, real=check.real)
        visuals.histograms = vr.histograms
        timings["validators"] = round(time.monotonic() - t, 2)

    # Downstream classifiers.
    if cfg.downstream.enabled:
        log.info("downstream classifiers (budget %.0f s)", cfg.downstream.time_budget_s)
        t = time.monotonic()
        extra["downstream"] = _downstream(inputs, cfg, device, out, warnings)
        timings["downstream"] = round(time.monotonic() - t, 2)

    # Autoencoder reconstruction.
    if run is not None:
        from imgsynth.evaluation.reconstruction import load_autoencoder, reconstruct_all

        t = time.monotonic()
        fn, recipe = load_autoencoder(run, ema=cfg.reconstruction.ema, device=device)
        x = inputs.real_test.images[: cfg.reconstruction.max_items]
        x_hat = reconstruct_all(fn, x, cfg.reconstruction.batch_size)
        ms, ms_note = ms_ssim(x_hat, x, settings)
        recipe = {**recipe, **settings.recipe(), "data_range_source": dr_source, "n": len(x),
                  "split": ",".join(inputs.real_test.splits), "ci": "bootstrap over images"}
        per_image = {"ssim": ssim(x_hat, x, settings), "ms_ssim": ms, "psnr": psnr(x_hat, x, rng_dr),
                     "mae": np.abs(x_hat - x).reshape(len(x), -1).mean(1)}
        for name, values in per_image.items():
            out.add(f"reconstruction.{name}", float(values.mean()), recipe,
                    ci=mean_ci(values, rounds=cfg.report.bootstrap, seed=cfg.seed), note=ms_note if name == "ms_ssim" else "")
        visuals.reconstructions = (x[: cfg.report.grid_items], x_hat[: cfg.report.grid_items])
        timings["reconstruction"] = round(time.monotonic() - t, 2)

    if inputs.skipped:
        warnings.append(f"{len(inputs.skipped)} items could not be read and were skipped (listed in extra.skipped)")
    timings["total"] = round(time.monotonic() - start, 2)
    extra["skipped"] = inputs.skipped
    extra["provenance"] = provenance.collect()
    report_inputs = {
        "real": str(real), "synthetic": str(synthetic), "run": None if run is None else str(run),
        "counts": {"real_train": len(inputs.real_train), "real_heldout": len(inputs.real_test), "synthetic": len(inputs.synthetic)},
        "heldout_split": inputs.real_test.splits, "spatial_dims": inputs.spatial_dims, "shape": inputs.info.shape,
        "intensity": inputs.info.intensity.model_dump(mode="json"), "data_range": rng_dr, "data_range_source": dr_source,
        "extractors": [e.name for e in extractors], "config": config_to_dict(cfg), "config_hash": config_hash(cfg),
        "seed": cfg.seed, "device": str(device),
    }
    report = Report(inputs=_clean(report_inputs), metrics=out.metrics, warnings=list(dict.fromkeys(warnings)), extra=_clean(extra))
    write_report(out_dir, report)
    write_html(out_dir, report, visuals)
    return EvaluationResult(out_dir, report, inputs.skipped, round(time.monotonic() - start, 2))


def evaluate_batch(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mini-batch entry: ``[{real, synthetic, out_dir, config?, run?, overrides?}]`` -> one result per job.

    A job that fails reports its one-line reason and exit code; the others go on.
    """
    from imgsynth.errors import ImgsynthError

    results = []
    for job in jobs:
        try:
            res = evaluate(job["real"], job["synthetic"], job["out_dir"], job.get("config"), job.get("run"),
                           overrides=tuple(job.get("overrides", ())))
            results.append({"out_dir": str(res.out_dir), "status": "done", "exit_code": res.exit_code,
                            "seconds": res.seconds, "skipped": len(res.skipped)})
        except ImgsynthError as exc:
            results.append({"out_dir": str(job.get("out_dir")), "status": "failed", "exit_code": exc.exit_code, "error": str(exc)})
    return results
