"""Labels and covariates: DICOM fields, a user CSV joined on a key, and the condition schema.

Every series carries raw values by condition *source* (``modality``, ``sex``, ``age``,
``dicom:<Keyword>``, ``csv:<column>``); 2D items add ``plane``, ``position`` and ``slice_mm``.
:func:`build_conditions` turns the configured :class:`ConditionSpec` list into contract
:class:`~imgsynth.contracts.Condition` objects: categories are the configured ones or the sorted
values seen, continuous ranges the configured ones or the observed [min, max].
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from imgsynth.contracts import Condition
from imgsynth.data.config import PLANES, ConditionSpec, LabelsCsv, PreprocessConfig
from imgsynth.errors import ConfigError

_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.I)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_SEX = {"M": "M", "F": "F", "O": "O"}


def parse_age(value: str | None) -> float | None:
    """DICOM Age String ('045Y', '006M', '010W', '003D') in years; None when absent or invalid."""
    if not value:
        return None
    m = _AGE.match(str(value))
    if not m:
        return None
    return round(int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2).upper()], 4)


def dicom_fields(fields: Mapping[str, str], specs: Iterable[ConditionSpec]) -> dict[str, str]:
    """Raw condition values of one DICOM series, by source ('' when absent)."""
    age = parse_age(fields.get("PatientAge"))
    out = {
        "modality": fields.get("Modality", "").upper(),
        "body_part": fields.get("BodyPartExamined", "").upper(),
        "sex": _SEX.get(fields.get("PatientSex", "").upper(), ""),
        "age": "" if age is None else repr(age),
    }
    for spec in specs:
        kind, _, arg = spec.source.partition(":")
        if kind == "dicom":
            out[spec.source] = fields.get(arg, "")
    return out


def dicom_keywords(specs: Iterable[ConditionSpec]) -> list[str]:
    return [s.source.partition(":")[2] for s in specs if s.source.startswith("dicom:")]


class LabelTable:
    """A user CSV indexed by its key column (UTF-8, header row; keys must be unique)."""

    def __init__(self, opts: LabelsCsv) -> None:
        path = Path(opts.path).expanduser()
        self.opts = opts
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"cannot read labels CSV ({exc.strerror})", path=path) from None
        except UnicodeDecodeError:
            raise ConfigError("labels CSV is not UTF-8 text", path=path) from None
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        if opts.column not in header:
            raise ConfigError(f"labels_csv.column '{opts.column}' is not a column (have: {', '.join(header)})", path=path)
        self.columns = header
        self.rows: dict[str, dict[str, str]] = {}
        for lineno, row in enumerate(reader, start=2):
            key = (row.get(opts.column) or "").strip()
            if not key:
                continue
            if key in self.rows:
                raise ConfigError(f"line {lineno}: key '{opts.column}' repeats a value of an earlier line", path=path)
            self.rows[key] = {k: (v or "").strip() for k, v in row.items() if k is not None}
        self.path = path

    def check_columns(self, specs: Iterable[ConditionSpec]) -> None:
        for spec in specs:
            kind, _, arg = spec.source.partition(":")
            if kind == "csv" and arg not in self.columns:
                raise ConfigError(f"condition '{spec.name}' reads column '{arg}', not in the labels CSV", path=self.path)

    def lookup(self, keys: Mapping[str, str]) -> dict[str, str] | None:
        """``csv:<column>`` values of the row matching this series' key, or None."""
        key = keys.get(self.opts.match, "")
        row = self.rows.get(key) if key else None
        if row is None:
            return None
        return {f"csv:{k}": v for k, v in row.items() if k != self.opts.column}


class MissingValue(Exception):
    """A series lacks a condition value and the spec has no ``missing`` fill."""


def series_value(spec: ConditionSpec, fields: Mapping[str, str]) -> str | None:
    """The raw value of a non-mask, non-slice condition for one series ('missing' applied)."""
    value = fields.get(spec.source, "")
    if value == "" and spec.missing is not None:
        value = str(spec.missing)
    if value == "":
        what = {"age": "PatientAge", "sex": "PatientSex", "body_part": "BodyPartExamined", "modality": "Modality"}
        raise MissingValue(
            f"no value for condition '{spec.name}' ({what.get(spec.source, spec.source)}); "
            f"set its 'missing' to fill one"
        )
    if spec.type == "continuous":
        try:
            float(value)
        except ValueError:
            raise MissingValue(f"condition '{spec.name}': '{value}' is not a number") from None
    if spec.type == "categorical" and spec.categories is not None and value not in spec.categories:
        raise MissingValue(f"condition '{spec.name}': '{value}' is not one of its categories {spec.categories}")
    return value


SLICE_SOURCES = ("plane", "position", "slice_mm")


def build_conditions(cfg: PreprocessConfig, values: Mapping[str, list[str]]) -> list[Condition]:
    """Contract conditions for the configured specs, given every observed value per condition name."""
    out = []
    for spec in cfg.conditions:
        kind, _, arg = spec.source.partition(":")
        seen = values.get(spec.name, [])
        if spec.type == "mask":
            out.append(Condition(name=spec.name, type="mask", channels=len(cfg.masks[arg].channels), description=spec.source))
        elif spec.type == "categorical":
            cats = spec.categories or ([p for p in PLANES if p in set(seen)] if kind == "plane" else sorted(set(seen)))
            out.append(Condition(name=spec.name, type="categorical", categories=cats or ["unknown"], description=spec.source))
        else:
            if spec.range is not None:
                lo, hi = spec.range
            elif kind == "position":
                lo, hi = 0.0, 1.0
            else:
                nums = [float(v) for v in seen] or [0.0]
                lo, hi = min(nums), max(nums)
                if hi <= lo:
                    lo, hi = lo - 0.5, hi + 0.5
            out.append(Condition(name=spec.name, type="continuous", range=(lo, hi), description=spec.source))
    return out
