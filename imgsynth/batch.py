"""Mini-batch execution shared by every stage.

A stage exposes a *mini-batch entry*: a function taking a list of inputs and returning one
result per input. The same function runs locally over a process pool (``run_minibatches``)
and on Azure ML, where a parallel job or batch endpoint hands it its mini-batches.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from imgsynth.utils.log import progress

In = TypeVar("In")
Out = TypeVar("Out")


def chunked(items: Sequence[In], size: int) -> list[list[In]]:
    size = max(1, int(size))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def iter_minibatches(
    entry: Callable[[list[In]], list[Out]],
    items: Sequence[In],
    *,
    workers: int = 1,
    batch_size: int = 16,
    description: str = "processing",
) -> Iterator[list[Out]]:
    """Like :func:`run_minibatches`, but yield each mini-batch's results as soon as it is done
    (in input order), so that a caller can record progress while the run goes on."""
    batches = chunked(items, batch_size)
    if workers <= 1 or len(batches) <= 1:
        for batch in progress(batches, total=len(batches), description=description):
            yield entry(batch)
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from progress(pool.map(entry, batches), total=len(batches), description=description)


def run_minibatches(
    entry: Callable[[list[In]], list[Out]],
    items: Sequence[In],
    *,
    workers: int = 1,
    batch_size: int = 16,
    description: str = "processing",
) -> list[Out]:
    """Run ``entry`` over ``items`` in mini-batches, in ``workers`` processes; results keep input order.

    ``entry`` must be a picklable top-level function (``functools.partial`` of one is fine) and
    must not raise for a bad item: it reports the failure in that item's result.
    """
    results: list[Out] = []
    for out in iter_minibatches(entry, items, workers=workers, batch_size=batch_size, description=description):
        results.extend(out)
    return results
