"""``imgsynth review export``: blinded reading packages + ``key.csv`` from a real and a synthetic dataset.

The API function :func:`export_review` selects the cases, then hands one job per case to the
mini-batch entry :func:`write_case_batch` (run locally by :func:`imgsynth.batch.run_minibatches`,
or by a parallel job at scale), which writes that case into every reader's package. The whole
folder is built as ``.<OUT_DIR>.partial`` beside it and renamed onto ``OUT_DIR`` in one step: a
crash never leaves a half-made package (a rerun rebuilds it from the seed), and a rerun with the
same settings finds the export done.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsynth import provenance
from imgsynth.batch import run_minibatches
from imgsynth.contracts import Dataset, DatasetInfo, KeyRow, write_key
from imgsynth.errors import EXIT_OK, EXIT_PARTIAL, ImgsynthError, InputError, UsageError
from imgsynth.export.dicom import new_uid, write_series
from imgsynth.review import images, package, select
from imgsynth.review.config import ReviewExportConfig
from imgsynth.utils.io import atomic_write_json, is_within
from imgsynth.utils.log import get_logger

log = get_logger("review")

REVIEW_FORMAT = "imgsynth-review"
REVIEW_VERSION = 1


@dataclass(frozen=True)
class CaseJob:
    """Write one case into every reader's package (picklable: runs in a worker process)."""

    case_id: str
    dataset_root: str
    info: dict[str, Any]
    row: dict[str, str]
    spec: images.DisplaySpec
    reader_dirs: tuple[str, ...]
    dicom: tuple[dict[str, Any], ...] = ()  # per reader: write_series keyword arguments, or empty


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    ok: bool
    error: str = ""
    files: int = 0


@dataclass
class ExportResult:
    out_dir: Path
    readers: list[str]
    n_real: int
    n_synthetic: int
    seed: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    already_done: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.skipped else EXIT_OK


# =============================================================================================
# Mini-batch entry
# =============================================================================================
def write_case_batch(jobs: list[CaseJob]) -> list[CaseResult]:
    """Mini-batch entry: render each case once, write it into each reader's package; never raises."""
    results = []
    for job in jobs:
        try:
            results.append(_write_case(job))
        except ImgsynthError as exc:
            results.append(CaseResult(job.case_id, False, str(exc)))
        except (OSError, ValueError) as exc:
            results.append(CaseResult(job.case_id, False, f"{type(exc).__name__}: {exc}"))
    return results


def _write_case(job: CaseJob) -> CaseResult:
    info = DatasetInfo.model_validate(job.info)
    dataset = Dataset(root=Path(job.dataset_root), info=info, rows=[job.row])
    spec = job.spec
    physical = images.load_physical(dataset, job.row, spec.channel, images.spatial_shape(info))
    shown = images.to_display(physical, info, spec)
    stored = spec.encoding.encode(shown)
    script = package.case_script(job.case_id, stored)
    files = 0
    for reader_dir in job.reader_dirs:
        path = Path(reader_dir) / "cases" / f"{job.case_id}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script, encoding="ascii")
        files += 1
    decoded = spec.encoding.decode(stored)  # what readers see, so DICOM shows the very same values
    for kwargs in job.dicom:
        files += len(write_series(decoded, **kwargs))
    return CaseResult(job.case_id, True, files=files)


