"""``preprocess``: inputs -> one dataset folder (the driver; workers run :mod:`imgsynth.data.process`).

1. Plan: find units (:func:`sources.discover`), join the labels CSV, number subjects and series
   pseudonymously; the plan is saved to ``OUT/.work/plan.json`` (with the raw keys, only while
   the run lasts).
2. Fit (only ``intensity.scope: dataset``): a voxel sample of every unit, then one mapping.
3. Units: :func:`process.preprocess_minibatch` over mini-batches in ``workers`` processes.
4. Finish: condition values, splits, ``manifest.csv`` + ``dataset.json`` through the contracts
   module, ``errors.jsonl`` (one line per skipped series: where, and why); ``.work`` is removed.

Re-running on the same output with the same inputs and config resumes (finished units are not
redone) or, when complete, does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.config import config_hash, config_to_dict, load_config
from imgsynth.contracts import Dataset, DatasetInfo, Intensity, write_dataset
from imgsynth.data.config import PreprocessConfig
from imgsynth.data.covariates import SLICE_SOURCES, MissingValue, build_conditions, series_value
from imgsynth.data.intensity import (
    fit_values,
    fitted_intensity,
    needs_fit,
    resolve_kind,
    same_mapping,
    summarise,
    unit_of,
)
from imgsynth.data.process import (
    WORK,
    load_dataset_intensity,
    preprocess_minibatch,
    remove_items,
    stats_minibatch,
    work_dir,
)
from imgsynth.data.sources import Unit, assign_pseudonyms, discover, is_template, join_labels, stable_order
from imgsynth.data.splits import block_splits, subject_splits
from imgsynth.errors import EXIT_OK, EXIT_PARTIAL, ConfigError, InputError, UsageError
from imgsynth.provenance import git_commit, package_versions
from imgsynth.utils.io import atomic_write_json, atomic_write_text, is_within
from imgsynth.utils.log import get_logger

log = get_logger("data")
ERRORS = "errors.jsonl"


@dataclass
class PreprocessResult:
    """What a preprocess run produced."""

    out_dir: Path
    dataset: Dataset | None
    errors: list[dict[str, str]] = field(default_factory=list)
    resumed: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.errors else EXIT_OK

    def summary(self) -> str:
        if self.dataset is None:
            return f"no dataset written; {len(self.errors)} input(s) skipped (see {self.out_dir / ERRORS})"
        info = self.dataset.info
        splits = ", ".join(f"{k} {v}" for k, v in info.splits.items())
        skipped = f"; {len(self.errors)} skipped (see {self.out_dir / ERRORS})" if self.errors else ""
        return f"{len(self.dataset.rows)} items ({splits}), shape {info.shape} -> {self.out_dir}{skipped}"


def resolve_config(config: PreprocessConfig | str | Path | None, overrides: Sequence[str] = ()) -> PreprocessConfig:
    """A config object from an object, a built-in name or a YAML path (defaults when None)."""
    if isinstance(config, PreprocessConfig):
        if overrides:
            from imgsynth.config import apply_overrides, validate_config

            data = apply_overrides(config.model_dump(mode="json"), list(overrides))
            return validate_config(PreprocessConfig, data)
        return config
    if config is None:
        from imgsynth.config import apply_overrides, validate_config

        return validate_config(PreprocessConfig, apply_overrides({}, list(overrides)))
    cfg = load_config(config, overrides, expect_kind="preprocess")
    assert isinstance(cfg, PreprocessConfig)
    return cfg


def _inputs_hash(inputs: Sequence[str]) -> str:
    norm = [s if is_template(s) else str(Path(s).expanduser().resolve()) for s in inputs]
    return hashlib.sha256(json.dumps(norm).encode()).hexdigest()[:16]


def _public_config(cfg: PreprocessConfig) -> dict[str, Any]:
    """The config as recorded in dataset.json: no secret, no local path."""
    data = config_to_dict(cfg)
    data["subject_key"] = None
    if data.get("labels_csv"):
        data["labels_csv"]["path"] = Path(data["labels_csv"]["path"]).name
    return data


def _check_out_dir(inputs: Sequence[str], out: Path) -> None:
    for spec in inputs:
        if is_template(spec):
            continue
        src = Path(spec).expanduser()
        if src.exists() and (is_within(out, src) or (src.is_dir() and is_within(src, out))):
            raise UsageError(f"output folder {out} overlaps input {spec}; choose a folder outside the inputs")


# ---------------------------------------------------------------------------------------------
# The API function, and its steps (plan -> [fit] -> mini-batches -> finish)
# ---------------------------------------------------------------------------------------------
def preprocess(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PreprocessConfig | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    workers: int | None = None,
) -> PreprocessResult:
    """Preprocess DICOM trees, NIfTI folders/files, ``nilearn:mni152`` or MedMNIST ``.npz`` files
    into one dataset folder at ``out_dir``. Skipped series are listed in ``out_dir/errors.jsonl``."""
    from imgsynth.batch import run_minibatches

    cfg = resolve_config(config, overrides)
    specs = [str(s) for s in inputs]
    out = Path(out_dir).expanduser()
    npz = [s for s in specs if s.lower().endswith(".npz")]
    if npz and len(npz) == len(specs):
        _check_out_dir(specs, out)
        return _preprocess_medmnist(npz, out, cfg)
    done = _completed(out, config_hash(cfg), _inputs_hash(specs)) if specs else None
    if done is not None:
        log.info("output already complete for these inputs and config: %s", out)
        return done
    n_workers = workers or cfg.workers
    records = plan_preprocess(specs, out, cfg, workers=n_workers)
    config_data = cfg.model_dump(mode="json")

    # Fit one intensity mapping over the whole dataset (intensity.scope: dataset).
    if needs_dataset_fit(cfg, records) and not (work_dir(out) / "intensity.json").is_file():
        entry = partial(stats_minibatch, out_dir=str(out), config=config_data)
        run_minibatches(entry, records, workers=n_workers, batch_size=cfg.batch_size, description="intensity fit")
        fit_intensity(out, cfg)

    # Process every unit, then collect.
    entry = partial(preprocess_minibatch, out_dir=str(out), config=config_data)
    run_minibatches(entry, records, workers=n_workers, batch_size=cfg.batch_size, description="preprocessing")
    return finish_preprocess(out, cfg)


def plan_preprocess(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PreprocessConfig | str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Step 1: find the units of ``inputs``; returns their records (the mini-batch items) and keeps
    the plan in ``OUT/.work/plan.json``. An unfinished plan for the same inputs and config is resumed."""
    cfg = resolve_config(config, overrides)
    specs = [str(s) for s in inputs]
    if not specs:
        raise UsageError("no input given")
    out = Path(out_dir).expanduser()
    _check_out_dir(specs, out)
    if any(s.lower().endswith(".npz") for s in specs):
        raise UsageError("MedMNIST .npz inputs cannot be merged with DICOM/NIfTI inputs; preprocess them separately")
    chash, ihash = config_hash(cfg), _inputs_hash(specs)
    if _completed(out, chash, ihash) is not None:
        raise UsageError(f"output folder {out} already holds the finished dataset of these inputs and config")
    key = (cfg.subject_key or os.environ.get("IMGSYNTH_SUBJECT_KEY") or secrets.token_hex(32)).encode()
    units = _plan(specs, out, cfg, key, chash, ihash, workers or cfg.workers)
    return [u.to_json() for u in units]


