"""De-identify folder trees: the Python API, the mini-batch entry, and the output folder's records.

``anonymize_tree(inputs, out_dir, ...)`` finds every file under the input folders, skips those a
previous run already finished (``audit.jsonl``), runs :func:`deid_minibatch` over the rest (in this
process or a process pool; an Azure ML parallel job calls the same entry), and writes the folder's
records: ``audit.jsonl`` (one line per input), ``quarantine.jsonl`` and ``report.json``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import os
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsynth.batch import iter_minibatches
from imgsynth.config import config_hash, config_to_dict, load_config, validate_config
from imgsynth.contracts import (
    DEID_QUARANTINE,
    DEID_REPORT,
    DeidReport,
    append_audit,
    read_audit,
    read_deid_report,
    write_audit,
    write_deid_report,
)
from imgsynth.deid.config import DeidConfig
from imgsynth.deid.keys import Keyring, load_keyring
from imgsynth.errors import EXIT_OK, EXIT_PARTIAL, ContractError, InputError, UsageError
from imgsynth.utils.io import atomic_write_bytes, is_within
from imgsynth.utils.log import get_logger

log = get_logger("deid")
_UID_PATH = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class WorkItem:
    """One input file: its path, its label ``<root name>/<relative path>``, and its keyed id."""

    path: str
    label: str
    input_id: str


@dataclass(frozen=True)
class Job:
    """Everything a worker needs (picklable: the key travels in memory, never on disk)."""

    out_dir: str
    config: dict[str, Any]
    keyring: Keyring
    quarantine_dir: str | None = None
    mapping: bool = False
    input_root: str | None = None  # plain paths (an Azure ML mini-batch) are labelled relative to it


@dataclass
class DeidSummary:
    """What ``anonymize_tree`` did; ``results`` (in memory only) names each input's path."""

    out_dir: Path
    counts: dict[str, int]
    quarantine_reasons: dict[str, int]
    key_fingerprint: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.counts.get("quarantined", 0) else EXIT_OK

    @property
    def quarantined(self) -> list[tuple[str, str]]:
        """(input path, reason) of the inputs of this call that were not de-identified."""
        return [(r["path"], r["reason"]) for r in self.results if r["status"] == "quarantined"]


# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _deidentifier(config_json: str, keyring: Keyring):  # noqa: ANN202
    import json

    from imgsynth.deid.actions import Deidentifier

    return Deidentifier(DeidConfig.model_validate(json.loads(config_json)), keyring)


@contextlib.contextmanager
def _quiet_reading() -> Iterator[None]:
    """Lenient reading and writing, and none of pydicom's warnings (they name values and paths)."""
    from imgsynth.deid.files import lenient_values

    with warnings.catch_warnings(), lenient_values():
        warnings.simplefilter("ignore")
        yield


def deid_minibatch(items: Sequence[WorkItem | str | Path], job: Job) -> list[dict[str, Any]]:
    """The mini-batch entry: de-identify each file; one result dict per input, never raises.

    ``items`` are :class:`WorkItem` (local runs) or plain paths (an Azure ML parallel job's
    mini-batch; labelled relative to ``job.input_root``, as :func:`discover` labels them).
    """
    import json

    deid = _deidentifier(json.dumps(job.config, sort_keys=True), job.keyring)
    out = []
    with _quiet_reading():
        for item in items:
            if not isinstance(item, WorkItem):
                item = work_item(Path(item), job)
            out.append(_process(item, job, deid))
    return out


def work_item(path: Path, job: Job) -> WorkItem:
    """A plain input path as a :class:`WorkItem`, labelled relative to ``job.input_root``."""
    root = Path(job.input_root) if job.input_root else path.parent
    try:
        label = f"{root.name}/{path.relative_to(root).as_posix()}"
    except ValueError:
        label = path.name
    return WorkItem(str(path), label, job.keyring.path_id(label))


