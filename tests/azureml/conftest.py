"""The tiny trained run of the generation tests (trained once per session, shared with tests/generate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.generate.conftest import trained_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_run(tmp_path_factory)
