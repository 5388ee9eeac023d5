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

from imgsynth.contracts import Condition, Dataset, DatasetInfo, RunFolder
from imgsynth.errors import ImgsynthError, InputError, UsageError
from imgsynth.utils.log import get_logger

log = get_logger("generate")
FORMATS = ("png", "nifti")


@dataclass(frozen=True)
class SampleRequest:
    """One image to generate: its index in the set, its seed and its conditions (manifest values)."""

    index: int
    seed: int
    condition: dict[str, str | float] = field(default_factory=dict)
    name: str | None = None  # id when not numbered by index (batch endpoint requests)

    @property
    def id(self) -> str:
        return self.name or f"synthetic-{self.index:06d}"


@dataclass
class SampleSettings:
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    formats: tuple[str, ...] = FORMATS
    options: dict[str, float] = field(default_factory=dict)  # family-specific (``ImageGenerator.options``)
    precision: str | None = None  # fp32 | bf16 (default: bf16 on CUDA, fp32 elsewhere)
    provenance: dict[str, Any] = field(default_factory=dict)  # stamped on every file: run, checkpoint hash, ...
    dicom: Any = None  # imgsynth.generate.dicom.DicomSettings, needed for the "dicom" format
    digests: dict[str, str] = field(default_factory=dict)  # mask file -> content hash


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


def plan(conditions: Sequence[Condition], n: int, fixed: Mapping[str, str], seed: int, *,
         start: int = 0) -> list[SampleRequest]:
    """Requests for items ``start .. start + n - 1``; conditions not in ``fixed`` are drawn per item from ``(seed, i)``."""
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
    for i in range(start, start + n):
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
    from imgsynth.generate.outputs import inference, write_sample

    try:
        cond = encode_conditions(generator.info, requests)
        with inference(getattr(generator, "device", "cpu"), settings.precision):
            images = generator.sample(cond, [r.seed for r in requests], sampler=settings.sampler, steps=settings.steps,
                                      guidance=settings.guidance, **settings.options)
    except ImgsynthError as exc:
        return [SampleResult(r, error=str(exc)) for r in requests]
    arrays = images.detach().float().cpu().numpy()
    conditions = [generator.info.condition(name) for name in generator.condition_names]
    results = []
    for req, image in zip(requests, arrays, strict=True):
        try:
            row = write_sample(out_dir, req.id, req.index, req.seed, req.condition, image, generator.info, conditions,
                               formats=settings.formats, provenance=settings.provenance, digests=settings.digests,
                               dicom=settings.dicom)
            results.append(SampleResult(req, row=row))
        except (OSError, ImgsynthError) as exc:
            results.append(SampleResult(req, error=f"{type(exc).__name__}: {exc}"))
    return results


_GENERATORS: dict[tuple[str, str], Any] = {}


def load_generator(run_dir: str | Path, device: str | torch.device | None = None) -> Any:
    """The generator of a run folder or checkpoint (its family's ``load_generator``; see
    :mod:`imgsynth.generate.checkpoint`), on ``device`` (GPU when present)."""
    from imgsynth.generate.checkpoint import resolve_checkpoint
    from imgsynth.training.task import get_family

    run = resolve_checkpoint(run_dir)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return get_family(run.model_info().family).load_generator(run, dev)


def generate_items(requests: list[SampleRequest], *, run_dir: str, out_dir: str, settings: SampleSettings,
                   device: str | None = None) -> list[SampleResult]:
    """Mini-batch entry for process pools and batch endpoints (generator loaded once per process)."""
    key = (str(Path(run_dir).resolve()), str(device))
    if key not in _GENERATORS:
        _GENERATORS[key] = load_generator(run_dir, device)
    return generate_batch(_GENERATORS[key], requests, out_dir, settings)


def check_settings(generator: Any, settings: SampleSettings, family: str) -> None:
    """Refuse settings the generator does not take, naming the option (before anything is sampled)."""
    accepted = getattr(generator, "options", {})
    for name in settings.options:
        if name not in accepted:
            raise UsageError(f"--{name} does not apply to a {family} model (its options: {', '.join(accepted) or 'none'})")
    for name, value, default in (("steps", settings.steps, generator.default_steps),
                                 ("guidance", settings.guidance, generator.default_guidance)):
        if value is not None and default is None:  # a generator without a default does not take the setting
            raise UsageError(f"--{name} does not apply to a {family} model")
    if settings.sampler is not None and settings.sampler not in generator.samplers:
        raise UsageError(f"--sampler '{settings.sampler}' is not available for this model "
                         f"(choose from {', '.join(generator.samplers)})")


def generate(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    n: int | None = None,
    conditions: Mapping[str, str] | Sequence[str] | None = None,
    conditions_csv: str | Path | None = None,
    masks_from: str | Path | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    options: Mapping[str, float] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    formats: Sequence[str] = FORMATS,
    num_processes: int = 1,
    device: str | torch.device | None = None,
    precision: str | None = None,
    dicom_modality: str = "auto",
    uid_root: str | None = None,
    evaluation: str | Path | None = None,
) -> Dataset:
    """Write samples of the run (or checkpoint) at ``run_dir`` as a sample set in ``out_dir``; returns it.

    ``n`` samples with ``conditions`` fixed, or the rows of ``conditions_csv``; mask conditions from
    ``masks_from`` (a dataset folder). ``options`` are the family's own sampling options
    (``truncation`` of StyleGAN2). ``formats``: any of png, nifti, dicom beside the ``.npy`` items.
    ``num_processes`` > 1 splits the work over that many processes (GPUs) through accelerate.
    Re-running with the same settings resumes an interrupted set (or extends it to a larger ``n``).
    See :mod:`imgsynth.generate.runner` and README.md.
    """
    from imgsynth.generate.runner import GenerateJob, launch, run_job

    fixed = parse_conditions(conditions) if isinstance(conditions, Sequence) and not isinstance(conditions, str) else dict(conditions or {})
    job = GenerateJob(
        checkpoint=str(run_dir), out_dir=str(out_dir), n=n, conditions=fixed,
        conditions_csv=None if conditions_csv is None else str(conditions_csv),
        masks_from=None if masks_from is None else str(masks_from), sampler=sampler, steps=steps, guidance=guidance,
        options=dict(options or {}), seed=seed, batch_size=batch_size, formats=list(formats),
        device=None if device is None else str(device), precision=precision, dicom_modality=dicom_modality,
        uid_root=uid_root, evaluation=None if evaluation is None else str(evaluation),
    )
    job.check()
    if num_processes > 1:
        return launch(job, num_processes)
    return run_job(job)