def needs_dataset_fit(cfg: PreprocessConfig, records: Sequence[dict[str, Any]]) -> bool:
    """True when ``intensity.scope: dataset`` asks for a fit (run :func:`stats_minibatch` first)."""
    if cfg.intensity.scope != "dataset":
        return False
    modality = next((r["fields"].get("modality", "") for r in records if r.get("error") is None), "")
    return needs_fit(cfg.intensity, resolve_kind(cfg.intensity, modality))


def fit_intensity(out_dir: str | Path, config: PreprocessConfig | str | Path | None = None) -> Intensity | None:
    """Step 2 (``intensity.scope: dataset`` only): one mapping from the voxel samples that
    :func:`stats_minibatch` left in ``OUT/.work/stats``; saved for the mini-batches and finish."""
    cfg = resolve_config(config)
    out = Path(out_dir)
    units = _read_plan(out)
    samples = [np.load(p) for u in units if (p := work_dir(out) / "stats" / f"{u.uid}.npy").is_file()]
    if not samples:
        return None
    modality = next((u.fields.get("modality", "") for u in units if u.error is None), "")
    kind = resolve_kind(cfg.intensity, modality)
    low, high = fit_values(cfg.intensity, kind, np.concatenate(samples))
    intensity = fitted_intensity(cfg.intensity, kind, unit_of(cfg.intensity, modality), low, high, "dataset")
    atomic_write_json(work_dir(out) / "intensity.json", intensity.model_dump(mode="json"))
    return intensity


