"""Folder contracts between stages, version 1 (the single place they are defined).

Four kinds of folder pass between stages (see README, "Folder contracts"):

* **dataset folder** (``preprocess`` and ``generate``): ``dataset.json`` + ``manifest.csv`` + items;
* **run folder** (``train``): ``config.yaml``, ``dataset.json``, ``model.json``, ``metrics.jsonl``,
  ``weights/``, ``checkpoints/``, ``samples/``, ``provenance.json``;
* **evaluation folder** (``evaluate``): ``report.json`` + ``report.html``;
* **review folder** (``review``): ``readers/<id>/index.html`` and ``key.csv`` beside ``readers/``;
  the readers return ``answers.csv``.

Every stage reads and writes these through this module, which validates what it reads and
raises :class:`~imgsynth.errors.ContractError` with a one-line message naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from imgsynth.errors import ContractError
from imgsynth.utils.io import append_jsonl, atomic_path, atomic_write_json, atomic_write_text, read_jsonl

CONTRACT_VERSION = 1
DATASET_FORMAT = "imgsynth-dataset"
RUN_FORMAT = "imgsynth-run"
REPORT_FORMAT = "imgsynth-report"

SPLITS = ("train", "val", "test", "synthetic")
BASE_COLUMNS = ("id", "path", "split", "subject")
SAMPLE_COLUMNS = ("seed", "png", "nifti", "dicom")
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ContractError(f"field '{loc}': {err['msg']}{more}", path=path) from None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ContractError("missing file", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"not valid JSON ({exc})", path=path) from None


def _check_format(data: Any, fmt: str, path: Path) -> None:
    if not isinstance(data, dict) or data.get("format") != fmt:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ContractError(f"expected format '{fmt}', found {got!r}", path=path)
    version = data.get("version")
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"contract version {version!r} is not supported (this imgsynth reads version {CONTRACT_VERSION})",
            path=path,
        )


# =============================================================================================
# Dataset folder
# =============================================================================================
class Condition(_Strict):
    """One conditioning field: a categorical label, a continuous covariate or a spatial mask."""

    name: str
    type: Literal["categorical", "continuous", "mask"]
    categories: list[str] | None = None
    range: tuple[float, float] | None = None
    channels: int | None = None
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Condition:
        if not _SAFE_NAME.match(self.name) or self.name in BASE_COLUMNS + SAMPLE_COLUMNS:
            raise ValueError(f"condition name {self.name!r} must be an identifier and not a reserved column")
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"categorical condition {self.name!r} needs 'categories'")
        if self.type == "categorical" and len(set(self.categories or [])) != len(self.categories or []):
            raise ValueError(f"categorical condition {self.name!r} has duplicate categories")
        if self.type == "continuous" and (self.range is None or not self.range[0] < self.range[1]):
            raise ValueError(f"continuous condition {self.name!r} needs 'range' [low, high] with low < high")
        if self.type == "mask" and (self.channels is None or self.channels < 1):
            raise ValueError(f"mask condition {self.name!r} needs 'channels' >= 1")
        return self

    def parse(self, value: str) -> str | float:
        """Check one manifest cell against this condition; return the typed value."""
        if self.type == "categorical":
            if value not in (self.categories or []):
                raise ValueError(f"'{value}' is not a category of '{self.name}' ({', '.join(self.categories or [])})")
            return value
        if self.type == "continuous":
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a number for '{self.name}'") from None
            if not math.isfinite(number):
                raise ValueError(f"'{value}' is not finite for '{self.name}'")
            return number
        if not value:
            raise ValueError(f"mask condition '{self.name}' needs a relative path")
        return value


class Intensity(_Strict):
    """How stored values map to physical units.

    ``ct_window``, ``percentile`` and ``minmax`` map the physical interval [``low``, ``high``]
    linearly onto model scale [-1, 1] (values outside are clipped when mapping forward);
    ``none`` stores physical units unchanged. ``params`` keeps how low/high were chosen
    (window centre/width, percentiles, ...).
    """

    kind: Literal["ct_window", "percentile", "minmax", "none"]
    low: float | None = None
    high: float | None = None
    unit: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Intensity:
        if self.kind != "none" and (self.low is None or self.high is None or not self.high > self.low):
            raise ValueError(f"intensity kind '{self.kind}' needs low < high")
        return self

    def to_model(self, x: np.ndarray) -> np.ndarray:
        """Physical units -> model scale [-1, 1] (clipped)."""
        if self.kind == "none":
            return np.asarray(x, dtype=np.float32)
        assert self.low is not None and self.high is not None
        y = 2.0 * (np.asarray(x, dtype=np.float64) - self.low) / (self.high - self.low) - 1.0
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    def to_physical(self, y: np.ndarray) -> np.ndarray:
        """Model scale [-1, 1] -> physical units (inverse of :meth:`to_model` inside the window)."""
        if self.kind == "none":
            return np.asarray(y, dtype=np.float32)
        assert self.low is not None and self.high is not None
        y = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
        return ((y + 1.0) * 0.5 * (self.high - self.low) + self.low).astype(np.float32)


class DatasetInfo(_Strict):
    """``dataset.json`` of a dataset folder."""

    format: Literal["imgsynth-dataset"] = DATASET_FORMAT
    version: int = CONTRACT_VERSION
    spatial_dims: Literal[2, 3]
    shape: list[int]  # [C, *spatial]; a spatial size of -1 varies between items (native-geometry datasets)
    spacing: list[float] | None = None
    orientation: str | None = "RAS"
    intensity: Intensity
    conditions: list[Condition] = Field(default_factory=list)
    splits: dict[str, int] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    generator: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> DatasetInfo:
        if (
            len(self.shape) != self.spatial_dims + 1
            or self.shape[0] < 1
            or any(s < 1 and s != -1 for s in self.shape[1:])
        ):
            raise ValueError(
                f"shape {self.shape} must be [C, *spatial] with {self.spatial_dims} spatial dims (-1: varies per item)"
            )
        if self.spacing is not None and len(self.spacing) != self.spatial_dims:
            raise ValueError(f"spacing {self.spacing} must have {self.spatial_dims} values")
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate condition names in {names}")
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; valid: {', '.join(SPLITS)}")
        return self

    @property
    def channels(self) -> int:
        return self.shape[0]

    def condition(self, name: str) -> Condition:
        for cond in self.conditions:
            if cond.name == name:
                return cond
        raise ContractError(f"unknown condition '{name}' (dataset has: {', '.join(self.condition_names) or 'none'})")

    @property
    def condition_names(self) -> list[str]:
        return [c.name for c in self.conditions]


@dataclass
class Dataset:
    """A dataset folder read from disk and validated (``Dataset.read(path)``)."""

    root: Path
    info: DatasetInfo
    rows: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, root: str | Path, *, check_files: bool = True) -> Dataset:
        root = Path(root)
        if not root.is_dir():
            raise ContractError("dataset folder not found", path=root)
        info_path = root / "dataset.json"
        data = _read_json(info_path)
        _check_format(data, DATASET_FORMAT, info_path)
        info = _validate(DatasetInfo, data, info_path)
        rows = read_manifest(root / "manifest.csv", info, check_files=check_files)
        return cls(root=root, info=info, rows=rows)

    def split(self, name: str) -> list[dict[str, str]]:
        return [r for r in self.rows if r["split"] == name]

    def item_path(self, row: Mapping[str, str]) -> Path:
        return self.root / row["path"]

    def load(self, row: Mapping[str, str]) -> np.ndarray:
        """The item's array ``[C, *spatial]`` (model scale, or physical units if intensity is none)."""
        return load_item(self.item_path(row))

    def load_mask(self, row: Mapping[str, str], name: str) -> np.ndarray:
        if self.info.condition(name).type != "mask":
            raise ContractError(f"condition '{name}' is not a mask", path=self.root / "dataset.json")
        return load_item(self.root / row[name])

    def condition_values(self, row: Mapping[str, str]) -> dict[str, str | float]:
        return {c.name: c.parse(row[c.name]) for c in self.info.conditions}


