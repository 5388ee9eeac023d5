"""dciodvfy (dicom3tools) finds no error in an output that it did not already find in its input.

The whole corpus is de-identified (burned-in text allowed, so that ultrasound and secondary capture
are covered too) under the Basic Profile and under a mix of cleaning options; each output's error
messages are compared with its input's, values and numbers normalised away, attribute and module
names kept.
"""

from __future__ import annotations

import functools
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imgsynth.deid import anonymize_tree

from ..conftest import require_tool

_VALUE = re.compile(r"(?<!Element=)(?<!Module=)<[^>]*>")


@functools.cache  # inputs are checked once for both parametrisations
def _errors(dciodvfy: str, path: str) -> frozenset[str]:
    proc = subprocess.run([dciodvfy, path], capture_output=True, text=True, errors="replace", timeout=120)
    out = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("Error"):
            line = _VALUE.sub("<>", line)
            line = re.sub(r'"[^"]*"', '""', line)
            out.add(re.sub(r"\d[\d.]*", "N", line))
    return frozenset(out)


@pytest.mark.parametrize("options", [[], ["retain_long_modified_dates", "retain_patient_characteristics",
                                          "clean_descriptors", "clean_structured_content", "clean_graphics",
                                          "retain_safe_private", "retain_device_identity"]],
                         ids=["basic", "cleaning-options"])
def test_no_new_dciodvfy_error(options: list[str], tmp_path: Path, corpus_roots: list[Path], keyring) -> None:  # noqa: ANN001
    dciodvfy = require_tool("dciodvfy")
    summary = anonymize_tree(corpus_roots, tmp_path / "out", keyring=keyring, options=options,
                             overrides=["pixels.burned_in=allow"])
    done = [r for r in summary.results if r["status"] == "done" and r["written"]]
    assert len(done) > 180
    pairs = [(r["path"], str(tmp_path / "out" / r["output"])) for r in done]
    with ThreadPoolExecutor(4) as pool:
        before = list(pool.map(lambda p: _errors(dciodvfy, p[0]), pairs))
        after = list(pool.map(lambda p: _errors(dciodvfy, p[1]), pairs))
    new = {Path(src).name: sorted(a - b) for (src, _), b, a in zip(pairs, before, after, strict=True) if a - b}
    assert not new, new
