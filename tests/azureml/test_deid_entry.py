"""azureml/deid_entry.py as the parallel job runs it (program arguments, init, run on file lists) gives
what a local ``imgsynth deid run`` of the same folder gives: same audit ids and statuses, same bytes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pydicom
import pytest

from imgsynth.deid import anonymize_tree

AZ = Path(__file__).resolve().parents[2] / "azureml"
KEY = "0123456789abcdef0123456789abcdef"


def test_deid_entry_matches_a_local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = tmp_path / "dicom"
    (inp / "a").mkdir(parents=True)
    data = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    for name in ("CT_small.dcm", "MR_small.dcm", "README.txt"):
        shutil.copy(data / name, inp / "a" / name)
    key = tmp_path / "deid.key"
    key.write_text(KEY + "\n")
    local = anonymize_tree(inp, tmp_path / "local", key_file=key)

    monkeypatch.delenv("IMGSYNTH_DEID_KEY", raising=False)
    for name in ("IMGSYNTH_DEID_OUT", "IMGSYNTH_DEID_INPUT_ROOT", "IMGSYNTH_DEID_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["driver", "--input-root", str(inp), "--output", str(tmp_path / "cloud"),
                                      "--key-file", str(key), "--config", "deid_basic", "--logging_level", "INFO"])
    spec = importlib.util.spec_from_file_location("deid_entry", AZ / "deid_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    entry.init()
    files = sorted(str(p) for p in (inp / "a").iterdir())
    lines = [json.loads(x) for x in entry.run(files[:2]) + entry.run(files[2:])]

    by_id = {r["input"]: r for r in local.results}
    assert sorted(r["input"] for r in lines) == sorted(by_id)  # same keyed ids as the local run
    for line in lines:
        assert str(inp) not in json.dumps(line)  # no input path in what the job gathers
        assert line["status"] == by_id[line["input"]]["status"]
        if line["status"] == "done":
            cloud = tmp_path / "cloud" / line["output"]
            assert cloud.read_bytes() == (tmp_path / "local" / line["output"]).read_bytes()
            assert pydicom.dcmread(cloud).PatientIdentityRemoved == "YES"
    assert sorted(r["status"] for r in lines) == ["done", "done", "quarantined"]
