"""Which items become cases, what they are called and in which order each reader sees them.

Everything random here comes from one seed, split into independent streams (real pick,
synthetic pick, case ids, reader orders), so an export can be rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from imgsynth.contracts import Dataset
from imgsynth.errors import ImgsynthError, UsageError

# Case ids: letters and digits that cannot be misread for one another (no 0/O, 1/I/L, 2/Z, 5/S, 8/B).
ID_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
ID_LENGTH = 5


@dataclass(frozen=True)
class Pick:
    """An item chosen as a case, with its array already loaded and checked."""

    truth: Literal["real", "synthetic"]
    row: dict[str, str]
    split: str


@dataclass
class Selection:
    picks: list[Pick]
    skipped: list[tuple[str, str]]  # (item id, reason)
    notes: list[str]


def seed_streams(seed: int, n: int = 4) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def candidate_rows(
    dataset: Dataset, truth: Literal["real", "synthetic"], splits: Sequence[str]
) -> list[tuple[dict[str, str], str]]:
    """Rows eligible as cases with their split, the preferred splits first.

    Real cases come from ``splits`` in order (test before val before train: items the model
    was trained on come last); synthetic cases from the ``synthetic`` split, or every row.
    """
    if truth == "synthetic":
        rows = dataset.split("synthetic") or dataset.rows
        return [(r, r["split"]) for r in rows]
    return [(r, split) for split in splits for r in dataset.split(split)]


def choose(
    candidates: list[tuple[dict[str, str], str]],
    truth: Literal["real", "synthetic"],
    n: int,
    rng: np.random.Generator,
    check: Callable[[dict[str, str]], None],
    *,
    distinct_subjects: bool,
) -> Selection:
    """Draw ``n`` items at random, preferred splits first, skipping items ``check`` rejects.

    Within a split the order is random; with ``distinct_subjects`` items of subjects not drawn
    yet come before a second item of the same subject.
    """
    order: list[int] = []
    seen: set[str] = set()
    for split in dict.fromkeys(s for _, s in candidates):
        idx = rng.permutation([i for i, (_, s) in enumerate(candidates) if s == split])
        if distinct_subjects:
            first, later = [], []
            for i in idx:
                subject = candidates[int(i)][0].get("subject", "")
                (later if subject and subject in seen else first).append(int(i))
                seen.add(subject)
            idx = np.array(first + later, dtype=int)
        order.extend(int(i) for i in idx)
    picks: list[Pick] = []
    skipped: list[tuple[str, str]] = []
    for i in order:
        if len(picks) == n:
            break
        row, split = candidates[i]
        try:
            check(row)
        except ImgsynthError as exc:
            skipped.append((row["id"], str(exc)))
            continue
        picks.append(Pick(truth=truth, row=row, split=split))
    if len(picks) < n:
        raise UsageError(
            f"need {n} {truth} case(s) but only {len(picks)} usable item(s) exist"
            f"{f' ({len(skipped)} unreadable)' if skipped else ''}; lower --n-{truth}"
        )
    notes = []
    used = list(dict.fromkeys(p.split for p in picks))
    first_split = candidates[0][1] if candidates else ""
    if truth == "real" and used != [first_split]:
        notes.append(f"real cases: the '{first_split}' split could not provide {n} case(s); drew from {', '.join(used)}")
    return Selection(picks=picks, skipped=skipped, notes=notes)


def case_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct random case ids (``ID_LENGTH`` characters of ``ID_ALPHABET``)."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = "".join(rng.choice(list(ID_ALPHABET), ID_LENGTH))
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def reader_ids(n: int) -> list[str]:
    return [f"R{i + 1:02d}" for i in range(n)]


def reader_orders(n_cases: int, n_readers: int, rng: np.random.Generator) -> list[list[int]]:
    """An independent random reading order per reader."""
    return [[int(i) for i in rng.permutation(n_cases)] for _ in range(n_readers)]
