"""Two real processes (accelerate, gloo on CPU) split a set without overlap and write the same images as one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from imgsynth.cli import main
from imgsynth.contracts import Dataset
from imgsynth.generate import generate


@pytest.mark.ddp
def test_two_processes_write_what_one_writes(tiny_run: Path, tmp_path: Path) -> None:
    kw = {"n": 5, "sampler": "ddpm", "steps": 6, "seed": 8, "formats": ["png", "dicom"]}
    one = generate(tiny_run, tmp_path / "one", batch_size=2, **kw)
    assert main(["generate", str(tiny_run), str(tmp_path / "two"), "--n", "5", "--sampler", "ddpm", "--steps", "6",
                 "--seed", "8", "--format", "png,dicom", "--batch-size", "3", "--num-processes", "2", "--device", "cpu"]) == 0
    two = Dataset.read(tmp_path / "two")
    assert [r["id"] for r in two.rows] == [r["id"] for r in one.rows]
    for a, b in zip(one.rows, two.rows, strict=True):
        np.testing.assert_allclose(np.load(one.item_path(a)), np.load(two.item_path(b)), atol=1e-5)
        assert (a["label"], a["age"], a["seed"], a["dicom"]) == (b["label"], b["age"], b["seed"], b["dicom"])
    state = json.loads((tmp_path / "two" / ".generate" / "state.json").read_text())
    # Each process made its own contiguous share (3 + 2), no sample twice.
    assert state["made_by"] == {"done-000.jsonl": 3, "done-001.jsonl": 2} and state["made_twice"] == 0
    # Both processes' DICOM files of one label sit in one series of one study.
    files = [pydicom.dcmread(two.root / r["dicom"]) for r in two.rows]
    assert len({f.StudyInstanceUID for f in files}) == 1
    by_label = {}
    for r, f in zip(two.rows, files, strict=True):
        by_label.setdefault(r["label"], set()).add(f.SeriesInstanceUID)
    assert all(len(s) == 1 for s in by_label.values()) and len(by_label) == 2
