"""The list of samples to make: ``--n`` with ``--condition``, a ``--conditions-csv`` file, ``--masks-from``.

Every way of asking ends in the same list of :class:`~imgsynth.generate.api.SampleRequest` (index,
seed, conditions), built with :func:`imgsynth.generate.api.plan` so that sample ``i`` gets the same
seed and conditions however it is asked for:

* ``--n N [--condition name=value ...]``: items ``0..N-1``, seed ``item_seed(seed, i)``; unset
  categories cycle, unset numbers are drawn from ``(seed, i)``.
* ``--conditions-csv FILE``: one row per group of samples. Columns: ``count`` (optional, default 1),
  ``seed`` (optional), then condition names (a subset; an empty cell leaves that condition to the
  rules above). Rows follow each other: a row of count ``k`` makes the next ``k`` items. A row with a
  ``seed`` gives its ``j``-th item the seed ``item_seed(row seed, j)`` (the row reproduces on its
  own); without one the item's seed is ``item_seed(seed, i)``. Mask conditions name ``.npy`` files,
  relative to the CSV's folder. Without a ``count`` column and with ``--n``, rows are used in turn.
* ``--masks-from DATASET_DIR``: every mask condition of sample ``i`` comes from row ``i mod R`` of
  that dataset folder's manifest (its other columns are not used).

Masks are checked once up front (readable ``.npy`` of the trained ``[channels, *spatial]`` shape)
and identified by a hash of their content, which is what :func:`request_key` (the identity of a
request, used to verify resumed work) and the copy in the sample set (``masks/<hash>.npy``) use.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imgsynth.contracts import Condition, Dataset, DatasetInfo
from imgsynth.errors import UsageError
from imgsynth.generate.api import SampleRequest, plan

RESERVED = ("count", "seed")


@dataclass(frozen=True)
class RequestRow:
    """One row of a conditions CSV: how many samples, an optional seed, fixed condition values."""

    count: int
    seed: int | None
    values: dict[str, str]
    line: int = 0


def read_conditions_csv(path: str | Path, conditions: Sequence[Condition]) -> list[RequestRow]:
    """Parse a conditions CSV (see module docstring); mask paths are made absolute."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: conditions CSV not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    names = [c.name for c in conditions]
    unknown = [h for h in header if h not in names and h not in RESERVED]
    if unknown:
        raise UsageError(f"{path}: column '{unknown[0]}' is neither count, seed nor a condition of this model "
                         f"(it has: {', '.join(names) or 'none'})")
    if not header:
        raise UsageError(f"{path}: empty conditions CSV (expected a header: count, seed, {', '.join(names)})")
    masks = {c.name for c in conditions if c.type == "mask"}
    rows: list[RequestRow] = []
    for lineno, raw in enumerate(reader, start=2):
        if None in raw or any(v is None for v in raw.values()):
            raise UsageError(f"{path}: line {lineno}: wrong number of fields")
        cells = {k.strip(): (v or "").strip() for k, v in raw.items()}
        count = _int(cells.get("count", "") or "1", "count", path, lineno)
        if count < 0:
            raise UsageError(f"{path}: line {lineno}: count must be >= 0")
        seed = _int(cells["seed"], "seed", path, lineno) if cells.get("seed") else None
        values = {k: v for k, v in cells.items() if k not in RESERVED and v != ""}
        for name in masks & set(values):
            values[name] = str((path.parent / values[name]).resolve())
        rows.append(RequestRow(count, seed, values, lineno))
    return rows


