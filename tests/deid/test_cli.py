"""``imgsynth deid run`` / ``verify``: exit codes and one-line messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from imgsynth.cli import main
from imgsynth.deid.keys import KEY_ENV

from .conftest import KEY


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), inp / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), inp / "mr.dcm")
    return inp


def test_run_without_key_is_refused(tree: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["deid", "run", str(tree), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--new-key" in err and not (tmp_path / "out").exists()


def test_run_new_key_then_verify(tree: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(KEY_ENV, raising=False)
    out, key = tmp_path / "out", tmp_path / "secret" / "deid.key"
    assert main(["deid", "run", str(tree), str(out), "--new-key", str(key), "--option", "retain_patient_characteristics"]) == 0
    assert "2 of 2 inputs de-identified" in capsys.readouterr().err
    assert key.is_file() and key.read_text().strip() not in "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())
    assert main(["deid", "verify", str(out), "--against", str(tree)]) == 0
    assert "no identifying value found" in capsys.readouterr().err


def test_quarantine_exits_3_and_verify_exits_1_on_a_leak(tree: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(KEY_ENV, KEY)
    (tree / "junk.dcm").write_bytes(b"not dicom at all")
    out = tmp_path / "out"
    assert main(["deid", "run", str(tree), str(out), "--workers", "1"]) == 3
    assert "quarantined" in capsys.readouterr().err
    leak = next(out.rglob("*.dcm"))
    leak.write_bytes(leak.read_bytes() + b"CompressedSamples")  # CT_small's patient name, appended
    assert main(["deid", "verify", str(out), "--against", str(tree)]) == 1
    err = capsys.readouterr().err
    assert "raw bytes" in err and leak.name in err


def test_bad_option_and_layout_are_usage_errors(tree: Path, tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv(KEY_ENV, KEY)
    assert main(["deid", "run", str(tree), str(tmp_path / "o1"), "--option", "retain_everything"]) == 2
    assert "retain_safe_private" in capsys.readouterr().err
    assert main(["deid", "run", str(tree), str(tmp_path / "o2"), "--layout", "flat"]) == 2
    assert main(["deid", "run", str(tree)]) == 2
    assert main(["deid", "verify", str(tmp_path)]) == 2