def finish_preprocess(out_dir: str | Path, config: PreprocessConfig | str | Path | None = None) -> PreprocessResult:
    """Step 4: collect the mini-batch results in ``OUT/.work`` into the dataset folder."""
    cfg = resolve_config(config)
    out = Path(out_dir)
    plan = json.loads((work_dir(out) / "plan.json").read_text(encoding="utf-8"))
    units = [Unit.from_json(u) for u in plan["units"]]
    results = []
    for unit in units:
        path = work_dir(out) / "results" / f"{unit.uid}.json"
        results.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"uid": unit.uid, "error": "not processed"})
    return finish(out, cfg, units, results, load_dataset_intensity(out), chash=plan["config_hash"], ihash=plan["inputs_hash"])


def _read_plan(out: Path) -> list[Unit]:
    plan_path = work_dir(out) / "plan.json"
    if not plan_path.is_file():
        raise UsageError(f"no plan in {out} (run plan_preprocess first)")
    return [Unit.from_json(u) for u in json.loads(plan_path.read_text(encoding="utf-8"))["units"]]


def _completed(out: Path, chash: str, ihash: str) -> PreprocessResult | None:
    """The finished dataset of these inputs and config in ``out``; None when ``out`` is free (empty,
    an unfinished run, or only the errors.jsonl of a run that found nothing usable)."""
    if not out.exists() or {p.name for p in out.iterdir()} <= {ERRORS}:
        return None
    info_path = out / "dataset.json"
    if (work_dir(out) / "plan.json").is_file():
        return None
    if info_path.is_file() and not work_dir(out).exists():
        try:
            source = json.loads(info_path.read_text(encoding="utf-8")).get("source", {})
        except (OSError, json.JSONDecodeError):
            source = {}
        if source.get("config_hash") == chash and source.get("inputs_hash") == ihash:
            from imgsynth.utils.io import read_jsonl

            return PreprocessResult(out, Dataset.read(out), read_jsonl(out / ERRORS), resumed=True)
        raise UsageError(f"output folder {out} holds a dataset made from other inputs or config; choose an empty folder")
    raise UsageError(f"output folder {out} is not empty and holds no unfinished preprocess run; choose an empty folder")