def _int(text: str, what: str, path: Path, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{path}: line {lineno}: {what} '{text}' is not a whole number") from None


def masks_from_dataset(root: str | Path, conditions: Sequence[Condition]) -> list[dict[str, str]]:
    """Absolute mask paths of every row of a dataset folder, for the model's mask conditions."""
    masks = [c for c in conditions if c.type == "mask"]
    if not masks:
        raise UsageError("--masks-from: this model takes no mask condition")
    ds = Dataset.read(root)
    for cond in masks:
        theirs = next((c for c in ds.info.conditions if c.name == cond.name), None)
        if theirs is None or theirs.type != "mask":
            raise UsageError(f"--masks-from {root}: dataset has no mask condition '{cond.name}'")
    if not ds.rows:
        raise UsageError(f"--masks-from {root}: dataset has no items")
    return [{c.name: str((ds.root / row[c.name]).resolve()) for c in masks} for row in ds.rows]


def mask_digest(path: str | Path, cond: Condition, info: DatasetInfo, cache: dict[str, str]) -> str:
    """Content hash of a mask file, after checking it is the trained ``[channels, *spatial]`` shape."""
    key = str(path)
    if key in cache:
        return cache[key]
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{p}: cannot read mask for '{cond.name}' ({exc})") from None
    want = (cond.channels, *info.shape[1:])
    if tuple(arr.shape) != want:
        raise UsageError(f"{p}: mask for '{cond.name}' has shape {tuple(arr.shape)}, the model needs {want}")
    digest = hashlib.sha256(np.ascontiguousarray(arr.astype(np.float32)).tobytes()).hexdigest()[:16]
    cache[key] = digest
    return digest


def build_requests(
    conditions: Sequence[Condition],
    info: DatasetInfo,
    *,
    n: int | None,
    fixed: Mapping[str, str],
    seed: int,
    rows: Sequence[RequestRow] | None = None,
    masks: Sequence[Mapping[str, str]] | None = None,
    digests: dict[str, str] | None = None,
) -> list[SampleRequest]:
    """Every sample asked for, in order (see module docstring); masks checked once."""
    if rows is not None:
        if n is not None and any(r.count != 1 for r in rows):
            raise UsageError("give either --n or a 'count' column in --conditions-csv, not both")
        if not rows:
            raise UsageError("--conditions-csv has no rows")
        if n is not None:  # rows used in turn
            rows = [replace(rows[i % len(rows)], seed=None) for i in range(n)]
    else:
        if n is None:
            raise UsageError("give --n (or --conditions-csv with a count column)")
        rows = [RequestRow(n, None, {})]
    if sum(r.count for r in rows) < 1:
        raise UsageError("nothing to generate: --n / the counts add up to 0")
    requests: list[SampleRequest] = []
    for row in rows:
        base = {**fixed, **row.values}
        start = len(requests)
        if masks is not None or row.seed is not None:
            for j in range(row.count):
                i = start + j
                values = {**base, **(masks[i % len(masks)] if masks is not None else {})}
                if row.seed is not None:
                    (req,) = plan(conditions, 1, values, row.seed, start=j)
                    req = replace(req, index=i)
                else:
                    (req,) = plan(conditions, 1, values, seed, start=i)
                requests.append(req)
        else:
            requests.extend(plan(conditions, row.count, base, seed, start=start))
    cache = {} if digests is None else digests
    for cond in conditions:
        if cond.type == "mask":
            for req in requests:
                mask_digest(req.condition[cond.name], cond, info, cache)
    return requests


def request_key(req: SampleRequest, conditions: Sequence[Condition], digests: Mapping[str, str]) -> str:
    """The identity of a request: its seed and conditions (masks by content), as a short hash."""
    values: dict[str, object] = {}
    for cond in conditions:
        value = req.condition.get(cond.name)
        values[cond.name] = digests.get(str(value), str(value)) if cond.type == "mask" else value
    blob = json.dumps({"seed": req.seed, "id": req.id, "condition": values}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def row_key(row: Mapping[str, str], conditions: Sequence[Condition]) -> str:
    """:func:`request_key` recomputed from a manifest row of a sample set (masks as ``masks/<hash>.npy``)."""
    values: dict[str, object] = {}
    for cond in conditions:
        cell = row[cond.name]
        values[cond.name] = Path(cell).stem if cond.type == "mask" else cond.parse(cell)
    blob = json.dumps({"seed": int(row["seed"]), "id": row["id"], "condition": values}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]

