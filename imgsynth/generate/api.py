"""``imgsynth generate``: a run folder in, a sample set (a dataset folder, split ``synthetic``) out.

Three layers, one code path:

* :func:`plan` turns (n, fixed conditions, seed) into :class:`SampleRequest` s: item ``i`` gets
  the seed ``item_seed(seed, i)`` and its conditions (given ones, or drawn from ``(seed, i)``:
  categories in turn, continuous values uniform in their range);
* :func:`generate_batch` (the mini-batch entry) samples one list of requests with a loaded
  generator and writes each item (``.npy``, PNG, NIfTI); :func:`generate_items` is the same
  for a process pool or a batch endpoint, loading the generator once per process;
* :func:`generate` runs the plan in batches and writes ``manifest.csv`` and ``dataset.json``
  (with the ``generator`` block: run, checkpoint hash, sampler, steps, guidance, seed).

Image ``i`` depends only on (seed, i, its conditions) and the sampler settings, never on the
batch size or on which batch it fell in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgsynth.contracts import Condition, Dataset, DatasetInfo, RunFolder, save_item, write_dataset
from imgsynth.errors import ContractError, ImgsynthError, InputError, UsageError
from imgsynth.generate.writers import write_nifti, write_npy, write_png
from imgsynth.utils.io import is_within
from imgsynth.utils.log import get_logger, progress

log = get_logger("generate")
FORMATS = ("png", "nifti")


@dataclass(frozen=True)
class SampleRequest:
    """One image to generate: its index in the set, its seed and its conditions (manifest values)."""

    index: int
    seed: int
    condition: dict[str, str | float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"synthetic-{self.index:06d}"


@dataclass
class SampleSettings:
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    formats: tuple[str, ...] = FORMATS
    options: dict[str, float] = field(default_factory=dict)  # family-specific (``ImageGenerator.options``)


@dataclass
class SampleResult:
    """Outcome of one request: the manifest row, or the one-line reason it failed."""

    request: SampleRequest
    row: dict[str, Any] | None = None
    error: str | None = None


def item_seed(seed: int, index: int) -> int:
    """Seed of item ``index`` of a set generated with ``seed`` (31 bits, stored in the manifest)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def parse_conditions(pairs: Sequence[str]) -> dict[str, str]:
    """``["label=pneumonia", "age=40"]`` -> ``{"label": "pneumonia", "age": "40"}``."""
    out: dict[str, str] = {}
    for text in pairs:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--condition '{text}' must look like name=value")
        out[name.strip()] = value.strip()
    return out


def plan(conditions: Sequence[Condition], n: int, fixed: Mapping[str, str], seed: int) -> list[SampleRequest]:
    """Requests for ``n`` items; conditions not in ``fixed`` are drawn per item from ``(seed, i)``."""
    names = [c.name for c in conditions]
    unknown = [k for k in fixed if k not in names]
    if unknown:
        raise UsageError(f"--condition '{unknown[0]}' is not a condition of this model (it has: {', '.join(names) or 'none'})")
    parsed: dict[str, str | float] = {}
    for cond in conditions:
        if cond.name in fixed:
            try:
                parsed[cond.name] = cond.parse(fixed[cond.name])
            except ValueError as exc:
                raise UsageError(f"--condition {cond.name}: {exc}") from None
            if cond.type == "continuous":
                lo, hi = cond.range or (0.0, 1.0)
                if not lo <= float(parsed[cond.name]) <= hi:
                    raise UsageError(f"--condition {cond.name}={parsed[cond.name]} is outside the trained range [{lo}, {hi}]")
        elif cond.type == "mask":
            raise UsageError(f"condition '{cond.name}' is a mask: pass --condition {cond.name}=PATH.npy")
    requests = []
    for i in range(n):
        s = item_seed(seed, i)
        values = dict(parsed)
        for cond in conditions:
            if cond.name in values:
                continue
            if cond.type == "categorical":
                cats = cond.categories or []
                values[cond.name] = cats[i % len(cats)]
            else:
                lo, hi = cond.range or (0.0, 1.0)
                u = np.random.default_rng([s, 1]).random()
                values[cond.name] = float(lo + (hi - lo) * u)
        requests.append(SampleRequest(index=i, seed=s, condition=values))
    return requests


