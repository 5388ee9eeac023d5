"""The whole real corpus end to end: pydicom's test files and pydicom-data, plus a tree named after
a patient and a few broken files. Every input is de-identified and valid, or quarantined with a
reason; counts add up; inputs are untouched; no input name or identifying value reaches OUT_DIR."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from imgsynth.deid import anonymize_tree, verify_tree
from imgsynth.errors import UsageError

from .conftest import read

PLANTED = ("SMITHERSON", "JOHNATHAN", "7731942")


def _tree_hash(roots: list[Path]) -> dict[str, str]:
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, corpus_roots: list[Path], keyring) -> dict:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("e2e")
    planted = tmp / "SMITHERSON_JOHNATHAN_7731942"
    study = planted / "CT 2020-03-15 SMITHERSON"
    study.mkdir(parents=True)
    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    shutil.copy(ct, study / "SMITHERSON^JOHNATHAN_1.dcm")
    shutil.copy(ct, study / "SMITHERSON^JOHNATHAN_1_copy.dcm")  # the same instance stored twice
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), study / "MR_7731942.dcm")
    (study / "empty.dcm").write_bytes(b"")
    (study / "cut.dcm").write_bytes(ct.read_bytes()[:1500])  # truncated inside the dataset
    (study / "notes.txt").write_text("Patient SMITHERSON called on 2020-03-15\n")
    (study / "noise.dcm").write_bytes(os.urandom(4096))
    roots = [*corpus_roots, planted]
    before = _tree_hash(roots)
    out = tmp / "out"
    summary = anonymize_tree(roots, out, keyring=keyring, mapping=tmp / "private" / "map.csv",
                             quarantine_dir=tmp / "private" / "quarantine")
    return {"tmp": tmp, "roots": roots, "before": before, "out": out, "summary": summary, "study": study}


def test_counts_add_up_and_every_input_is_accounted_for(run: dict) -> None:
    s, out = run["summary"], run["out"]
    inputs = sum(len(list(r.rglob("*"))) - len([p for p in r.rglob("*") if p.is_dir()]) for r in run["roots"])
    c = s.counts
    assert c["inputs"] == inputs == len(s.results)
    assert c["done"] + c["quarantined"] == inputs
    assert c["done"] >= 120 and c["quarantined"] >= 30
    audit = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(audit) == inputs and len(quarantine) == c["quarantined"]
    assert all(len(q["reason"]) < 200 and "\n" not in q["reason"] for q in quarantine)
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["counts"] == c
    assert sum(report["quarantine_reasons"].values()) == c["quarantined"]
    assert s.exit_code == 3


def test_malformed_inputs_are_quarantined_with_their_reason(run: dict) -> None:
    reasons = {Path(path).name: reason for path, reason in run["summary"].quarantined}
    assert reasons["empty.dcm"] == "empty file"
    assert reasons["cut.dcm"].startswith("truncated")
    assert reasons["notes.txt"].startswith("not a DICOM file")
    assert reasons["noise.dcm"].startswith("not a DICOM file")
    assert reasons["emri_small_jpeg_2k_lossless_too_short.dcm"].startswith("truncated")
    assert reasons["rtplan_truncated.dcm"].startswith("truncated")
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert any(r.startswith("burned-in text risk") for r in reasons.values())
    for reason in reasons.values():  # reasons never quote a value or a path
        assert "site-packages" not in reason and "e2e" not in reason and "SMITHERSON" not in reason.upper()


def test_outputs_are_valid_and_pixels_untouched(run: dict) -> None:
    done = [r for r in run["summary"].results if r["status"] == "done"]
    for r in done:
        out = pydicom.dcmread(run["out"] / r["output"])  # strict read: a conformant file
        assert out.PatientIdentityRemoved == "YES"
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        inp = pydicom.dcmread(r["path"], force=True)
        if "PixelData" in inp:
            assert out.PixelData == inp.PixelData, r["path"]
        if "TransferSyntaxUID" in getattr(inp, "file_meta", {}):
            assert out.file_meta.TransferSyntaxUID == inp.file_meta.TransferSyntaxUID, r["path"]


def test_inputs_unchanged(run: dict) -> None:
    assert _tree_hash(run["roots"]) == run["before"]


def test_no_input_name_or_planted_value_anywhere_in_out_dir(run: dict) -> None:
    out = run["out"]
    names = {p.name for r in run["roots"] for p in r.rglob("*")}
    stems = {n.rsplit(".", 1)[0] for n in names if len(n) >= 6}
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        assert not any(word in rel.upper() for word in PLANTED), rel
        assert not any(part in stems for part in Path(rel).parts), rel
        if path.is_file():
            data = path.read_bytes().upper()
            assert not any(word.encode() in data for word in PLANTED), rel
    assert not list(out.rglob("*.part")), "temporary files left behind"


def test_residual_phi_scan_finds_nothing(run: dict) -> None:
    result = verify_tree(run["out"], run["roots"])
    assert result.outputs_scanned == run["summary"].counts["written"]
    assert result.values["uids"] > 100 and result.values["names_ids_text"] > 50
    assert result.hits == [], [h.line() for h in result.hits[:10]]


def test_duplicates_written_once_and_conflicts_suffixed(run: dict) -> None:
    by_name = {Path(r["path"]).name: r for r in run["summary"].results if r["path"].startswith(str(run["study"]))}
    a, b = by_name["SMITHERSON^JOHNATHAN_1.dcm"], by_name["SMITHERSON^JOHNATHAN_1_copy.dcm"]
    # CT_small.dcm of the corpus, and its two copies in the planted tree: one file, written once.
    same = [r for r in run["summary"].results if r.get("output") == a["output"]]
    assert len(same) == 3 and sum(r["written"] for r in same) == 1 and b["output"] == a["output"]
    assert all("identical" in " ".join(r["notes"]) for r in same if not r["written"])
    renamed = [r for r in run["summary"].results if any("different content" in n for n in r.get("notes", ()))]
    assert renamed and all(Path(r["output"]).stem.rsplit("_", 1)[-1].isdigit() for r in renamed)


def test_mapping_and_quarantine_copies_stay_outside(run: dict) -> None:
    mapping = run["tmp"] / "private" / "map.csv"
    assert mapping.stat().st_mode & 0o077 == 0
    rows = list(csv.reader(mapping.open()))
    assert rows[0] == ["kind", "original", "pseudonym"]
    files = [r for r in rows if r[0] == "file"]
    assert len(files) == run["summary"].counts["inputs"]
    ct = next(r for r in files if r[1].endswith("SMITHERSON^JOHNATHAN_1.dcm"))
    assert (run["out"] / ct[2]).is_file()
    assert any(r[0] == "patient_id" for r in rows) and any(r[0] == "uid" for r in rows)
    qdir = run["tmp"] / "private" / "quarantine"
    assert (qdir / "SMITHERSON_JOHNATHAN_7731942" / "CT 2020-03-15 SMITHERSON" / "cut.dcm").is_file()
    assert len((qdir / "quarantine.csv").read_text().splitlines()) == run["summary"].counts["quarantined"] + 1


def test_rerun_resumes_and_rewrites_nothing(run: dict, keyring) -> None:  # noqa: ANN001
    out = run["out"]
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")}
    again = anonymize_tree(run["roots"], out, keyring=keyring)
    assert again.counts["resumed"] == run["summary"].counts["done"]
    assert again.counts["written"] == 0 and again.counts["quarantined"] == run["summary"].counts["quarantined"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.dcm")} == mtimes


def test_resume_after_a_crash(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm", "JPEG2000.dcm", "rtstruct.dcm"]
    inp = tmp_path / "in"
    inp.mkdir()
    for n in names:
        shutil.copy(src / n, inp / n)
    first = anonymize_tree(inp, tmp_path / "out", keyring=keyring)
    # A crash after three inputs: their audit lines are there, the final records are not.
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()
    (tmp_path / "out" / "audit.jsonl").write_text("\n".join(lines[:3]) + '\n{"input": "trunc')
    (tmp_path / "out" / "quarantine.jsonl").unlink()
    stale = next((tmp_path / "out").rglob("*.dcm")).with_name(".x.dcm.123.part")
    stale.write_bytes(b"half a file")  # killed while writing
    second = anonymize_tree(inp, tmp_path / "out", keyring=keyring)
    assert not stale.exists()
    assert second.counts["resumed"] == sum(json.loads(x)["status"] == "done" for x in lines[:3])
    assert second.counts["done"] == first.counts["done"] and second.counts["written"] == 0
    assert len((tmp_path / "out" / "audit.jsonl").read_text().splitlines()) == len(names)


def test_refuses_unsafe_paths(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), inp / "a.dcm")
    with pytest.raises(UsageError, match="inside input"):
        anonymize_tree(inp, inp / "out", keyring=keyring)
    with pytest.raises(UsageError, match="--mapping .* outside OUT_DIR"):
        anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=tmp_path / "out" / "map.csv")
    with pytest.raises(UsageError, match="--quarantine-dir .* outside OUT_DIR"):
        anonymize_tree(inp, tmp_path / "out", keyring=keyring, quarantine_dir=tmp_path / "out" / "q")
    with pytest.raises(UsageError, match="outside input"):
        anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=inp / "map.csv")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        anonymize_tree(inp, tmp_path / "busy", keyring=keyring)
    from imgsynth.deid.keys import Keyring

    anonymize_tree(inp, tmp_path / "out2", keyring=keyring)
    with pytest.raises(UsageError, match="another key"):
        anonymize_tree(inp, tmp_path / "out2", keyring=Keyring("another-key-0123456789"))
    with pytest.raises(UsageError, match="another config"):
        anonymize_tree(inp, tmp_path / "out2", keyring=keyring, options=["retain_uids"])


def test_two_workers_give_the_same_files(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    inp = tmp_path / "in"
    inp.mkdir()
    for p in sorted(src.glob("*.dcm"))[:24]:
        shutil.copy(p, inp / p.name)
    one = anonymize_tree(inp, tmp_path / "w1", keyring=keyring)
    two = anonymize_tree(inp, tmp_path / "w2", keyring=keyring, workers=2)
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*.dcm")}  # noqa: E731
    w1, w2 = files(tmp_path / "w1"), files(tmp_path / "w2")
    # Same names and same contents; which of two different files with one SOP Instance UID gets the
    # plain name and which the suffix depends on which worker finishes first.
    assert set(w1) == set(w2) and sorted(w1.values()) == sorted(w2.values())
    assert sum(w1[k] == w2[k] for k in w1) >= len(w1) - 2 * max(one.counts["renamed"], two.counts["renamed"])
    order_free = ("inputs", "done", "quarantined", "written", "identical_not_rewritten")
    assert {k: one.counts[k] for k in order_free} == {k: two.counts[k] for k in order_free}


def test_mirror_layout_keeps_relative_paths(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp = tmp_path / "scans"
    (inp / "a" / "b").mkdir(parents=True)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), inp / "a" / "b" / "one.dcm")
    summary = anonymize_tree(inp, tmp_path / "out", keyring=keyring, layout="mirror")
    assert summary.results[0]["output"] == "scans/a/b/one.dcm"
    assert read(tmp_path / "out" / "scans" / "a" / "b" / "one.dcm").PatientIdentityRemoved == "YES"


def test_same_process_runs_after_the_output_folder_was_deleted(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    """Output folders are created as needed by every run, even when an earlier run in the same
    process made (and someone then deleted) the very same study/series folders."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    out = tmp_path / "out"
    first = anonymize_tree(src, out, keyring=keyring)
    shutil.rmtree(out)
    second = anonymize_tree(src, out, keyring=keyring)
    assert first.counts["done"] == second.counts["done"] == 2
    assert second.counts["quarantined"] == 0 and second.counts["written"] == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*.dcm")) == sorted(
        Path(r["output"]) for r in first.results
    )