def _process(item: WorkItem, job: Job, deid: Any) -> dict[str, Any]:
    from imgsynth.deid.files import describe_error, place, prepare_file_meta, read_dataset, transfer_syntax
    from imgsynth.deid.pixels import clean_pixels, matching_rule, pixel_risk
    from imgsynth.deid.writer import write_file

    cfg: DeidConfig = deid.config
    res: dict[str, Any] = {"input": item.input_id, "path": item.path}
    try:
        _check_regular_file(Path(item.path))
        ds, notes = read_dataset(Path(item.path))
        ts = transfer_syntax(ds)
        rule = matching_rule(ds, cfg.pixels.clean)
        risk = pixel_risk(ds, cfg.pixels)
        if rule is not None:
            if risk and risk.startswith("recognizable") and cfg.pixels.burned_in == "quarantine":
                raise InputError(f"{risk} (rectangles cannot clean faces; allow with pixels.burned_in=allow)")
            ts = clean_pixels(ds, rule, ts)
            notes.append(f"pixels cleaned: {len(rule.rectangles)} rectangle(s), written as {ts.name}")
        elif risk and cfg.pixels.burned_in == "quarantine":
            raise InputError(f"{risk} (allow with pixels.burned_in=allow, or give pixels.clean rectangles)")
        outcome = deid.deidentify(ds, pixels_cleaned=rule is not None)
        prepare_file_meta(ds, ts)
        wanted = _output_name(ds, item, cfg.layout)
        rel, written, size = place(Path(job.out_dir), wanted, lambda fh: write_file(fh, ds, ts))
        if not written:
            where = "" if rel == wanted else f" as {Path(rel).name}"
            notes.append(f"identical file already in OUT_DIR{where} (same instance stored twice, or an earlier run): "
                         "not rewritten")
        elif rel != wanted:
            notes.append(f"another input has this output name with different content: written as {Path(rel).name}")
        res.update(status="done", output=rel, written=written, size=size, transfer_syntax=str(ts),
                   actions=outcome.counts, notes=notes + outcome.warnings)
        if job.mapping:
            res["mapping"] = [("file", item.path, rel), *_identity_rows(outcome)]
    except Exception as exc:  # noqa: BLE001  (one bad input never stops the batch)
        res.update(status="quarantined", reason=describe_error(exc))
        if job.mapping:
            res["mapping"] = [("file", item.path, f"quarantined: {res['reason']}")]
        if job.quarantine_dir:
            _copy_to_quarantine(item, Path(job.quarantine_dir))
    return res


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it (reading a FIFO would wait forever)."""
    if path.is_symlink() and not path.exists():
        raise InputError("broken symbolic link: the file it points to does not exist")
    if not path.is_file():
        raise InputError("not a regular file (a FIFO, socket or device)" if path.exists() else "file not found (removed during the run?)")


def mapping_minibatch(items: Sequence[tuple[WorkItem, str]], job: Job) -> list[list[tuple[str, str, str]]]:
    """The ``--mapping`` rows of inputs an earlier run already de-identified into OUT_DIR (given
    with their output path): read again and de-identified in memory, nothing written."""
    import json

    from imgsynth.deid.files import read_dataset

    deid = _deidentifier(json.dumps(job.config, sort_keys=True), job.keyring)
    out: list[list[tuple[str, str, str]]] = []
    with _quiet_reading():
        for item, output in items:
            rows = [("file", item.path, output)]
            try:
                ds, _ = read_dataset(Path(item.path))
                outcome = deid.deidentify(ds)
                rows += _identity_rows(outcome)
            except Exception:  # noqa: BLE001  (changed since: its file row still stands)
                pass
            out.append(rows)
    return out


def _identity_rows(outcome: Any) -> list[tuple[str, str, str]]:
    """Mapping rows of the UIDs and patient identity one file's de-identification replaced."""
    return [*(("uid", a, b) for a, b in outcome.uids.items()), *((k, a, b) for k, (a, b) in outcome.pseudonyms.items() if a)]


def _output_name(ds: Any, item: WorkItem, layout: str) -> str:
    if layout == "mirror":
        return item.label
    from imgsynth.deid.files import text_value

    parts = []
    for tag, fallback in ((0x0020000D, "unknown-study"), (0x0020000E, "unknown-series"), (0x00080018, None)):
        uid = text_value(ds, tag)
        if not _UID_PATH.match(uid) or len(uid) > 64:
            uid = fallback or ("instance-" + hashlib.sha256(uid.encode()).hexdigest()[:32])
        parts.append(uid)
    return f"{parts[0]}/{parts[1]}/{parts[2]}.dcm"