def encode_conditions(info: DatasetInfo, requests: Sequence[SampleRequest]) -> dict[str, torch.Tensor]:
    """Encode the requests' conditions as the training loader did (``ConditionEncoder``)."""
    from imgsynth.data.loading import ConditionEncoder

    if not requests:
        return {}
    names = list(requests[0].condition)
    enc = ConditionEncoder(info, names)
    out: dict[str, torch.Tensor] = {}
    for cond in enc.conditions:
        if cond.type == "mask":
            arrays = []
            for r in requests:
                path = Path(str(r.condition[cond.name])).expanduser()
                try:
                    arr = np.load(path, allow_pickle=False).astype(np.float32)
                except (OSError, ValueError) as exc:
                    raise InputError(f"cannot read mask ({exc})", path=path) from None
                want = (cond.channels, *info.shape[1:])
                if tuple(arr.shape) != want:
                    raise InputError(f"mask shape {tuple(arr.shape)} is not {want}", path=path)
                arrays.append(torch.from_numpy(arr))
            out[cond.name] = torch.stack(arrays)
        else:
            out[cond.name] = torch.stack([enc.encode_value(cond, r.condition[cond.name]) for r in requests])
    return out


def sample_set_info(generator: Any, settings: SampleSettings, seed: int, run: RunFolder, n: int) -> DatasetInfo:
    """``dataset.json`` of the sample set: the training schema (conditions the model uses) + ``generator``."""
    info: DatasetInfo = generator.info
    used = [info.condition(name) for name in generator.condition_names]
    resolve = getattr(generator, "resolve_settings", None)  # the values a generator fills in for defaults
    if resolve is not None:
        sampler, steps, guidance = resolve(settings.sampler, settings.steps, settings.guidance)
    else:
        sampler = settings.sampler or generator.samplers[0]
        steps = settings.steps or generator.default_steps
        guidance = generator.default_guidance if settings.guidance is None else settings.guidance
    model = run.model_info()
    return info.model_copy(update={
        "conditions": used,
        "splits": {},
        "source": {"kind": "generated", "run": str(run.root.resolve()), "training_source": info.source},
        "generator": {
            "run": str(run.root.resolve()),
            "family": model.family,
            "config_hash": model.config_hash,
            "checkpoint": generator.checkpoint,
            "sampler": sampler,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "n": n,
            "options": {**getattr(generator, "options", {}), **settings.options},
            "latent_scale_factor": getattr(generator, "scale_factor", None),
        },
    })


def generate_batch(generator: Any, requests: Sequence[SampleRequest], out_dir: str | Path,
                   settings: SampleSettings) -> list[SampleResult]:
    """Mini-batch entry: sample ``requests`` in one pass and write each item; never raises per item."""
    out_dir = Path(out_dir)
    if not requests:
        return []
    try:
        cond = encode_conditions(generator.info, requests)
        images = generator.sample(cond, [r.seed for r in requests], sampler=settings.sampler, steps=settings.steps,
                                  guidance=settings.guidance, **settings.options)
    except ImgsynthError as exc:
        return [SampleResult(r, error=str(exc)) for r in requests]
    arrays = images.detach().float().cpu().numpy()
    masks = [c.name for c in generator.info.conditions if c.type == "mask" and c.name in cond]
    results = []
    for b, (req, image) in enumerate(zip(requests, arrays, strict=True)):
        try:
            row: dict[str, Any] = {"id": req.id, "path": write_npy(out_dir, req.id, image), "split": "synthetic",
                                   "subject": req.id, **req.condition, "seed": req.seed}
            for name in masks:  # the sample set carries the masks it was conditioned on
                row[name] = save_item(out_dir, f"masks/{req.id}-{name}.npy", cond[name][b].cpu().numpy())
            if "png" in settings.formats:
                row["png"] = write_png(out_dir, req.id, image)
            if "nifti" in settings.formats:
                row["nifti"] = write_nifti(out_dir, req.id, image, generator.info)
            results.append(SampleResult(req, row=row))
        except (OSError, ImgsynthError) as exc:
            results.append(SampleResult(req, error=f"{type(exc).__name__}: {exc}"))
    return results


