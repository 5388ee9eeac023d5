"""Train/val/test splits: whole subjects per split, or contiguous blocks of slice positions.

``subject``: subjects are shuffled with the seed and cut by the configured fractions (largest
remainder, at least one training subject), so no subject spans two splits.

``block`` (2D datasets of very few subjects, e.g. one template): along each plane of each series
the kept slices, in slice order, are cut into blocks of ``block`` consecutive slices; a seeded
shuffle gives each block a split by the fractions; then the gap is cut out of the larger split:
training slices within ``gap`` slices of a val/test slice are dropped, and val slices within
``gap`` of a test slice. Val/test blocks stay whole, and slices of different splits of the same
plane are at least ``gap + 1`` slices apart: test slices are never neighbours of training slices. Slices of different
planes still intersect: with one subject, a test axial slice crosses training coronal slices.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from imgsynth.data.config import SplitOptions

SPLIT_NAMES = ("train", "val", "test")
_RANK = {"train": 0, "val": 1, "test": 2}  # the gap is cut from the lower-ranked split


def split_counts(n: int, opts: SplitOptions) -> list[int]:
    """How many of ``n`` units go to train/val/test (largest remainder; train gets at least one)."""
    fractions = [opts.train, opts.val, opts.test]
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (raw[i] - counts[i], -i), reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    if n and counts[0] == 0:
        donor = max((1, 2), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[0] += 1
    return counts


def assign(units: Sequence[Hashable], opts: SplitOptions, salt: int = 0) -> dict[Hashable, str]:
    """Seeded assignment of units (sorted first, so the input order does not matter) to splits."""
    ordered = sorted(units, key=str)
    rng = np.random.default_rng([opts.seed, salt])
    perm = rng.permutation(len(ordered))
    counts = split_counts(len(ordered), opts)
    out: dict[Hashable, str] = {}
    start = 0
    for name, count in zip(SPLIT_NAMES, counts, strict=True):
        for i in perm[start : start + count]:
            out[ordered[i]] = name
        start += count
    return out


def subject_splits(subjects: Sequence[str], opts: SplitOptions) -> dict[str, str]:
    return {str(k): v for k, v in assign(sorted(set(subjects)), opts).items()}


def block_splits(items: Sequence[tuple[str, int]], opts: SplitOptions) -> dict[int, str | None]:
    """Split items given as (line, slice index), where a line is one plane of one series.

    Returns {item number: split, or None when dropped by the gap}.
    """
    by_line: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, (line, k) in enumerate(items):
        by_line[line].append((k, n))
    out: dict[int, str | None] = {}
    for salt, line in enumerate(sorted(by_line)):
        members = sorted(by_line[line])
        blocks = [members[i : i + opts.block] for i in range(0, len(members), opts.block)]
        block_split = assign(list(range(len(blocks))), opts, salt=salt + 1)
        split_of = {n: block_split[b] for b, block in enumerate(blocks) for _, n in block}
        index_of = {n: k for k, n in members}
        for k, n in members:
            rank = _RANK[split_of[n]]
            clash = any(_RANK[split_of[m]] > rank and abs(index_of[m] - k) <= opts.gap for _, m in members)
            out[n] = None if clash else split_of[n]
    return out