def _plan(
    specs: list[str], out: Path, cfg: PreprocessConfig, key: bytes, chash: str, ihash: str, workers: int
) -> list[Unit]:
    plan_path = work_dir(out) / "plan.json"
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        if plan.get("config_hash") == chash and plan.get("inputs_hash") == ihash:
            log.info("resuming the unfinished run in %s", out)
            return [Unit.from_json(u) for u in plan["units"]]
        log.info("discarding an unfinished run with other inputs or config in %s", out)
        for sub in ("items", "masks", WORK):
            shutil.rmtree(out / sub, ignore_errors=True)
    units, ignored = discover(specs, cfg, workers=workers)
    if ignored:
        log.info("%d file(s) were neither DICOM nor NIfTI and were ignored", ignored)
    if not units:
        raise InputError(
            f"no DICOM series, NIfTI volume or MedMNIST file found in {', '.join(specs)} "
            f"({ignored} other file(s) ignored); check the input paths"
        )
    join_labels(units, cfg)
    assign_pseudonyms(units, key)
    kinds = {resolve_kind(cfg.intensity, u.fields.get("modality", "")) for u in units if u.error is None}
    if len(kinds) > 1:
        raise ConfigError(f"inputs need different intensity mappings ({', '.join(sorted(kinds))}); set intensity.kind")
    work_dir(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, {"config_hash": chash, "inputs_hash": ihash, "units": [u.to_json() for u in units]})
    return units


# ---------------------------------------------------------------------------------------------
# Finish: conditions, splits, manifest, dataset.json, errors.jsonl
# ---------------------------------------------------------------------------------------------
def finish(
    out: Path,
    cfg: PreprocessConfig,
    units: list[Unit],
    results: list[dict[str, Any]],
    dataset_intensity: Intensity | None,
    *,
    chash: str,
    ihash: str,
) -> PreprocessResult:
    """Collect unit results into the dataset folder (the last step of :func:`preprocess`)."""
    by_uid = {r["uid"]: r for r in results}
    errors: list[dict[str, str]] = []
    kept: list[tuple[Unit, dict[str, Any], dict[str, str]]] = []
    series_specs = [s for s in cfg.conditions if s.type != "mask" and s.source not in SLICE_SOURCES]
    for unit in units:
        result = by_uid.get(unit.uid, {"error": "not processed"})
        if result.get("error"):
            errors.append({"input": unit.label, "reason": result["error"]})
            continue
        try:
            values = {s.name: series_value(s, unit.fields) for s in series_specs}
        except MissingValue as exc:
            errors.append({"input": unit.label, "reason": str(exc)})
            remove_items(out, result["items"])
            continue
        kept.append((unit, result, values))

    rows, lines = [], []
    for unit, result, values in kept:
        for item in result["items"]:
            row: dict[str, Any] = {"id": item["id"], "path": item["path"], "split": "", "subject": unit.subject}
            for spec in cfg.conditions:
                kind, _, arg = spec.source.partition(":")
                if spec.type == "mask":
                    row[spec.name] = item["masks"][arg]
                elif spec.source in SLICE_SOURCES:
                    row[spec.name] = item["fields"][spec.source]
                else:
                    row[spec.name] = values[spec.name]
            rows.append(row)
            lines.append((unit.uid, item.get("plane", ""), item.get("k", 0), item))

    # Splits: seeded over raw keys (the same in every run whatever the pseudonym key).
    ordered = stable_order([unit for unit, _, _ in kept])
    rank = {unit.uid: n for n, unit in enumerate(ordered)}
    if cfg.split.by == "subject":
        raw_split = subject_splits([u.keys.get("subject", u.uid) for u in ordered], cfg.split)
        split_of = {u.subject: raw_split[u.keys.get("subject", u.uid)] for u in ordered}
        for row in rows:
            row["split"] = split_of[row["subject"]]
    else:
        assigned = block_splits([(f"{rank[uid]:08d}/{line}", k) for uid, line, k, _ in lines], cfg.split)
        dropped = [lines[n][3] for n, s in assigned.items() if s is None]
        remove_items(out, dropped)
        keep = []
        for n, row in enumerate(rows):
            if assigned[n] is not None:
                row["split"] = assigned[n]
                keep.append(row)
        rows = keep

    _write_errors(out, errors)
    if not rows:
        shutil.rmtree(work_dir(out), ignore_errors=True)
        first = f"; first: {errors[0]['input']}: {errors[0]['reason']}" if errors else ""
        raise InputError(f"no usable input: {len(errors)} series skipped (see {out / ERRORS}){first}")

    info = _dataset_info(cfg, kept, rows, dataset_intensity, chash, ihash, units)
    dataset = write_dataset(out, info, rows)
    shutil.rmtree(work_dir(out), ignore_errors=True)
    return PreprocessResult(out, dataset, errors)


