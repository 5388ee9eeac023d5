"""The residual-PHI scan: look for every identifying value of every input in every output.

Needs no key and no mapping. From each input (read as leniently as pydicom allows) it collects the
identifying values: person names, IDs, accession and other numbers, institution, address and phone
values, instance UIDs and dates (:func:`imgsynth.deid.phi.row_kind`), at any depth, private
attributes included. It then looks for them in every element of every output file (sequences and
private attributes included), in the raw bytes of each file outside its pixel data (preamble, file
meta, anything a parser would skip), in the output's file and folder names, and in the folder's
records (``audit.jsonl``, ``quarantine.jsonl``, ``report.json``).

What an output may legitimately keep is read from the output itself: the options listed in its
DeidentificationMethodCodeSequence (e.g. Retain Institution Identity keeps institution names;
dates are checked only when neither dates option was used, since shifted dates can coincide with
other real dates).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from imgsynth.contracts import DEID_AUDIT, DEID_QUARANTINE, DEID_REPORT
from imgsynth.deid.phi import (
    DATE_VRS,
    TEXT_VRS,
    VOCABULARY_TAGS,
    Kind,
    Needle,
    NeedleIndex,
    is_uid_like,
    keeps_class_uid,
    row_kind,
    standard_words,
    text_codecs,
    values_of,
)
from imgsynth.deid.profile import CODE_OPTIONS, Option, load_table
from imgsynth.errors import UsageError
from imgsynth.utils.io import atomic_write_json

_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_RECORDS = (DEID_AUDIT, DEID_QUARANTINE, DEID_REPORT)


@dataclass(frozen=True)
class VerifyHit:
    file: str  # relative to OUT_DIR
    where: str  # tag path such as "(0040,A730)[0]/(0040,A123)", "raw bytes @1234" or "file name"
    kind: str
    source: str  # attribute of an input the value was found in

    def line(self) -> str:
        return f"{self.file}: {self.where}: {self.kind} value of an input's {self.source}"


@dataclass
class VerifyResult:
    out_dir: Path
    inputs_scanned: int
    outputs_scanned: int
    values: dict[str, int]  # number of identifying values searched, by kind
    hits: list[VerifyHit] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.hits

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs_scanned": self.inputs_scanned, "outputs_scanned": self.outputs_scanned, "values": self.values,
            "hits": [h.__dict__ for h in self.hits],
        }


def _read(path: Path, **kw: Any) -> Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, **kw)
        except Exception:
            try:
                return pydicom.dcmread(path, force=True, **kw)
            except Exception:
                return None


def _files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def collect_values(ds: Dataset, index: NeedleIndex) -> None:
    """Add the identifying values of ``ds`` (every depth, meta and private attributes included)."""
    table = load_table()

    def walk(d: Dataset) -> None:
        for tag in list(d.keys()):
            try:
                elem = d[tag]
            except Exception:  # noqa: BLE001  (an undecodable element of a broken input)
                continue
            vr = elem.VR
            if vr == "SQ":
                for item in elem.value or ():
                    if isinstance(item, Dataset):
                        walk(item)
                continue
            if int(tag) in VOCABULARY_TAGS:
                index.add_vocabulary(elem.value)
                continue
            row = table.row(int(tag))
            if row is not None and row.tag != "private":
                kind, retained = row_kind(row), row.retained_by
            elif vr == "PN":
                kind, retained = Kind.NAME, frozenset()
            elif vr == "UI" and not keeps_class_uid(elem.keyword or "") and (tag >> 16) & 1 == 0:
                kind, retained = Kind.UID, frozenset({Option.RETAIN_UIDS})
            else:
                continue
            if kind is None:
                continue
            if kind is Kind.UID:
                retained = retained | {Option.RETAIN_UIDS}
                values = [v for v in values_of(elem.value) if v and v not in pydicom.uid.UID_dictionary]
                if not values:
                    continue
                index.add_value("UI", "\\".join(values), Needle(kind, elem.keyword or str(tag), retained))
            else:
                index.add_value(vr, elem.value, Needle(kind, elem.keyword or f"private {tag}", retained))

    walk(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if sop:
            index.add_value("UI", sop, Needle(Kind.UID, "MediaStorageSOPInstanceUID", frozenset({Option.RETAIN_UIDS})))


def output_options(ds: Dataset) -> frozenset[Option]:
    """The options an output says it was made with (DeidentificationMethodCodeSequence)."""
    out = set()
    for item in ds.get("DeidentificationMethodCodeSequence", None) or ():
        code = str(item.get("CodeValue", ""))
        if code in CODE_OPTIONS:
            out.add(CODE_OPTIONS[code])
    return frozenset(out)


def _scan_dataset(ds: Dataset, index: NeedleIndex, options: frozenset[Option], prefix: str = "") -> Iterable[tuple[str, Needle]]:
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001
            yield f"{prefix}({tag.group:04X},{tag.element:04X})", Needle(Kind.ID, "undecodable element")
            continue
        where = f"{prefix}({tag.group:04X},{tag.element:04X})"
        vr = elem.VR
        if vr == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _scan_dataset(item, index, options, f"{where}[{i}]/")
            continue
        if int(tag) in _PIXEL_TAGS:
            continue
        value = elem.value
        if value is None or value == "":
            continue
        if vr == "UI":
            for v in values_of(value):
                needle = index.find_uid(v, options)
                if needle is not None:
                    yield where, needle
        elif vr in TEXT_VRS or vr in DATE_VRS or vr in ("DS", "IS", "UN", "OB") or (tag >> 16) & 1:
            for hit in index.find_text("\\".join(values_of(value)), options):
                yield where, hit.needle


def _raw_ranges_to_skip(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of pixel data values (top level) in the file."""
    ds = _read(path, defer_size=1024)
    if ds is None:
        return []
    ranges = []
    for tag in _PIXEL_TAGS:
        raw = ds.get_item(tag, keep_deferred=True)
        if raw is not None and getattr(raw, "value_tell", None) is not None:
            length = raw.length
            if length == 0xFFFFFFFF:  # encapsulated: up to the end of the file
                length = path.stat().st_size - raw.value_tell
            ranges.append((raw.value_tell, raw.value_tell + length))
    return ranges