# =============================================================================================
# API
# =============================================================================================
def export_review(
    real: str | Path,
    synthetic: str | Path,
    out_dir: str | Path,
    config: ReviewExportConfig | None = None,
    *,
    argv: list[str] | None = None,
) -> ExportResult:
    """Write ``readers/<id>/`` reading packages and ``key.csv`` into ``out_dir``; see module doc."""
    cfg = config or ReviewExportConfig()
    real, synthetic, out_dir = Path(real), Path(synthetic), Path(out_dir)
    for src in (real, synthetic):
        if is_within(out_dir, src) or is_within(src, out_dir):
            raise UsageError(f"output folder {out_dir} must lie outside the input dataset {src}")
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(31)
    settings = _settings(real, synthetic, cfg)

    done = _existing_export(out_dir, settings, cfg.seed)
    if done is not None:
        return done

    real_ds, synth_ds = Dataset.read(real), Dataset.read(synthetic)
    notes = images.check_compatible(real_ds.info, synth_ds.info, cfg.channel)
    for name in cfg.show_conditions:
        for ds, role in ((real_ds, "real"), (synth_ds, "synthetic")):
            if name not in ds.info.condition_names or ds.info.condition(name).type == "mask":
                raise UsageError(
                    f"--show-condition '{name}' is not a categorical/continuous condition of the {role} dataset "
                    f"(it has: {', '.join(ds.info.condition_names) or 'none'})"
                )

    # Select the cases (each item loaded once to check it can be shown).
    rng_real, rng_synth, rng_ids, rng_order = select.seed_streams(seed)
    ranges: list[tuple[float, float]] = []

    def checker(ds: Dataset) -> Any:
        def check(row: dict[str, str]) -> None:
            x = images.load_physical(ds, row, cfg.channel, images.spatial_shape(ds.info))
            ranges.append((float(x.min()), float(x.max())))

        return check

    cands = select.candidate_rows(real_ds, "real", cfg.real_splits)
    if not cands:
        raise UsageError(f"real dataset {real} has no item in splits {', '.join(cfg.real_splits)}")
    sel_real = select.choose(cands, "real", cfg.n_real, rng_real, checker(real_ds), distinct_subjects=cfg.distinct_subjects)
    cands = select.candidate_rows(synth_ds, "synthetic", ())
    sel_synth = select.choose(cands, "synthetic", cfg.n_synthetic, rng_synth, checker(synth_ds), distinct_subjects=False)
    notes = notes + sel_real.notes
    skipped = sel_real.skipped + sel_synth.skipped

    value_range = images.physical_range(real_ds.info) or (min(r[0] for r in ranges), max(r[1] for r in ranges))
    spec = images.display_spec(real_ds.info, value_range=value_range, channel=cfg.channel, modality=cfg.modality)
    picks = sel_real.picks + sel_synth.picks
    ids = select.case_ids(len(picks), rng_ids)
    readers = select.reader_ids(cfg.readers)
    orders = select.reader_orders(len(picks), cfg.readers, rng_order)

    # Build the whole review folder beside OUT_DIR, then rename it onto OUT_DIR in one step.
    staging = out_dir.parent / f".{out_dir.name}.partial"
    if staging.exists():  # left by an interrupted run: the seed rebuilds the same cases
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    reader_dirs = [staging / "readers" / r for r in readers]
    labels = {
        ids[i]: [(name, _label(real_ds if p.truth == "real" else synth_ds, name, p.row)) for name in cfg.show_conditions]
        for i, p in enumerate(picks)
    }
    package_ids = {r: uuid.uuid4().hex for r in readers}
    for r, rdir, order in zip(readers, reader_dirs, orders, strict=True):
        study = package.study_config(
            package_id=package_ids[r], reader=r, case_ids=[ids[i] for i in order], labels=labels, spec=spec,
            title=cfg.title, instructions=cfg.instructions,
        )
        package.write_static(rdir, study=study, title=cfg.title, reader=r, n_cases=len(picks), dicom=cfg.dicom)

    # Jobs in case-id order (random with respect to truth), so that not even the order files are
    # written in follows real-then-synthetic; their times are made equal below.
    jobs = sorted(_jobs(picks, ids, orders, readers, reader_dirs, spec, real_ds, synth_ds, cfg, package_ids),
                  key=lambda job: job.case_id)
    results = run_minibatches(write_case_batch, jobs, workers=cfg.workers, batch_size=8, description="writing cases")
    failed = [r for r in results if not r.ok]
    if failed:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"case {failed[0].case_id} could not be written: {failed[0].error}")

    key_rows = [
        KeyRow(reader=r, case=ids[i], truth=picks[i].truth,
               dataset=str(real if picks[i].truth == "real" else synthetic), item=picks[i].row["id"])
        for r, order in zip(readers, orders, strict=True)
        for i in order
    ]
    write_key(staging / "key.csv", key_rows)
    if cfg.dicom:
        for r, rdir, order in zip(readers, reader_dirs, orders, strict=True):
            dicom_file_set(staging / "series" / r, [ids[i] for i in order], rdir / "dicom", file_set_id=f"REVIEW_{r}")
    _same_times(staging / "readers")
    result = ExportResult(
        out_dir=out_dir, readers=readers, n_real=cfg.n_real, n_synthetic=cfg.n_synthetic, seed=seed,
        skipped=skipped, notes=notes,
    )
    atomic_write_json(staging / "review.json", _review_json(result, settings, spec, picks, package_ids, argv))
    if out_dir.exists():
        out_dir.rmdir()  # checked empty above
    staging.rename(out_dir)
    for note in result.notes:
        log.info(note)
    return result