def _copy_to_quarantine(item: WorkItem, folder: Path) -> None:
    target = folder / item.label
    if target.exists() or not Path(item.path).is_file():  # (a broken link or a FIFO: nothing to copy)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    shutil.copy2(item.path, tmp)
    os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------
# The tree
# ---------------------------------------------------------------------------------------------
def _root_labels(roots: Sequence[Path]) -> list[str]:
    labels: list[str] = []
    for root in roots:
        base = root.name or "input"
        label, n = base, 1
        while label in labels:
            n += 1
            label = f"{base}-{n}"
        labels.append(label)
    return labels


def discover(roots: Sequence[Path], keyring: Keyring) -> list[WorkItem]:
    """Every regular file under the roots (a root may be a single file), in a stable order."""
    items: list[WorkItem] = []
    for root, label in zip(roots, _root_labels(roots), strict=True):
        if root.is_file():
            files = [root]
            base = root.parent
        else:
            base = root
            files = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                files.extend(Path(dirpath) / f for f in sorted(filenames))
        for f in files:
            if f.is_dir():
                continue  # (a link to a folder: not followed)
            rel = f.relative_to(base).as_posix()
            full = f"{label}/{rel}" if root.is_dir() else rel
            items.append(WorkItem(str(f), full, keyring.path_id(full)))
    return items