def scan_output(path: Path, rel: str, index: NeedleIndex, *, mirror: bool = False) -> list[VerifyHit]:
    """Every hit in one output file: its elements, then its raw bytes outside pixel data."""
    hits: dict[tuple[str, str], VerifyHit] = {}
    ds = _read(path)
    options: frozenset[Option] = frozenset()
    if ds is None:
        hits[("read", "")] = VerifyHit(rel, "whole file", "unreadable", "output is not readable DICOM")
    else:
        options = output_options(ds)
        for where, needle in _scan_dataset(ds, index, options):
            hits.setdefault((where, needle.source), VerifyHit(rel, where, str(needle.kind), needle.source))
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for where, needle in _scan_dataset(meta, index, options):
                hits.setdefault((where, needle.source), VerifyHit(rel, where, str(needle.kind), needle.source))
    data = path.read_bytes()
    for start, end in sorted(_raw_ranges_to_skip(path), reverse=True):
        data = data[:start] + b" " * 0 + data[end:]
    codecs = text_codecs(ds.get("SpecificCharacterSet")) if ds is not None else []
    for offset, needle in index.find_bytes(data, options, codecs):
        key = (f"raw:{needle.kind}", needle.source)
        hits.setdefault(key, VerifyHit(rel, f"raw bytes @{offset}", str(needle.kind), needle.source))
    for part in () if mirror else Path(rel).parts:
        for hit in index.find_text(part, options):
            hits.setdefault(("name", hit.needle.source), VerifyHit(rel, "file or folder name", str(hit.needle.kind), hit.needle.source))
    return list(hits.values())


def collect_inputs(inputs: Sequence[Path]) -> tuple[NeedleIndex, int, list[str]]:
    """Identifying values of every input file, and the input file and folder names."""
    index = NeedleIndex(given_names_alone=False)
    count = 0
    names: list[str] = []
    for root in inputs:
        for path in _files(root):
            names.extend(path.relative_to(root).parts if root.is_dir() else [path.name])
            ds = _read(path)
            if ds is None:
                continue
            count += 1
            try:
                collect_values(ds, index)
            except Exception:  # noqa: BLE001, S112  (keep what was collected from a broken input)
                continue
    index.prune(standard_words())
    return index, count, names


def _run_settings(out: Path) -> tuple[str, frozenset[Option]]:
    """Layout and options of the run that wrote ``out`` (uid layout, no option: no report)."""
    from imgsynth.contracts import read_deid_report

    try:
        report = read_deid_report(out)
    except Exception:  # noqa: BLE001
        return "uid", frozenset()
    return report.layout, frozenset(Option(o) for o in report.options if o in Option.__members__.values())


def verify_tree(
    out_dir: str | Path, against: str | Path | Sequence[str | Path], *, report: str | Path | None = None
) -> VerifyResult:
    """Scan ``out_dir`` for any identifying value of the inputs ``against``; see the module doc."""
    out = Path(out_dir)
    roots = [Path(p) for p in ([against] if isinstance(against, str | Path) else against)]
    if not out.is_dir():
        raise UsageError(f"OUT_DIR not found: {out}")
    for root in roots:
        if not root.exists():
            raise UsageError(f"input not found: {root}")
    if report is not None and (Path(report).is_dir() or not Path(report).parent.is_dir()):
        raise UsageError(f"--report {report}: give a file name in an existing folder")
    from imgsynth.deid.files import lenient_values

    with warnings.catch_warnings(), lenient_values():
        warnings.simplefilter("ignore")  # pydicom's warnings quote values of the inputs
        return _verify(out, roots, report)


def _verify(out: Path, roots: list[Path], report: str | Path | None) -> VerifyResult:
    index, n_inputs, names = collect_inputs(roots)
    # Input file and folder names must not reappear as output names (unless --layout mirror was chosen).
    layout, run_options = _run_settings(out)
    mirror = layout == "mirror"
    input_names: set[str] = set()
    for name in () if mirror else names:
        input_names.update(n.upper() for n in (name, name.rsplit(".", 1)[0]) if len(n) >= 4)
    hits: list[VerifyHit] = []
    n_outputs = 0
    for path in _files(out):
        rel = path.relative_to(out).as_posix()
        if rel in _RECORDS:
            text = path.read_text(encoding="utf-8", errors="replace")
            for hit in index.find_text(text, run_options):
                hits.append(VerifyHit(rel, f"text @{hit.start}", str(hit.needle.kind), hit.needle.source))
            continue
        n_outputs += 1
        hits.extend(scan_output(path, rel, index, mirror=mirror))
        for part in path.relative_to(out).parts:
            stem = part.rsplit(".", 1)[0]
            if is_uid_like(stem):  # UIDs are checked as UIDs (Retain UIDs may keep them)
                continue
            if part.upper() in input_names or stem.upper() in input_names:
                hits.append(VerifyHit(rel, "file or folder name", "path", "an input file or folder name"))
    values = {
        "names_ids_text": len(index.single) + sum(len(v) for v in index.multi.values()),
        "uids": len(index.uids),
        "dates": len(index.dates),
    }
    result = VerifyResult(out, n_inputs, n_outputs, values, hits)
    if report is not None:
        atomic_write_json(report, result.to_dict())
    return result
