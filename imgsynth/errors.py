"""One exception hierarchy for the whole package.

Every error carries a one-line message naming the file or field at fault and, where
possible, the fix. The CLI prints ``str(error)`` on one line and exits with ``exit_code``
(DESIGN: 0 done, 1 failed, 2 usage or config error, 3 finished with inputs skipped).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class ImgsynthError(Exception):
    """Base class of every error the package raises on purpose."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        one_line = " ".join(str(message).split())
        super().__init__(f"{self.path}: {one_line}" if self.path else one_line)


class ConfigError(ImgsynthError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""

    exit_code = EXIT_USAGE


class UsageError(ImgsynthError):
    """The command was called wrongly (missing input, output inside input, ...)."""

    exit_code = EXIT_USAGE


class ContractError(ImgsynthError):
    """A stage folder (dataset, run, evaluation, review) does not follow its contract."""


class InputError(ImgsynthError):
    """One input item cannot be processed (bad DICOM, broken NIfTI, ...)."""


class DependencyError(ImgsynthError):
    """An optional dependency or user-supplied file (weights, browser) is missing."""

    exit_code = EXIT_USAGE
