"""The Azure ML parallel-job entry runs the same mini-batch entry as a local run: same files, same
audit ids, same bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom

from imgsynth.deid import anonymize_tree, parallel
from imgsynth.deid.keys import KEY_ENV

from .conftest import KEY


def test_parallel_entry_matches_a_local_run(tmp_path: Path, monkeypatch, keyring) -> None:  # noqa: ANN001
    inp = tmp_path / "scans"
    (inp / "sub").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "README.txt"):
        shutil.copy(Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / name, inp / "sub" / name)
    local = anonymize_tree(inp, tmp_path / "local", keyring=keyring, config="deid_research")
    monkeypatch.setenv("IMGSYNTH_DEID_OUT", str(tmp_path / "cloud"))
    monkeypatch.setenv("IMGSYNTH_DEID_INPUT_ROOT", str(inp))
    monkeypatch.setenv("IMGSYNTH_DEID_CONFIG", "deid_research")
    monkeypatch.setenv(KEY_ENV, KEY)
    parallel.init()
    lines = [json.loads(x) for x in parallel.run(sorted((inp / "sub").iterdir()))]
    by_id = {r["input"]: r for r in local.results}
    for line in lines:
        assert set(line) <= {"input", "status", "output", "written", "size", "transfer_syntax", "actions", "notes", "reason"}
        assert line["status"] == by_id[line["input"]]["status"]
        if line["status"] == "done":
            assert (tmp_path / "cloud" / line["output"]).read_bytes() == (tmp_path / "local" / line["output"]).read_bytes()
    assert sorted(r["status"] for r in lines) == ["done", "done", "quarantined"]
