"""Let a process that holds its dataset in RAM reuse the memory of freed batches (glibc malloc).

glibc serves each allocation above its mmap threshold (128 KiB at first, raised only after a large
block is freed) with fresh pages from the kernel, and returns freed heap memory above its trim
threshold. A loader over cached 3D items allocates a new batch every step (two 128^3 float volumes
are 16 MiB), and when those pages are fresh, the kernel faults in and zeroes each 4 KiB of them:
a cached epoch then costs several times the copy of its items. :func:`reuse_freed_memory` sets
both thresholds, so the next batch reuses the memory of the last one.
"""

from __future__ import annotations

import ctypes
import logging
import threading

log = logging.getLogger(__name__)

# mallopt(3) parameters; glibc accepts an mmap threshold of at most 32 MiB on 64-bit systems.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024

_lock = threading.Lock()
_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MiB, and up to 1 GiB of free heap, for reuse in this process.

    Returns whether the settings are in force: False where the C library is not glibc (musl,
    macOS), where nothing changes. Idempotent. The cost: this process keeps up to 1 GiB of freed
    memory instead of returning it to the system, which suits a process that holds its dataset.
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            log.debug("malloc keeps freed batches for reuse: %s", _applied)
        return _applied


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: elsewhere mallopt is absent or a no-op)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # (no C library to open by None on Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(param, value) == 1