def load_item(path: Path) -> np.ndarray:
    """Load one item: ``.npy`` arrays directly, ``.nii``/``.nii.gz`` through nibabel (as [1, ...])."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            return arr[None] if arr.ndim == 3 else np.moveaxis(arr, -1, 0)
    except (OSError, ValueError, EOFError) as exc:
        raise ContractError(f"cannot read item ({exc})", path=path) from None
    raise ContractError("unsupported item type (expected .npy or .nii.gz)", path=path)


def save_item(root: str | Path, relpath: str, array: np.ndarray) -> str:
    """Write one ``.npy`` item atomically under ``root``; returns the relative path."""
    _check_relpath(relpath, Path(root) / "manifest.csv")
    with atomic_path(Path(root) / relpath) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return relpath


def _check_relpath(relpath: str, where: Path) -> None:
    p = Path(relpath)
    if not relpath or p.is_absolute() or ".." in p.parts or "\\" in relpath:
        raise ContractError(f"path '{relpath}' must be relative and stay inside the folder", path=where)


def manifest_columns(info: DatasetInfo, extra: Iterable[str] = ()) -> list[str]:
    cols = list(BASE_COLUMNS) + info.condition_names
    cols += [c for c in SAMPLE_COLUMNS if c in set(extra)]
    return cols


def read_manifest(
    path: Path, info: DatasetInfo, *, check_files: bool = True, root: Path | None = None
) -> list[dict[str, str]]:
    """Read and validate ``manifest.csv``; item paths resolve against ``root`` (default: its folder)."""
    if not path.is_file():
        raise ContractError("missing file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ContractError("not UTF-8 text", path=path) from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in (*BASE_COLUMNS, *info.condition_names) if c not in header]
    if missing:
        raise ContractError(f"missing column(s) {', '.join(missing)}", path=path)
    allowed = set(BASE_COLUMNS) | set(info.condition_names) | set(SAMPLE_COLUMNS)
    unknown = [c for c in header if c not in allowed]
    if unknown:
        raise ContractError(
            f"unknown column(s) {', '.join(unknown)} (not a base column, condition or sample column)", path=path
        )
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    root = path.parent if root is None else root
    for lineno, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise ContractError(f"line {lineno}: wrong number of fields", path=path)
        where = f"line {lineno} (id {row['id']!r})"
        if not row["id"] or row["id"] in seen:
            raise ContractError(f"{where}: empty or duplicate id", path=path)
        seen.add(row["id"])
        if row["split"] not in SPLITS:
            raise ContractError(f"{where}: split '{row['split']}' is not one of {', '.join(SPLITS)}", path=path)
        _check_relpath(row["path"], path)
        for cond in info.conditions:
            try:
                cond.parse(row[cond.name])
            except ValueError as exc:
                raise ContractError(f"{where}: {exc}", path=path) from None
            if cond.type == "mask":
                _check_relpath(row[cond.name], path)
                if check_files and not (root / row[cond.name]).is_file():
                    raise ContractError(f"{where}: mask file '{row[cond.name]}' is missing", path=path)
        if check_files and not (root / row["path"]).is_file():
            raise ContractError(f"{where}: item file '{row['path']}' is missing", path=path)
        rows.append(dict(row))
    return rows


def write_dataset(
    root: str | Path, info: DatasetInfo, rows: Sequence[Mapping[str, Any]], *, check_files: bool = True
) -> Dataset:
    """Validate ``rows`` against ``info`` and write ``manifest.csv`` + ``dataset.json`` atomically.

    Items must already be in place (``save_item``). Split counts are recomputed from the rows.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    extra = {k for row in rows for k in row if k in SAMPLE_COLUMNS}
    columns = manifest_columns(info, extra)
    unknown = sorted({k for row in rows for k in row} - set(columns))
    if unknown:
        raise ContractError(f"rows carry unknown column(s) {', '.join(unknown)}", path=root / "manifest.csv")
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["split"])] = counts.get(str(row["split"]), 0) + 1
    info = info.model_copy(update={"splits": counts})
    _validate(DatasetInfo, info.model_dump(mode="json"), root / "dataset.json")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c, "")) for c in columns})
    manifest_path = root / "manifest.csv"
    # Validate before anything lands under its final name.
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        read_manifest(tmp, info, check_files=check_files, root=root)
    atomic_write_json(root / "dataset.json", info.model_dump(mode="json"))
    return Dataset(root=root, info=info, rows=[{c: _cell(r.get(c, "")) for c in columns} for r in rows])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else str(value)


