"""Shared fixtures: real data locations and reference tools (skipped with a reason when absent)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def require_tool(name: str) -> str:
    """Path of an external reference tool; skip when absent (fail under IMGSYNTH_REQUIRE_TOOLS=1)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("IMGSYNTH_REQUIRE_TOOLS") == "1":
            pytest.fail(f"reference tool '{name}' is required here (IMGSYNTH_REQUIRE_TOOLS=1) but not installed")
        pytest.skip(f"reference tool '{name}' not installed")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (absent in a user's clone: tests skip)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
