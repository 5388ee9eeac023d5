"""Generation at scale: resumable, split over processes, one code path for 1 or N processes.

:func:`run_job` runs in every process (one, or each process ``accelerate launch`` starts):

1. load the generator (EMA weights of the run or checkpoint) on this process's device; check the
   settings; build the list of requests (:mod:`imgsynth.generate.requests`) - every process builds
   the same list;
2. compare with what ``OUT_DIR`` already holds: ``.generate/state.json`` (the settings a set was
   started with; other settings are refused), the per-process journals ``.generate/done-*.jsonl``
   and ``manifest.csv``. A sample counts as done when its record matches its request (seed and
   conditions) and its files are present with the recorded sizes; everything else is (re)made;
3. the main process writes ``state.json`` (with the set's random UID, used for DICOM) and the model
   card; every process then takes its share of the remaining samples
   (``PartialState.split_between_processes``: contiguous, no overlap), samples them in batches and
   appends one journal line per finished sample;
4. the main process writes ``manifest.csv`` and ``dataset.json`` once every sample is done.

Sample ``i`` depends only on (seed, i, its conditions) and the settings, so batch size, process
count and restarts change nothing in the images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsynth.contracts import Condition, Dataset, DatasetInfo, read_manifest, write_dataset
from imgsynth.errors import ContractError, ImgsynthError, UsageError
from imgsynth.utils.io import append_jsonl, atomic_write_json, is_within, read_jsonl
from imgsynth.utils.log import get_logger, progress

log = get_logger("generate")
ALL_FORMATS = ("png", "nifti", "dicom")
SAMPLER_ALIASES = {"dpmpp": "dpm++", "dpm-solver++": "dpm++", "rflow": "euler"}  # command-line names
CLI_SAMPLER_NAMES = {"dpm++": "dpmpp", "euler": "rflow"}
STATE_DIR = ".generate"
IDENTITY = ("checkpoint_sha256", "family", "sampler", "steps", "guidance", "options", "seed", "formats", "precision",
            "dicom_modality", "uid_root")


@dataclass
class GenerateJob:
    """Everything a process needs to take part in a generation run (JSON-serialisable)."""

    checkpoint: str
    out_dir: str
    n: int | None = None
    conditions: dict[str, str] = field(default_factory=dict)
    conditions_csv: str | None = None
    masks_from: str | None = None
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    options: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 16
    formats: list[str] = field(default_factory=lambda: ["png", "nifti"])
    device: str | None = None
    precision: str | None = None
    dicom_modality: str = "auto"
    uid_root: str | None = None
    evaluation: str | None = None

    def check(self) -> None:
        """Checks that need no model (run in the calling process before anything starts)."""
        if self.n is not None and self.n < 1:
            raise UsageError("--n must be at least 1")
        if self.n is None and self.conditions_csv is None:
            raise UsageError("give --n (or --conditions-csv with a count column)")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        bad = [f for f in self.formats if f not in ALL_FORMATS]
        if bad:
            raise UsageError(f"unknown format '{bad[0]}' (choose from {', '.join(ALL_FORMATS)})")
        if self.precision not in (None, "fp32", "bf16"):
            raise UsageError(f"--precision '{self.precision}' must be fp32 or bf16")
        if self.dicom_modality not in ("auto", "CT", "MR", "SC"):
            raise UsageError(f"--dicom-modality '{self.dicom_modality}' must be auto, CT, MR or SC")
        if self.uid_root is not None:
            from imgsynth.export.dicom import check_uid_root

            check_uid_root(self.uid_root.rstrip("."))
        out = Path(self.out_dir)
        ckpt = Path(self.checkpoint)
        run_root = next((p for p in (ckpt, *ckpt.parents) if (p / "model.json").is_file()), None)
        if run_root is not None and is_within(out, run_root):
            raise UsageError(f"output folder {out} must not lie inside the run folder")
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not ((out / "dataset.json").exists() or (out / STATE_DIR).is_dir()):
            raise UsageError(f"{out} exists and is not a sample set; choose an empty or new OUT_DIR")


class LaunchError(ImgsynthError):
    """The processes started by ``--num-processes`` did not finish (their messages are above)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