# =============================================================================================
# Run folder
# =============================================================================================
class StageStatus(_Strict):
    status: Literal["pending", "running", "complete"] = "pending"
    kimg: float = 0.0
    step: int = 0
    budget_kimg: float | None = None


class ModelInfo(_Strict):
    """``model.json`` of a run folder."""

    format: Literal["imgsynth-run"] = RUN_FORMAT
    version: int = CONTRACT_VERSION
    family: str
    spatial_dims: Literal[2, 3]
    stages: dict[str, StageStatus]
    latent_scale_factor: float | None = None
    config_hash: str
    extra: dict[str, Any] = Field(default_factory=dict)


METRIC_REQUIRED = ("stage", "kimg", "step")


@dataclass
class RunFolder:
    """Paths and typed access to a run folder (``RunFolder(path)``; ``RunFolder.read`` validates)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    config_path = property(lambda self: self.root / "config.yaml")
    dataset_path = property(lambda self: self.root / "dataset.json")
    model_path = property(lambda self: self.root / "model.json")
    metrics_path = property(lambda self: self.root / "metrics.jsonl")
    provenance_path = property(lambda self: self.root / "provenance.json")
    weights_dir = property(lambda self: self.root / "weights")
    checkpoints_dir = property(lambda self: self.root / "checkpoints")
    samples_dir = property(lambda self: self.root / "samples")

    def weights_path(self, stage: str, *, ema: bool = False) -> Path:
        return self.weights_dir / f"{stage}{'-ema' if ema else ''}.safetensors"

    @classmethod
    def read(cls, root: str | Path) -> RunFolder:
        run = cls(Path(root))
        if not run.root.is_dir():
            raise ContractError("run folder not found", path=run.root)
        run.model_info()
        run.dataset_info()
        if not run.config_path.is_file():
            raise ContractError("missing file", path=run.config_path)
        return run

    def model_info(self) -> ModelInfo:
        data = _read_json(self.model_path)
        _check_format(data, RUN_FORMAT, self.model_path)
        return _validate(ModelInfo, data, self.model_path)

    def write_model_info(self, info: ModelInfo) -> None:
        atomic_write_json(self.model_path, info.model_dump(mode="json"))

    def dataset_info(self) -> DatasetInfo:
        data = _read_json(self.dataset_path)
        _check_format(data, DATASET_FORMAT, self.dataset_path)
        return _validate(DatasetInfo, data, self.dataset_path)

    def create(self, *, config_yaml: str, dataset: DatasetInfo, model: ModelInfo, provenance: Mapping[str, Any]) -> None:
        """Lay out a new run folder (or refresh its descriptive files on resume)."""
        for d in (self.root, self.weights_dir, self.checkpoints_dir, self.samples_dir):
            d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, config_yaml)
        atomic_write_json(self.dataset_path, dataset.model_dump(mode="json"))
        atomic_write_json(self.provenance_path, dict(provenance))
        if not self.model_path.exists():
            self.write_model_info(model)

    def log_metrics(self, record: Mapping[str, Any]) -> None:
        missing = [k for k in METRIC_REQUIRED if k not in record]
        if missing:
            raise ContractError(f"metrics record lacks {', '.join(missing)}", path=self.metrics_path)
        append_jsonl(self.metrics_path, dict(record))

    def metrics(self, stage: str | None = None) -> list[dict[str, Any]]:
        records = read_jsonl(self.metrics_path)
        return [r for r in records if stage is None or r.get("stage") == stage]


# =============================================================================================
# Evaluation folder
# =============================================================================================
class Metric(BaseModel):
    """One reported number with the recipe that produced it."""

    model_config = ConfigDict(extra="allow")

    value: float | None
    recipe: dict[str, Any] = Field(default_factory=dict)
    floor: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""


class Report(_Strict):
    """``report.json`` of an evaluation folder."""

    format: Literal["imgsynth-report"] = REPORT_FORMAT
    version: int = CONTRACT_VERSION
    inputs: dict[str, Any]
    metrics: dict[str, Metric]
    warnings: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


def write_report(folder: str | Path, report: Report) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(folder / "report.json", report.model_dump(mode="json"))


def read_report(folder: str | Path) -> Report:
    path = Path(folder) / "report.json"
    data = _read_json(path)
    _check_format(data, REPORT_FORMAT, path)
    return _validate(Report, data, path)


# =============================================================================================
# Review folder
# =============================================================================================
KEY_COLUMNS = ("reader", "case", "truth", "dataset", "item")
ANSWER_COLUMNS = ("reader", "case", "answer", "confidence", "quality", "comment", "seconds")


class KeyRow(_Strict):
    reader: str
    case: str
    truth: Literal["real", "synthetic"]
    dataset: str
    item: str


class AnswerRow(_Strict):
    reader: str
    case: str
    answer: Literal["real", "synthetic"]
    confidence: int = Field(ge=1, le=5)
    quality: int = Field(ge=1, le=5)
    comment: str = ""
    seconds: float = Field(ge=0)


def _read_csv_rows(path: Path, columns: Sequence[str], model: type[BaseModel]) -> list[Any]:
    if not path.is_file():
        raise ContractError("missing file", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ContractError("not UTF-8 text", path=path) from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise ContractError(f"missing column(s) {', '.join(missing)}; expected {', '.join(columns)}", path=path)
    out = []
    for lineno, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise ContractError(f"line {lineno}: wrong number of fields", path=path)
        try:
            out.append(model.model_validate({c: row[c] for c in columns}))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ContractError(f"line {lineno}: '{err['loc'][0]}' {err['msg']} (got {err['input']!r})", path=path) from None
    return out


def _write_csv_rows(path: Path, columns: Sequence[str], rows: Iterable[BaseModel]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.model_dump(mode="json"))
    return atomic_write_text(path, buf.getvalue())


def read_key(path: str | Path) -> list[KeyRow]:
    rows = _read_csv_rows(Path(path), KEY_COLUMNS, KeyRow)
    seen = set()
    for r in rows:
        if (r.reader, r.case) in seen:
            raise ContractError(f"duplicate case '{r.case}' for reader '{r.reader}'", path=path)
        seen.add((r.reader, r.case))
    return rows


def write_key(path: str | Path, rows: Iterable[KeyRow]) -> Path:
    path = Path(path)
    if path.parent.name == "readers" or "readers" in path.parent.parts:
        raise ContractError("key.csv must lie beside readers/, never inside a reader's package", path=path)
    return _write_csv_rows(path, KEY_COLUMNS, rows)


def read_answers(path: str | Path) -> list[AnswerRow]:
    return _read_csv_rows(Path(path), ANSWER_COLUMNS, AnswerRow)


def write_answers(path: str | Path, rows: Iterable[AnswerRow]) -> Path:
    return _write_csv_rows(Path(path), ANSWER_COLUMNS, rows)


# =============================================================================================
# De-identified DICOM folder (written by ``deid``)
# =============================================================================================
DEID_FORMAT = "imgsynth-deid"
DEID_AUDIT = "audit.jsonl"
DEID_QUARANTINE = "quarantine.jsonl"
DEID_REPORT = "report.json"


class AuditRecord(BaseModel):
    """One line of ``audit.jsonl``: one input, named only by the keyed hash of its relative path."""

    model_config = ConfigDict(extra="allow")

    input: str
    status: Literal["done", "quarantined"]
    output: str | None = None
    reason: str | None = None


class DeidReport(_Strict):
    """``report.json`` of a de-identified DICOM folder (counts and how it was made; no input path)."""

    format: Literal["imgsynth-deid"] = DEID_FORMAT
    version: int = CONTRACT_VERSION
    status: Literal["running", "complete"]
    counts: dict[str, int]
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    options: list[str]
    method_codes: list[str]
    layout: Literal["uid", "mirror"]
    key_fingerprint: str
    config_hash: str
    config: dict[str, Any]
    profile_table: dict[str, Any]
    provenance: dict[str, Any] = Field(default_factory=dict)


def write_deid_report(folder: str | Path, report: DeidReport) -> Path:
    return atomic_write_json(Path(folder) / DEID_REPORT, report.model_dump(mode="json"))


def read_deid_report(folder: str | Path) -> DeidReport:
    path = Path(folder) / DEID_REPORT
    data = _read_json(path)
    _check_format(data, DEID_FORMAT, path)
    return _validate(DeidReport, data, path)


def read_audit(folder: str | Path) -> list[AuditRecord]:
    """``audit.jsonl`` (a truncated last line from a crash is ignored)."""
    path = Path(folder) / DEID_AUDIT
    return [_validate(AuditRecord, rec, path) for rec in read_jsonl(path)]


def append_audit(folder: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Append audit lines (one mini-batch's) to ``audit.jsonl`` in one write."""
    append_jsonl(Path(folder) / DEID_AUDIT, *(dict(rec) for rec in records))


def write_audit(folder: str | Path, records: Iterable[Mapping[str, Any]], *, name: str = DEID_AUDIT) -> Path:
    """Rewrite ``audit.jsonl`` (or ``quarantine.jsonl``) atomically, one JSON object per line."""
    lines = "".join(json.dumps(dict(r), sort_keys=False, default=str) + "\n" for r in records)
    return atomic_write_text(Path(folder) / name, lines)
