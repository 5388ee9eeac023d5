"""The training stream: a deterministic, infinite order of items, sharded over processes.

Epoch ``e`` visits the items in ``randperm(N)`` seeded by ``(seed, e)``; concatenated, the epochs
form the *stream*. A step taken after ``nimg`` images consumes stream positions
``[nimg, nimg + batch)``: micro-batch ``k`` of process ``r`` takes the slice starting at
``nimg + k*batch_gpu*processes + r*batch_gpu``. So the global batch of every step is the same
whatever the number of processes or the accumulation, and resuming after ``nimg`` images only
means starting the sampler there (no data is loaded to skip it).

Each item carries ``key``: its stream position, which keys its random numbers
(:class:`imgsynth.training.task.KeyedRandom`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _mix(*values: int) -> int:
    digest = hashlib.blake2b(":".join(str(v) for v in values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Item order of one epoch of the stream."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch, "epoch")))


class StreamDataset(Dataset):
    """Maps stream positions to items of ``items`` (adds ``key`` = the position)."""

    def __init__(self, items: Dataset, seed: int) -> None:
        self.items = items
        self.n = len(items)  # type: ignore[arg-type]
        self.seed = int(seed)
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def index_of(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.n)
        if epoch != self._epoch:
            self._order, self._epoch = epoch_order(self.n, self.seed, epoch), epoch
        return int(self._order[offset])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = dict(self.items[self.index_of(position)])
        item["key"] = int(position)
        return item


class StreamSampler(Sampler[int]):
    """This process's stream positions, micro-batch after micro-batch, from ``start_nimg`` on (infinite)."""

    def __init__(self, *, batch: int, batch_gpu: int, rank: int, processes: int, start_nimg: int = 0) -> None:
        if batch % (batch_gpu * processes):
            raise ValueError(f"batch {batch} is not a multiple of batch_gpu {batch_gpu} x {processes} processes")
        self.batch, self.batch_gpu, self.rank, self.processes = batch, batch_gpu, rank, processes
        self.accum = batch // (batch_gpu * processes)
        self.start_nimg = start_nimg

    def positions(self, nimg: int, micro: int) -> range:
        """Stream positions of micro-batch ``micro`` of the step taken after ``nimg`` images."""
        first = nimg + micro * self.batch_gpu * self.processes + self.rank * self.batch_gpu
        return range(first, first + self.batch_gpu)

    def __iter__(self) -> Iterator[int]:
        nimg = self.start_nimg
        while True:
            for micro in range(self.accum):
                yield from self.positions(nimg, micro)
            nimg += self.batch


def make_train_loader(
    items: Dataset,
    *,
    seed: int,
    batch: int,
    batch_gpu: int,
    rank: int = 0,
    processes: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """Infinite loader of this process's micro-batches; set ``loader.sampler.start_nimg`` to resume."""
    sampler = StreamSampler(batch=batch, batch_gpu=batch_gpu, rank=rank, processes=processes)
    return DataLoader(
        StreamDataset(items, seed),
        batch_size=batch_gpu,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
    )


class _Keyed(Dataset):
    """Items ``indices`` of ``items`` with ``key`` = -(index + 1) (fixed validation randomness)."""

    def __init__(self, items: Dataset, indices: Sequence[int]) -> None:
        self.items, self.indices = items, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.items[self.indices[i]])
        item["key"] = -(self.indices[i] + 1)
        return item


def make_val_loader(
    items: Dataset, *, batch: int, rank: int = 0, processes: int = 1, max_items: int | None = None, num_workers: int = 0
) -> DataLoader:
    """This process's share (every ``processes``-th item) of the first ``max_items`` validation items."""
    n = len(items)  # type: ignore[arg-type]
    n = n if max_items is None else min(n, max_items)
    return DataLoader(_Keyed(items, range(rank, n, processes)), batch_size=batch, shuffle=False, num_workers=num_workers)