# =============================================================================================
# One process's part
# =============================================================================================
def _distributed() -> Any:
    """accelerate's ``PartialState`` when this process is one of several, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU") == "1" or not torch.cuda.is_available())


def _barrier(state: Any) -> None:
    if state is not None:
        state.wait_for_everyone()


def run_job(job: GenerateJob) -> Dataset:
    """Take part in ``job`` (see module docstring); returns the finished sample set."""
    import torch

    from imgsynth.generate import api
    from imgsynth.generate.checkpoint import resolve_checkpoint
    from imgsynth.generate.outputs import default_precision

    state = _distributed()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if job.device is not None:
        device = torch.device(job.device)
    elif state is not None:
        device = torch.device(state.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))

    # Load and check (every process, identically: a refusal stops them all before any barrier).
    view = resolve_checkpoint(job.checkpoint)
    generator = api.load_generator(job.checkpoint, device)
    family = view.model_info().family
    settings = api.SampleSettings(
        sampler=SAMPLER_ALIASES.get(job.sampler, job.sampler) if job.sampler else None, steps=job.steps,
        guidance=job.guidance, formats=tuple(job.formats), options=dict(job.options),
        precision=job.precision or default_precision(device),
    )
    if settings.sampler is not None and settings.sampler not in generator.samplers:
        names = ", ".join(CLI_SAMPLER_NAMES.get(name, name) for name in generator.samplers)
        raise UsageError(f"--sampler '{job.sampler}' is not available for this model (choose from {names})")
    api.check_settings(generator, settings, family)
    if "dicom" in settings.formats:
        from imgsynth.generate.dicom import check_dicom

        check_dicom(generator.info, job.dicom_modality)
    requests, conditions, digests = _requests(job, generator)
    if job.evaluation:
        from imgsynth.generate.modelcard import find_evaluation

        find_evaluation(view, job.evaluation)  # a missing report stops every process here, not one of them later
    info = api.sample_set_info(generator, settings, job.seed, view, len(requests))
    identity = _identity(job, generator, settings, info, family)
    out = Path(job.out_dir)
    previous = read_state(out)
    _check_identity(previous, identity, out)
    done = completed(out, requests, conditions, digests, info)
    todo = [r for r in requests if r.id not in done]

    # Prepare the folder (main process), then every process reads the set's state.
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if previous is None:
            previous = {"format": "imgsynth-generate-state", "set_uid": uuid.uuid4().hex,
                        "created": _now(), "identity": identity}
        atomic_write_json(out / STATE_DIR / "state.json", {**previous, "status": "running", "n": len(requests)})
        _write_model_cards(view, out, job.evaluation, generator.checkpoint)
    _barrier(state)
    saved = read_state(out) or {}
    settings.digests = digests
    settings.provenance = _provenance(view, generator, settings, job.seed, family, info)
    if "dicom" in settings.formats:
        from imgsynth.generate.dicom import DicomSettings

        settings.dicom = DicomSettings(set_uid=saved["set_uid"], created=saved["created"],
                                       modality=job.dicom_modality, uid_root=job.uid_root)  # type: ignore[arg-type]
    if rank == 0 and len(done):
        log.info("%d of %d samples already in %s; making the other %d", len(done), len(requests), out, len(todo))

    # This process's share, batch by batch; one journal line per finished sample.
    mine = _share(state, todo)
    journal = out / STATE_DIR / f"done-{rank:03d}.jsonl"
    failures: list[str] = []
    batches = [mine[i : i + job.batch_size] for i in range(0, len(mine), job.batch_size)]
    for batch in progress(batches, total=len(batches), description=f"generating ({rank + 1}/{world})" if world > 1
                          else "generating"):
        for res in api.generate_batch(generator, batch, out, settings):
            if res.error is not None or res.row is None:
                failures.append(f"{res.request.id}: {res.error}")
                append_jsonl(out / STATE_DIR / "failed.jsonl", {"id": res.request.id, "error": res.error})
                continue
            append_jsonl(journal, {"id": res.request.id, "key": _key(res.request, conditions, digests),
                                   "row": res.row, "sizes": _sizes(out, res.row)})
    _barrier(state)

    # Finish (main process): the manifest lists every sample once all are done.
    if rank == 0:
        _finalize(out, requests, conditions, digests, info, identity, saved, settings)
    _barrier(state)
    if failures:
        raise ContractError(f"{len(failures)} samples failed in this process; first: {failures[0]} "
                            "(re-run the same command to retry them)", path=out)
    return Dataset.read(out)


def _requests(job: GenerateJob, generator: Any) -> tuple[list[Any], list[Condition], dict[str, str]]:
    """Every request of the job (the same list in every process), the model's conditions, mask hashes."""
    from imgsynth.generate.requests import build_requests, masks_from_dataset, read_conditions_csv

    info: DatasetInfo = generator.info
    conditions = [info.condition(name) for name in generator.condition_names]
    fixed = dict(job.conditions)
    for cond in conditions:  # mask files given on the command line: absolute paths
        if cond.type == "mask" and cond.name in fixed:
            fixed[cond.name] = str(Path(fixed[cond.name]).expanduser().resolve())
    rows = read_conditions_csv(job.conditions_csv, conditions) if job.conditions_csv else None
    masks = masks_from_dataset(job.masks_from, conditions) if job.masks_from else None
    digests: dict[str, str] = {}
    requests = build_requests(conditions, info, n=job.n, fixed=fixed, seed=job.seed, rows=rows, masks=masks, digests=digests)
    return requests, conditions, digests