def _write_errors(out: Path, errors: list[dict[str, str]]) -> None:
    path = out / ERRORS
    if errors:
        atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in errors))
    else:
        path.unlink(missing_ok=True)


def _dataset_info(
    cfg: PreprocessConfig,
    kept: list[tuple[Unit, dict[str, Any], dict[str, str]]],
    rows: list[dict[str, Any]],
    dataset_intensity: Intensity | None,
    chash: str,
    ihash: str,
    units: list[Unit],
) -> DatasetInfo:
    # Shape: fixed for arrays; native volumes may vary (-1 where they do).
    in_rows = {row["id"] for row in rows}
    shapes = {tuple(item["shape"]) for _, r, _ in kept for item in r["items"] if item["id"] in in_rows}
    if len(shapes) == 1:
        shape = list(next(iter(shapes)))
    else:
        dims = list(zip(*shapes, strict=True))
        shape = [d[0] if len(set(d)) == 1 else -1 for d in dims]
        if cfg.output != "nifti":
            log.warning("items differ in shape (dataset.json records -1); set spatial.size for fixed-size models")

    spacings = {tuple(s) for _, r, _ in kept for s in r["spacing"]}
    spacing = list(next(iter(spacings))) if len(spacings) == 1 else None

    intensities = [Intensity.model_validate(r["intensity"]) for _, r, _ in kept]
    if dataset_intensity is not None:
        intensity = dataset_intensity
    elif same_mapping(intensities):
        intensity = intensities[0]
    else:
        intensity = summarise(
            {unit.series: (i.low or 0.0, i.high or 0.0) for (unit, _, _), i in zip(kept, intensities, strict=True)},
            intensities[0],
        )

    values: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        for spec in cfg.conditions:
            if spec.type != "mask":
                values[spec.name].append(str(row[spec.name]))
    conditions = build_conditions(cfg, values)

    kinds = defaultdict(int)
    for unit in units:
        kinds[unit.kind] += 1
    source = {
        "kind": "preprocess",
        "inputs": [{"kind": k, "units": n} for k, n in sorted(kinds.items())],
        "series": len(kept),
        "skipped": len(units) - len(kept),
        "modalities": sorted({r.get("modality", "") for _, r, _ in kept}),
        "corrections": {unit.series: r["notes"] for unit, r, _ in kept if r.get("notes")},
        "config": _public_config(cfg),
        "config_hash": chash,
        "inputs_hash": ihash,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return DatasetInfo(
        spatial_dims=cfg.spatial_dims,
        shape=shape,
        spacing=spacing,
        orientation=cfg.spatial.orientation,
        intensity=intensity,
        conditions=conditions,
        source=source,
    )


# ---------------------------------------------------------------------------------------------
# MedMNIST inputs
# ---------------------------------------------------------------------------------------------
def _preprocess_medmnist(npz: list[str], out: Path, cfg: PreprocessConfig) -> PreprocessResult:
    from imgsynth.data.medmnist import import_medmnist_many

    if out.exists() and not {p.name for p in out.iterdir()} <= {ERRORS, "items"}:
        raise UsageError(f"output folder {out} is not empty; choose an empty folder")
    shutil.rmtree(out / "items", ignore_errors=True)  # an interrupted import: start again
    dataset, errors = import_medmnist_many(
        [Path(p) for p in npz], out, size=cfg.medmnist.size, max_per_split=cfg.medmnist.max_per_split, dtype=cfg.dtype
    )
    _write_errors(out, errors)
    return PreprocessResult(out, dataset, errors)