def test_mapping_of_a_resumed_run_lists_every_input(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    inp = tmp_path / "in"
    inp.mkdir()
    for n in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"):
        shutil.copy(src / n, inp / n)
    whole = tmp_path / "whole.csv"
    first = anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=whole)
    assert first.counts["done"] >= 2
    # A later run over the finished folder, into a new mapping: the earlier outputs are listed too.
    fresh = tmp_path / "fresh.csv"
    again = anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=fresh)
    assert again.counts["resumed"] == first.counts["done"]
    assert sorted(csv.reader(fresh.open())) == sorted(csv.reader(whole.open()))
    # An interrupted run keeps the rows of its finished batches (written as it goes), and its
    # rerun completes the mapping without repeating a row.
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()
    (tmp_path / "out" / "audit.jsonl").write_text(lines[0] + "\n")
    fresh.unlink()
    anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=fresh)
    rows = list(csv.reader(fresh.open()))
    assert sorted(rows) == sorted(csv.reader(whole.open())) and len(rows) == len(set(map(tuple, rows)))
    assert fresh.stat().st_mode & 0o077 == 0


def test_odd_file_names_and_non_files_are_quarantined_with_a_reason(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    inp = tmp_path / "in"
    inp.mkdir()
    undecodable = os.fsdecode(b"SMITH_\xff\xfe.dcm")  # not UTF-8: kept as the file system has it
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), inp / undecodable)
    (inp / os.fsdecode(b"g_\xff")).write_bytes(b"garbage")
    (inp / "broken.dcm").symlink_to(tmp_path / "nowhere.dcm")
    os.mkfifo(inp / "pipe.dcm")  # reading it would wait forever
    mapping, qdir = tmp_path / "private" / "map.csv", tmp_path / "private" / "q"
    s = anonymize_tree(inp, tmp_path / "out", keyring=keyring, mapping=mapping, quarantine_dir=qdir)
    assert s.counts == {**s.counts, "inputs": 4, "done": 1, "quarantined": 3}
    reasons = dict(s.quarantined)
    assert reasons[str(inp / "broken.dcm")].startswith("broken symbolic link")
    assert reasons[str(inp / "pipe.dcm")].startswith("not a regular file")
    with open(mapping, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        originals = {r[1] for r in csv.reader(fh) if r[0] == "file"}
    assert str(inp / undecodable) in originals and len(originals) == 4
    assert (qdir / "quarantine.csv").is_file() and (qdir / "in" / os.fsdecode(b"g_\xff")).is_file()
    assert not (qdir / "in" / "pipe.dcm").exists() and not (qdir / "in" / "broken.dcm").exists()
