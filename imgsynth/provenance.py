"""What made an output: package versions, git commit, command line, time, host."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import imgsynth

TRACKED_PACKAGES = (
    "torch",
    "monai",
    "diffusers",
    "accelerate",
    "pydicom",
    "nibabel",
    "numpy",
    "torchmetrics",
    "scikit-image",
    "safetensors",
    "pydantic",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {"imgsynth": imgsynth.__version__, "python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the source tree imgsynth runs from (``+dirty`` if modified), or None."""
    where = Path(path) if path is not None else Path(imgsynth.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def collect(argv: list[str] | None = None) -> dict[str, Any]:
    """Provenance record saved beside every stage output."""
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv if argv is None else argv),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
    }