_GENERATORS: dict[tuple[str, str], Any] = {}


def load_generator(run_dir: str | Path, device: str | torch.device | None = None) -> Any:
    """The run's generator (its family's ``load_generator``), on ``device`` (GPU when present)."""
    from imgsynth.training.task import get_family

    run = RunFolder.read(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return get_family(run.model_info().family).load_generator(run, dev)


def generate_items(requests: list[SampleRequest], *, run_dir: str, out_dir: str, settings: SampleSettings,
                   device: str | None = None) -> list[SampleResult]:
    """Mini-batch entry for process pools and batch endpoints (generator loaded once per process)."""
    key = (str(Path(run_dir).resolve()), str(device))
    if key not in _GENERATORS:
        _GENERATORS[key] = load_generator(run_dir, device)
    return generate_batch(_GENERATORS[key], requests, out_dir, settings)


def generate(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    n: int,
    conditions: Mapping[str, str] | Sequence[str] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    options: Mapping[str, float] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    formats: Sequence[str] = FORMATS,
    device: str | torch.device | None = None,
) -> Dataset:
    """Write ``n`` samples of the run at ``run_dir`` as a sample set in ``out_dir``; returns it.

    ``options`` are the family's own sampling options (``--truncation`` of StyleGAN2).
    """
    if n < 1:
        raise UsageError("--n must be at least 1")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UsageError(f"unknown format '{bad[0]}' (choose from {', '.join(FORMATS)})")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if is_within(out_dir, run_dir):
        raise UsageError(f"output folder {out_dir} must not lie inside the run folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "dataset.json").exists():
        raise UsageError(f"{out_dir} exists and is not a sample set; choose an empty or new OUT_DIR")
    fixed = parse_conditions(conditions) if isinstance(conditions, Sequence) and not isinstance(conditions, str) else dict(conditions or {})
    generator = load_generator(run_dir, device)
    run = RunFolder.read(run_dir)
    settings = SampleSettings(sampler=sampler, steps=steps, guidance=guidance, formats=tuple(formats),
                              options=dict(options or {}))
    family, accepted = run.model_info().family, getattr(generator, "options", {})
    for name in settings.options:
        if name not in accepted:
            raise UsageError(f"--{name} does not apply to a {family} model (its options: {', '.join(accepted) or 'none'})")
    for name, value, default in (("steps", steps, generator.default_steps), ("guidance", guidance, generator.default_guidance)):
        if value is not None and default is None:  # a generator without a default does not take the setting
            raise UsageError(f"--{name} does not apply to a {family} model")
    if settings.sampler is not None and settings.sampler not in generator.samplers:
        raise UsageError(f"--sampler '{sampler}' is not available for this model (choose from {', '.join(generator.samplers)})")
    info = sample_set_info(generator, settings, seed, run, n)
    requests = plan(info.conditions, n, fixed, seed)
    batches = [requests[i : i + batch_size] for i in range(0, n, batch_size)]
    results: list[SampleResult] = []
    for batch in progress(batches, total=len(batches), description="generating"):
        results.extend(generate_batch(generator, batch, out_dir, settings))
    failed = [r for r in results if r.error]
    if failed:
        raise ContractError(f"{len(failed)} of {n} samples failed; first: {failed[0].error}", path=out_dir)
    rows = [r.row for r in results if r.row is not None]
    log.info("wrote %d samples to %s", len(rows), out_dir)
    return write_dataset(out_dir, info, rows)