def _share(state: Any, todo: list) -> list:
    if state is None:
        return todo
    with state.split_between_processes(todo) as part:
        return list(part)


def _key(req: Any, conditions: Sequence[Condition], digests: dict[str, str]) -> str:
    from imgsynth.generate.requests import request_key

    return request_key(req, conditions, digests)


def _sizes(root: Path, row: dict[str, Any]) -> dict[str, int]:
    out = {}
    for col in ("path", "png", "nifti", "dicom"):
        rel = row.get(col)
        if not rel:
            continue
        p = root / rel
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            out[f.relative_to(root).as_posix()] = f.stat().st_size
    return out


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now().replace(microsecond=0).isoformat()


# =============================================================================================
# State, identity, what is done
# =============================================================================================
def read_state(out: Path) -> dict[str, Any] | None:
    path = out / STATE_DIR / "state.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ContractError(f"unreadable generation state ({exc}); choose a new OUT_DIR", path=path) from None
    if data.get("format") != "imgsynth-generate-state":
        raise ContractError("not a generation state file", path=path)
    return data


def _identity(job: GenerateJob, generator: Any, settings: Any, info: DatasetInfo, family: str) -> dict[str, Any]:
    """The settings a sample set is bound to (a resumed run must use the same)."""
    g = info.generator or {}
    return {
        "checkpoint_sha256": generator.checkpoint.get("sha256"),
        "family": family,
        "sampler": g.get("sampler"),
        "steps": g.get("steps"),
        "guidance": g.get("guidance"),
        "options": g.get("options", {}),
        "seed": job.seed,
        "formats": sorted(settings.formats),
        "precision": settings.precision,
        "dicom_modality": job.dicom_modality if "dicom" in settings.formats else None,
        "uid_root": job.uid_root if "dicom" in settings.formats else None,
    }


def _check_identity(previous: dict[str, Any] | None, identity: dict[str, Any], out: Path) -> None:
    if previous is None:
        if (out / "dataset.json").is_file():
            raise UsageError(f"{out} holds a sample set made without a generation state; choose a new OUT_DIR")
        return
    before = previous.get("identity", {})
    for key in IDENTITY:
        if json.dumps(before.get(key), sort_keys=True) != json.dumps(identity.get(key), sort_keys=True):
            raise UsageError(
                f"{out} was generated with {key}={before.get(key)!r}, this run asks for {identity.get(key)!r}; "
                "use the same settings to resume or extend it, or choose a new OUT_DIR"
            )


def completed(out: Path, requests: Sequence[Any], conditions: Sequence[Condition], digests: dict[str, str],
              info: DatasetInfo) -> dict[str, dict[str, Any]]:
    """Rows of the samples already done (verified: same request, files present), by id."""
    from imgsynth.generate.requests import request_key, row_key

    wanted = {r.id: request_key(r, conditions, digests) for r in requests}
    done: dict[str, dict[str, Any]] = {}
    manifest = out / "manifest.csv"
    if manifest.is_file() and (out / "dataset.json").is_file():
        try:
            rows = read_manifest(manifest, info.model_copy(update={"conditions": list(conditions)}), check_files=False)
        except ContractError:
            rows = []
        extra = [r["id"] for r in rows if r["id"] not in wanted]
        if extra:
            raise UsageError(f"{out} already holds {len(rows)} samples ({extra[0]} is not asked for now); "
                             "ask for at least as many, or choose a new OUT_DIR")
        for row in rows:
            if wanted.get(row["id"]) == row_key(row, conditions) and _present(out, row, None):
                done[row["id"]] = dict(row)
    for path in sorted((out / STATE_DIR).glob("done-*.jsonl")):
        for rec in read_jsonl(path):
            rid = rec.get("id")
            if rid not in wanted:
                raise UsageError(f"{out} already holds sample {rid}, which this run does not ask for; "
                                 "ask for at least as many, or choose a new OUT_DIR")
            if rec.get("key") == wanted[rid] and _present(out, rec.get("row", {}), rec.get("sizes")):
                done[rid] = rec["row"]
    return done