def _jobs(
    picks: list[select.Pick],
    ids: list[str],
    orders: list[list[int]],
    readers: list[str],
    reader_dirs: list[Path],
    spec: images.DisplaySpec,
    real_ds: Dataset,
    synth_ds: Dataset,
    cfg: ReviewExportConfig,
    package_ids: dict[str, str],
) -> list[CaseJob]:
    position = [{i: k for k, i in enumerate(order)} for order in orders]
    now = _dt.datetime.now().replace(microsecond=0)
    studies = [new_uid(cfg.uid_root) for _ in readers]
    window = next(((p.center, p.width) for p in spec.presets if p.center is not None), None)
    jobs = []
    for i, pick in enumerate(picks):
        ds = real_ds if pick.truth == "real" else synth_ds
        dicom: list[dict[str, Any]] = []
        if cfg.dicom:
            for k, (r, rdir) in enumerate(zip(readers, reader_dirs, strict=True)):
                dicom.append({
                    "out_dir": rdir.parent.parent / "series" / r / ids[i],
                    "affine_or_orientation": spec.affine,
                    "spacing": spec.spacing if spec.spatial_dims == 2 else None,
                    "modality": spec.modality,
                    "unit": spec.unit,
                    "series_description": f"case {ids[i]}",
                    "synthetic": None,  # blinded: every case is marked alike, real or synthetic
                    "uid_root": cfg.uid_root,
                    "study_uid": studies[k],
                    "patient_id": f"{r}-{package_ids[r][:8].upper()}",
                    "study_description": f"REVIEW reader study {r}",
                    "study_id": r,
                    "series_number": position[k][i] + 1,
                    "window": window,
                    "value_range": spec.value_range,
                    "reorient_axial": False,
                    "overwrite": True,
                    "now": now,
                })
        jobs.append(CaseJob(
            case_id=ids[i], dataset_root=str(ds.root), info=ds.info.model_dump(mode="json"), row=dict(pick.row),
            spec=spec, reader_dirs=tuple(str(d) for d in reader_dirs), dicom=tuple(dicom),
        ))
    return jobs


def dicom_file_set(series_root: Path, case_order: list[str], out: Path, *, file_set_id: str) -> Path:
    """Gather one reader's series (``series_root/<case>/``) into a DICOM File-set with a DICOMDIR.

    The standard layout for removable media (``DICOMDIR``, ``PT000000/ST000000/SE00000k/IM...``)
    that PACS import stations and viewers read; series are added in the reader's order, so
    ``SE00000k`` is case k+1 of the list.
    """
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.ID = file_set_id[:16]
    for case in case_order:
        for f in sorted((series_root / case).glob("*.dcm")):
            fs.add(f)
    fs.write(out)
    shutil.rmtree(series_root)
    return out / "DICOMDIR"


def _label(dataset: Dataset, name: str, row: dict[str, str]) -> str:
    """A condition value as readers see it, written alike for both datasets (``63`` and ``63.0`` agree)."""
    value = dataset.info.condition(name).parse(row[name])
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same_times(folder: Path) -> None:
    """Give every file and folder under ``folder`` one modification time (file dates reveal nothing)."""
    stamp = _dt.datetime.now().replace(microsecond=0).timestamp()
    for path in sorted(folder.rglob("*"), reverse=True):
        os.utime(path, (stamp, stamp))
    os.utime(folder, (stamp, stamp))


def _settings(real: Path, synthetic: Path, cfg: ReviewExportConfig) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    data.pop("workers")
    data["real"] = str(real.resolve())
    data["synthetic"] = str(synthetic.resolve())
    return data


def _existing_export(out_dir: Path, settings: dict[str, Any], seed: int | None) -> ExportResult | None:
    """The finished export already in ``out_dir`` (same settings), or None when there is none."""
    marker = out_dir / "review.json"
    if not marker.is_file():
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise UsageError(f"{out_dir} exists and is not an empty folder or a review export; choose a new folder")
        return None
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
        before = dict(done["settings"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{marker}: unreadable review.json; choose an empty output folder") from None
    now = dict(settings)
    if seed is None:  # no seed asked for: the recorded one is fine
        before.pop("seed", None)
        now.pop("seed", None)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise UsageError(
            f"{out_dir} already holds a review export made with other settings ({', '.join(changed)}); "
            "packages may have been handed out, so choose a new output folder"
        )
    return ExportResult(
        out_dir=out_dir, readers=list(done["readers"]), n_real=int(done["counts"]["real"]),
        n_synthetic=int(done["counts"]["synthetic"]), seed=int(done["seed"]),
        skipped=[tuple(s) for s in done.get("skipped", [])], notes=list(done.get("notes", [])), already_done=True,
    )


def _review_json(
    result: ExportResult,
    settings: dict[str, Any],
    spec: images.DisplaySpec,
    picks: list[select.Pick],
    package_ids: dict[str, str],
    argv: list[str] | None,
) -> dict[str, Any]:
    splits: dict[str, int] = {}
    for p in picks:
        if p.truth == "real":
            splits[p.split] = splits.get(p.split, 0) + 1
    return {
        "format": REVIEW_FORMAT,
        "version": REVIEW_VERSION,
        "settings": {**settings, "seed": result.seed},
        "seed": result.seed,
        "readers": result.readers,
        "packages": package_ids,
        "counts": {"real": result.n_real, "synthetic": result.n_synthetic, "real_splits": splits},
        "display": {
            "spatial_dims": spec.spatial_dims, "shape": list(spec.shape), "spacing": list(spec.spacing),
            "unit": spec.unit, "modality": spec.modality, "dtype": spec.dtype,
            "slope": spec.encoding.slope, "intercept": spec.encoding.intercept,
            "value_range": list(spec.value_range),
            "presets": [{"name": p.name, "center": p.center, "width": p.width} for p in spec.presets],
        },
        "skipped": [list(s) for s in result.skipped],
        "notes": result.notes,
        "provenance": provenance.collect(argv),
    }