def _check_paths(roots: Sequence[Path], out: Path, mapping: Path | None, quarantine: Path | None) -> None:
    if not roots:
        raise UsageError("give at least one input folder before OUT_DIR")
    for root in roots:
        if not root.exists():
            raise UsageError(f"input not found: {root}")
        if is_within(out, root):
            raise UsageError(f"OUT_DIR {out} lies inside input {root}: the input tree must not be modified")
        if is_within(root, out):
            raise UsageError(f"input {root} lies inside OUT_DIR {out}")
    for path, what in ((mapping, "--mapping"), (quarantine, "--quarantine-dir")):
        if path is None:
            continue
        if is_within(path, out):
            raise UsageError(f"{what} {path} must lie outside OUT_DIR (it holds identifying data)")
        for root in roots:
            if is_within(path, root):
                raise UsageError(f"{what} {path} must lie outside input {root} (inputs are never modified)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT_DIR {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DEID_REPORT).is_file():
        raise UsageError(f"OUT_DIR {out} is not empty and holds no earlier de-identification run; choose an empty folder")


def resolve_config(
    config: str | Path | DeidConfig | None, options: Iterable[str] = (), overrides: Iterable[str] = (),
    **updates: Any,
) -> DeidConfig:
    """A :class:`DeidConfig` from a built-in name, a path or an object, plus ``--option``s, ``--set``
    overrides and keyword ``updates`` (``workers=4``, ``layout="mirror"``; None values ignored)."""
    if isinstance(config, DeidConfig):
        if overrides:
            raise UsageError("--set overrides need a config name or path, not a config object")
        cfg = config
    else:
        loaded = load_config(config or "deid_basic", list(overrides), expect_kind="deid")
        assert isinstance(loaded, DeidConfig)
        cfg = loaded
    data = cfg.model_dump(mode="json")
    data["options"] = [*data["options"], *options]
    data.update({k: v for k, v in updates.items() if v is not None})
    return validate_config(DeidConfig, data, source="command line")


def anonymize_tree(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    config: str | Path | DeidConfig | None = None,
    options: Iterable[str] = (),
    overrides: Iterable[str] = (),
    key_file: str | Path | None = None,
    new_key: str | Path | None = None,
    keyring: Keyring | str | bytes | None = None,
    workers: int | None = None,
    layout: str | None = None,
    mapping: str | Path | None = None,
    quarantine_dir: str | Path | None = None,
) -> DeidSummary:
    """De-identify every file under ``inputs`` into ``out_dir`` (PS3.15 Annex E); see README.md.

    The key comes from ``keyring`` (a :class:`Keyring` or the secret itself), ``key_file``, a new
    key file ``new_key`` or ``$IMGSYNTH_DEID_KEY`` (in that order); without any the call is refused.
    Re-running resumes: inputs already de-identified (per ``audit.jsonl``, output present) are skipped.
    """
    roots = [Path(p) for p in ([inputs] if isinstance(inputs, str | Path) else inputs)]
    out = Path(out_dir)
    mapping_path = Path(mapping) if mapping is not None else None
    qdir = Path(quarantine_dir) if quarantine_dir is not None else None
    cfg = resolve_config(config, options, overrides, workers=workers, layout=layout)
    _check_paths(roots, out, mapping_path, qdir)
    if cfg.layout == "mirror":
        log.warning("--layout mirror keeps input file and folder names in OUT_DIR: use it only for trees "
                    "whose names identify no one")
    if isinstance(keyring, str | bytes):
        keyring = Keyring(keyring)
    keys = keyring or load_keyring(key_file=key_file, new_key=new_key, out_dir=out, inputs=tuple(roots))
    items = discover(roots, keys)
    if not items:
        raise InputError(f"no files found under {', '.join(str(r) for r in roots)}")
    # The job's config without run-time knobs, so that --workers does not break resuming.
    job_config = cfg.model_dump(mode="json")
    identity = {k: v for k, v in job_config.items() if k not in ("workers", "batch_size")}
    chash = config_hash(DeidConfig.model_validate({**identity, "workers": 1, "batch_size": 16}))
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_run(out, keys, chash)
    for stale in out.rglob(".*.part"):  # temporary files of a run that was killed
        stale.unlink(missing_ok=True)

    from imgsynth.deid.actions import Deidentifier

    method_codes = Deidentifier(cfg, keys).method_codes()
    report_base = {
        "options": [str(o) for o in cfg.options], "method_codes": method_codes, "layout": cfg.layout,
        "key_fingerprint": keys.fingerprint, "config_hash": chash, "config": config_to_dict(cfg),
        "profile_table": _table_source(), "provenance": _provenance(),
    }
    write_deid_report(out, DeidReport(status="running", counts={"inputs": len(items)}, **report_base))

    todo = [it for it in items if not _already_done(previous.get(it.input_id), out)]
    resumed = len(items) - len(todo)
    job = Job(str(out), job_config, keys, str(qdir) if qdir else None, mapping_path is not None)
    results: list[dict[str, Any]] = []
    if mapping_path is not None:  # inputs done by an earlier run that the mapping does not list yet
        listed = {orig for kind, orig, _ in _read_mapping(mapping_path) if kind == "file"}
        pending = {it.input_id for it in todo}
        redo = [(it, previous[it.input_id]["output"]) for it in items
                if it.input_id not in pending and it.path not in listed]
        for rows in iter_minibatches(functools.partial(mapping_minibatch, job=job), redo, workers=cfg.workers,
                                     batch_size=cfg.batch_size, description="mapping earlier outputs"):
            _append_mapping(mapping_path, [row for file_rows in rows for row in file_rows])
    entry = functools.partial(deid_minibatch, job=job)
    for batch in iter_minibatches(entry, todo, workers=cfg.workers, batch_size=cfg.batch_size,
                                  description="de-identifying"):
        append_audit(out, (_audit_line(r) for r in batch))
        batch_rows = [row for r in batch for row in r.pop("mapping", ())]
        if mapping_path is not None:  # as it goes, so that an interrupted run keeps its rows
            _append_mapping(mapping_path, batch_rows)
        results.extend(batch)

    # Final records: the latest line per input, in input order.
    latest = dict(previous)
    latest.update({r["input"]: _audit_line(r) for r in results})
    order = [it.input_id for it in items]
    known = set(order)
    audit = [latest[i] for i in order if i in latest] + [v for k, v in latest.items() if k not in known]
    write_audit(out, audit)
    quarantined = [
        {"input": a["input"], "reason": a.get("reason", "")} for a in audit if a["status"] == "quarantined"
    ]
    write_audit(out, quarantined, name=DEID_QUARANTINE)
    this_run = [latest[i] for i in order]
    counts = {
        "inputs": len(items),
        "done": sum(a["status"] == "done" for a in this_run),
        "quarantined": sum(a["status"] == "quarantined" for a in this_run),
        "written": sum(bool(r.get("written")) for r in results),
        "identical_not_rewritten": sum(r.get("status") == "done" and not r.get("written") for r in results),
        "renamed": sum(any("different content" in n for n in r.get("notes", ())) for r in results),
        "resumed": resumed,
    }
    reasons = dict(Counter(a.get("reason", "") for a in this_run if a["status"] == "quarantined").most_common())
    write_deid_report(out, DeidReport(status="complete", counts=counts, quarantine_reasons=reasons, **report_base))
    if mapping_path is not None:
        _merge_mapping(mapping_path)
    if qdir is not None and quarantined:
        _write_quarantine_index(qdir, [r for r in results if r["status"] == "quarantined"], items)
    by_id = {it.input_id: it for it in items}
    for r in results:
        r.setdefault("path", by_id[r["input"]].path)
    if counts["renamed"]:
        log.warning("%d input(s) share an output name with different content (the same SOP Instance UID "
                    "stored differently): written with a _N suffix, see the notes in audit.jsonl", counts["renamed"])
    return DeidSummary(out, counts, reasons, keys.fingerprint, results)


def _audit_line(r: dict[str, Any]) -> dict[str, Any]:
    """The audit record of a result: no input path, no identifying value."""
    keep = ("input", "status", "output", "written", "size", "transfer_syntax", "actions", "notes", "reason")
    return {k: r[k] for k in keep if k in r}


def _already_done(record: dict[str, Any] | None, out: Path) -> bool:
    if not record or record.get("status") != "done" or not record.get("output"):
        return False
    path = out / record["output"]
    return path.is_file() and (record.get("size") is None or path.stat().st_size == record["size"])


def _previous_run(out: Path, keys: Keyring, chash: str) -> dict[str, dict[str, Any]]:
    """Audit lines of an earlier run into ``out`` (checked to be made with the same key and config)."""
    if not (out / DEID_REPORT).is_file():
        return {}
    try:
        report = read_deid_report(out)
    except ContractError as exc:
        raise UsageError(f"OUT_DIR holds an unreadable de-identification report ({exc}); choose an empty folder") from None
    if report.key_fingerprint != keys.fingerprint:
        raise UsageError(
            f"OUT_DIR {out} was written with another key (fingerprint {report.key_fingerprint}); "
            "pass the same key to resume, or choose an empty folder"
        )
    if report.config_hash != chash:
        raise UsageError(f"OUT_DIR {out} was written with another config; use the same config to resume, or an empty folder")
    records: dict[str, dict[str, Any]] = {}
    for rec in read_audit(out):
        records[rec.input] = rec.model_dump(exclude_none=True)
    return records


def _table_source() -> dict[str, Any]:
    from imgsynth.deid.profile import load_table

    return dict(load_table().source)


def _provenance() -> dict[str, Any]:
    """Versions and commit, without the command line (its paths may name patients)."""
    from imgsynth.provenance import collect

    prov = collect()
    prov.pop("command", None)
    return prov


# The mapping CSV names input paths as the file system has them: a name that is not UTF-8 keeps
# its bytes (surrogateescape), so that it still leads back to its file.
_MAPPING_HEADER = ("kind", "original", "pseudonym")


def _read_mapping(path: Path) -> list[tuple[str, str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return [(r[0], r[1], r[2]) for r in list(csv.reader(fh))[1:] if len(r) == 3]


def _append_mapping(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Add rows to the mapping CSV (created owner-only, with its header); merged at the end."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if fh.tell() == 0:
            writer.writerow(_MAPPING_HEADER)
        writer.writerows(rows)


def _merge_mapping(path: Path) -> None:
    """Rewrite the mapping CSV (kind, original, pseudonym) with each row once, earlier runs' rows
    first: it is identifying, kept outside OUT_DIR, readable by its owner only."""
    seen: set[tuple[str, str, str]] = set()
    merged = []
    for row in _read_mapping(path):
        if row not in seen:
            seen.add(row)
            merged.append(row)
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([_MAPPING_HEADER, *merged])
    atomic_write_bytes(path, buf.getvalue().encode("utf-8", errors="surrogateescape"))
    os.chmod(path, 0o600)


def _write_quarantine_index(folder: Path, results: list[dict[str, Any]], items: list[WorkItem]) -> None:
    by_id = {it.input_id: it for it in items}
    buf = ["input,file,reason"]
    for r in results:
        item = by_id[r["input"]]
        buf.append(",".join(_csv_cell(v) for v in (r["input"], item.label, r["reason"])))
    atomic_write_bytes(folder / "quarantine.csv", ("\n".join(buf) + "\n").encode("utf-8", errors="surrogateescape"))


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
