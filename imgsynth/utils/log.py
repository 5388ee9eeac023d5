"""Logging through ``logging`` + rich, and progress bars for long loops."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)
_configured = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("imgsynth") else f"imgsynth.{name}")


def setup_logging(level: int = logging.INFO) -> None:
    """Route the package's log records to stderr through rich (idempotent)."""
    global _configured
    root = logging.getLogger("imgsynth")
    root.setLevel(level)
    if not _configured:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.propagate = False
        _configured = True


@contextlib.contextmanager
def quiet_input_warnings() -> Iterator[None]:
    """Silence the warnings readers raise about an input (pydicom, nibabel, numpy casts): they
    quote values and paths, and an input that matters is refused with a one-line reason anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def progress(
    items: Iterable[T], *, total: int | None = None, description: str = "working", enabled: bool = True
) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr (plain iteration when disabled or not a TTY)."""
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
