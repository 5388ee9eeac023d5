"""The residual-PHI scan finds what it must (and says where), needs no key, and finds nothing
where nothing is."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imgsynth.deid import anonymize_tree, verify_tree
from imgsynth.errors import UsageError

from .conftest import make_ct, read, write


def _one(tmp_path: Path, keyring, ds: Dataset | None = None, **kw) -> tuple[Path, Path]:  # noqa: ANN001
    src = write(ds or make_ct(), tmp_path / "in" / "a.dcm")
    summary = anonymize_tree(src.parent, tmp_path / "out", keyring=keyring, **kw)
    return src.parent, tmp_path / "out" / summary.results[0]["output"]


def _tamper(path: Path, change) -> None:  # noqa: ANN001
    ds = read(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def test_clean_output_has_no_hit(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp, _ = _one(tmp_path, keyring)
    result = verify_tree(tmp_path / "out", inp, report=tmp_path / "verify.json")
    assert result.ok and result.outputs_scanned == 1 and result.inputs_scanned == 1
    assert json.loads((tmp_path / "verify.json").read_text())["hits"] == []


def test_finds_a_name_in_a_nested_private_attribute(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp, out = _one(tmp_path, keyring)

    def plant(ds: Dataset) -> None:
        item = Dataset()
        item.private_block(0x0029, "ACME", create=True).add_new(0x01, "LO", "seen by smitherson")
        ds.AnatomicRegionSequence = Sequence([item])

    _tamper(out, plant)
    hits = verify_tree(tmp_path / "out", inp).hits
    where = {h.where for h in hits}
    assert "(0008,2218)[0]/(0029,1001)" in where
    assert any(w.startswith("raw bytes") for w in where)
    assert all(h.kind == "name" and h.source == "PatientName" for h in hits)
    assert "SMITHERSON" not in " ".join(h.line() for h in hits).upper()  # the report never repeats the value


def test_finds_uids_dates_and_ids(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = make_ct()
    inp, out = _one(tmp_path, keyring, src)

    def plant(ds: Dataset) -> None:
        ds.ReferencedSOPInstanceUID = src.SOPInstanceUID  # an original instance UID
        ds.ContentDate = src.StudyDate  # an original date (dates were not retained)
        ds.ImageComments = f"acc {src.AccessionNumber}"

    _tamper(out, plant)
    kinds = {(h.where, h.kind) for h in verify_tree(tmp_path / "out", inp).hits}
    assert {("(0008,1155)", "uid"), ("(0008,0023)", "date"), ("(0020,4000)", "id")} <= kinds


def test_finds_identifiers_in_the_preamble_and_in_names(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp, out = _one(tmp_path, keyring)
    data = bytearray(out.read_bytes())
    data[:20] = b"PID7731942".ljust(20, b"\x00")
    out.write_bytes(bytes(data))
    (out.parent / "SMITHERSON.dcm").write_bytes(out.read_bytes())
    hits = verify_tree(tmp_path / "out", inp).hits
    assert any(h.where == "raw bytes @0" and h.kind == "id" for h in hits)
    assert any(h.where == "file or folder name" and h.file.endswith("SMITHERSON.dcm") for h in hits)


def test_retained_values_are_not_hits(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp, out = _one(tmp_path, keyring, options=["retain_institution_identity", "retain_long_full_dates", "retain_uids"])
    ds = read(out)
    assert ds.InstitutionName == "SAINT HILDEGARD CLINIC" and ds.StudyDate == "20200315"
    assert verify_tree(tmp_path / "out", inp).ok


def test_corpus_input_against_itself_is_full_of_hits(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    """The scan is not blind: copying an input into OUT_DIR is caught."""
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "CT_small.dcm").write_bytes(src.read_bytes())  # under its input name, too
    kinds = {h.kind for h in verify_tree(tmp_path / "out", src).hits}
    assert {"uid", "date", "institution", "path"} <= kinds


def test_report_path_that_is_a_folder_is_refused_before_the_scan(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp, _ = _one(tmp_path, keyring)
    for report in (tmp_path, tmp_path / "missing" / "verify.json"):
        with pytest.raises(UsageError, match="give a file name in an existing folder"):
            verify_tree(tmp_path / "out", inp, report=report)


def test_finds_a_non_ascii_name_in_raw_bytes_of_the_files_character_set(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    ds = make_ct(SpecificCharacterSet="ISO_IR 100", PatientName="MÜLLERSOHN^JÖRGEN")
    inp, out = _one(tmp_path, keyring, ds)
    _tamper(out, lambda d: d.add_new(0x00281201, "OW", "müllersohn ".encode("latin-1")))
    report = verify_tree(tmp_path / "out", inp)
    assert any(h.where.startswith("raw bytes") and h.source == "PatientName" for h in report.hits)