def _present(out: Path, row: dict[str, Any], sizes: dict[str, int] | None) -> bool:
    if sizes is not None:
        return all((out / rel).is_file() and (out / rel).stat().st_size == size for rel, size in sizes.items()) and bool(sizes)
    return all((out / row[c]).exists() for c in ("path", "png", "nifti", "dicom") if row.get(c))


def _finalize(out: Path, requests: Sequence[Any], conditions: Sequence[Condition], digests: dict[str, str],
              info: DatasetInfo, identity: dict[str, Any], saved: dict[str, Any], settings: Any) -> None:
    done = completed(out, requests, conditions, digests, info)
    missing = [r.id for r in requests if r.id not in done]
    if missing:
        return  # failures are reported by the processes; the journals keep what is done
    g = dict(info.generator or {})
    g.update({"precision": settings.precision, "formats": sorted(settings.formats), "set_uid": saved.get("set_uid")})
    if settings.dicom is not None:
        g["dicom"] = {"modality": settings.dicom.modality, "uid_root": settings.dicom.uid_root}
    final = info.model_copy(update={"generator": g})
    write_dataset(out, final, [done[r.id] for r in requests])
    made_by: dict[str, int] = {}  # samples each process's journal recorded in this run (no overlap: none twice)
    seen: dict[str, int] = {}
    for path in sorted((out / STATE_DIR).glob("done-*.jsonl")):
        ids = {rec["id"] for rec in read_jsonl(path) if "id" in rec}
        made_by[path.name] = len(ids)
        for rid in ids:
            seen[rid] = seen.get(rid, 0) + 1
    atomic_write_json(out / STATE_DIR / "state.json", {**saved, "status": "complete", "n": len(requests),
                                                       "made_by": made_by,
                                                       "made_twice": sum(c > 1 for c in seen.values())})
    for path in (out / STATE_DIR).glob("done-*.jsonl"):
        path.unlink()
    (out / STATE_DIR / "failed.jsonl").unlink(missing_ok=True)
    log.info("wrote %d samples to %s", len(requests), out)


def _provenance(view: Any, generator: Any, settings: Any, seed: int, family: str,
                info: DatasetInfo | None = None) -> dict[str, Any]:
    """The record stamped on every file: the run, the weights, and the sampler settings actually used."""
    import imgsynth

    ckpt = generator.checkpoint
    g = (info.generator if info is not None else None) or {}
    prov = {
        "generator": f"imgsynth {imgsynth.__version__}",
        "family": family,
        "run": view.root.name,
        "checkpoint": ckpt.get("path"),
        "checkpoint_sha256": ckpt.get("sha256"),
        "set_seed": seed,
    }
    if generator.default_steps is not None:
        prov.update({"sampler": g.get("sampler") or settings.sampler or generator.samplers[0],
                     "steps": g.get("steps") or settings.steps or generator.default_steps,
                     "guidance": g.get("guidance", generator.default_guidance if settings.guidance is None
                                       else settings.guidance)})
    prov.update({**getattr(generator, "options", {}), **settings.options})
    return prov


def _write_model_cards(view: Any, out: Path, evaluation: str | None, checkpoint: dict[str, Any]) -> None:
    from imgsynth.generate.modelcard import write_model_card

    write_model_card(view, out, evaluation=evaluation, checkpoint=checkpoint)


# =============================================================================================
# Several processes
# =============================================================================================
def launch(job: GenerateJob, processes: int) -> Dataset:
    """Run ``job`` in ``processes`` processes through ``accelerate launch`` (GPUs, else CPU)."""
    import torch

    from imgsynth.training.cli import launch_command

    cpu = (job.device or "").startswith("cpu") or not torch.cuda.is_available()
    if not cpu and torch.cuda.device_count() < processes:
        raise UsageError(f"--num-processes {processes} but only {torch.cuda.device_count()} GPU(s) are visible")
    out = Path(job.out_dir)
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    spec = atomic_write_json(out / STATE_DIR / "launch.json", dataclasses.asdict(job))
    cmd, env = launch_command([], processes, cpu=cpu)
    module_at = cmd.index("-m", cmd.index("--main_process_port"))
    cmd = [*cmd[:module_at], "-m", "imgsynth.generate.entry", str(spec)]
    env = {**env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                 *filter(None, [env.get("PYTHONPATH")])])}
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise LaunchError(f"generation in {processes} processes stopped (exit {code}); see the messages above "
                          "and re-run the same command to resume", code if code in (1, 2, 3) else 1)
    return Dataset.read(out)

