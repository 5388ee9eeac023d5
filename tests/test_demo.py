"""``imgsynth demo --quick`` end to end, as a user runs it (a subprocess), then resumed and interrupted.

Every stage's output folder is checked through imgsynth.contracts, the figures printed in the
summary are compared with the folders they come from, and a second run must skip every finished
stage (files untouched) while an interrupted stage (Ctrl-C) is resumed by the next run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from imgsynth.contracts import Dataset, RunFolder, read_deid_report, read_key, read_report
from imgsynth.demo.plan import QUICK, Layout, dicom_sources
from imgsynth.demo.runner import DemoState, run_demo
from imgsynth.demo.steps import _fmt, condition_rows, conditions_csv_text
from imgsynth.errors import UsageError
from imgsynth.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 900


def _demo(out: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "imgsynth", "demo", str(out), "--quick", "--threads", "1", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "IMGSYNTH_CACHE": str(home / "cache"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> tuple[Layout, str]:
    out = tmp_path_factory.mktemp("demo") / "imgsynth-demo"
    proc = _demo(out, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Layout(out), proc.stdout


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Each stage's output folder, through the contracts
# ---------------------------------------------------------------------------------------------
def test_deid_folder_quarantine_and_verify(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    report = read_deid_report(lay.deid)
    assert report.status == "complete"
    c = report.counts
    quarantine = read_jsonl(lay.deid / "quarantine.jsonl")
    assert c["inputs"] == c["done"] + c["quarantined"] and c["done"] > 50
    assert len(quarantine) == c["quarantined"] > 0  # the malformed test files end here, each with a reason
    assert all(q["reason"] for q in quarantine)
    assert any("not a DICOM file" in q["reason"] or "truncated" in q["reason"] for q in quarantine)
    dicoms = [p for p in lay.deid.rglob("*") if p.is_file() and p.name not in ("audit.jsonl", "quarantine.jsonl", "report.json")]
    assert len(dicoms) >= c["done"] - c.get("identical_not_rewritten", 0) - 1
    ds = pydicom.dcmread(dicoms[0])
    assert ds.PatientIdentityRemoved == "YES"
    verify = json.loads(lay.verify.read_text())
    assert verify["hits"] == [] and verify["outputs_scanned"] >= len(dicoms) - 1 and sum(verify["values"].values()) > 100


def test_key_only_in_private(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    assert lay.key.is_file() and lay.key.parent == lay.root / "private"
    assert lay.key.stat().st_mode & 0o077 == 0  # readable by its owner only
    secret = lay.key.read_text().strip().encode()
    assert len(secret) >= 32
    for path in lay.root.rglob("*"):
        if path.is_file() and "private" not in path.relative_to(lay.root).parts:
            assert secret not in path.read_bytes(), f"the de-identification key leaked into {path}"


def test_dataset_conditions_and_block_splits(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    ds = Dataset.read(lay.dataset)
    assert ds.info.spatial_dims == 2 and ds.info.shape == [1, 32, 32]
    assert ds.info.condition("plane").categories == ["axial", "coronal", "sagittal"]
    assert ds.info.condition("position").type == "continuous"
    assert ds.info.condition("tissue").type == "mask" and ds.info.condition("tissue").channels == 2
    assert {r["plane"] for r in ds.rows} == {"axial", "coronal", "sagittal"}
    mask = ds.load_mask(ds.rows[0], "tissue")
    assert mask.shape == (2, 32, 32) and mask.min() >= 0.0 and mask.max() <= 1.0 + 1e-6
    # Blocks of slice positions: no test slice is a neighbour of a training slice.
    for plane in ("axial", "coronal", "sagittal"):
        rows = [r for r in ds.rows if r["plane"] == plane]
        pos = sorted(float(r["position"]) for r in rows)
        step = min(b - a for a, b in zip(pos, pos[1:], strict=False))
        train = [float(r["position"]) for r in rows if r["split"] == "train"]
        for r in rows:
            if r["split"] == "test" and train:
                assert min(abs(float(r["position"]) - t) for t in train) > 1.5 * step


def test_ldm_run_folder(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    run = RunFolder.read(lay.run("ldm"))
    info = run.model_info()
    assert info.family == "ldm" and set(info.stages) == {"autoencoder", "diffusion"}
    assert all(s.status == "complete" for s in info.stages.values())
    assert run.weights_path("diffusion", ema=True).is_file() and run.weights_path("autoencoder", ema=True).is_file()
    assert not lay.run("stylegan2").exists()  # the quick demo trains the LDM only


def test_sample_set_formats_and_conditions(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    real = Dataset.read(lay.dataset)
    ds = Dataset.read(lay.samples("ldm"))
    val = condition_rows(real)
    assert len(val) == len(real.split("val")) and len(ds.rows) == QUICK.samples_per_condition * len(val)
    assert ds.info.generator is not None and {r["split"] for r in ds.rows} == {"synthetic"}
    # Sample i takes the conditions of validation slice i // samples_per_condition.
    for i, row in enumerate(ds.rows):
        source = val[i // QUICK.samples_per_condition]
        assert row["plane"] == source["plane"] and float(row["position"]) == pytest.approx(float(source["position"]))
        np.testing.assert_array_equal(np.load(ds.root / row["tissue"]), real.load_mask(source, "tissue"))
    row = ds.rows[0]
    image = ds.load(row)
    assert image.shape == (1, 32, 32) and np.isfinite(image).all()
    assert Image.open(ds.root / row["png"]).size == (32, 32)
    assert nib.load(ds.root / row["nifti"]).shape[:2] == (32, 32)
    dcm = pydicom.dcmread(ds.root / row["dicom"])
    assert (dcm.Rows, dcm.Columns) == (32, 32)
    # The requests CSV names mask files relative to itself.
    with open(lay.conditions_csv("ldm"), newline="") as fh:
        req = list(csv.DictReader(fh))
    assert len(req) == len(val) and all((lay.requests / r["tissue"]).resolve().is_file() for r in req)


def test_evaluation_report(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    report = read_report(lay.evaluation("ldm"))
    m = report.metrics
    for key in ("FD_domain", "KD_domain", "diversity.ms_ssim", "memorization.fraction"):
        assert m[key].value is not None and m[key].floor is not None, key  # each with its real-vs-real floor
    for key in ("reconstruction.ssim", "reconstruction.ms_ssim"):
        assert -1.0 <= m[key].value <= 1.0
    assert 0.0 <= m["memorization.fraction"].value <= 1.0
    assert m["downstream.tstr"].recipe["condition"] == "plane"
    assert 0.0 <= m["downstream.tstr"].value <= 1.0 and 0.0 <= m["downstream.trtr"].value <= 1.0
    assert m["downstream.tstr"].recipe["train_sizes"]["tstr"] == len(Dataset.read(lay.samples("ldm")).rows)
    assert (lay.evaluation("ldm") / "report.html").is_file()


def test_review_package(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    key = read_key(lay.review / "key.csv")
    readers = sorted({r.reader for r in key})
    assert readers == ["R01", "R02"]
    for reader in readers:
        package = lay.review / "readers" / reader
        assert (package / "index.html").is_file() and not (package / "key.csv").exists()
        truth = [r.truth for r in key if r.reader == reader]
        assert truth.count("real") == 6 and truth.count("synthetic") == 6
    assert not any(p.name == "key.csv" for p in (lay.review / "readers").rglob("*"))


# ---------------------------------------------------------------------------------------------
# The summary, README.txt and demo.json
# ---------------------------------------------------------------------------------------------
def test_summary_figures_match_the_folders(demo: tuple[Layout, str]) -> None:
    lay, stdout = demo
    for title in ("de-identify", "preprocess MNI152", "train LDM", "generate LDM", "evaluate LDM", "review package"):
        assert title in stdout
    deid = read_deid_report(lay.deid)
    assert f"{deid.counts['done']} of {deid.counts['inputs']} files de-identified" in stdout
    assert "verify: 0 hits" in stdout
    m = read_report(lay.evaluation("ldm")).metrics
    assert f"FD_domain {_fmt(m['FD_domain'].value)} (real-vs-real {_fmt(m['FD_domain'].floor)})" in stdout
    assert f"KD_domain {_fmt(m['KD_domain'].value)}" in stdout
    assert "2 readers x 12 cases (6 real, 6 synthetic)" in stdout
    state = json.loads(lay.state.read_text())
    assert state["mode"] == "quick" and all(s["status"] == "complete" for s in state["stages"].values())
    assert state["stages"]["deid"]["figures"]["verify_hits"] == 0
    assert state["stages"]["evaluate-ldm"]["figures"]["FD_domain"] == pytest.approx(m["FD_domain"].value)
    # The commands that re-run each stage alone.
    for command in ("imgsynth deid run", "imgsynth deid verify", "imgsynth preprocess nilearn:mni152",
                    "imgsynth train", "imgsynth generate", "imgsynth evaluate --real", "imgsynth review export"):
        assert command in stdout


def test_readme_explains_every_folder(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    text = lay.readme.read_text()
    for name in [p.name for p in lay.root.iterdir() if p.name != "README.txt"]:
        assert name in text, f"README.txt does not explain {name}"
    assert "Never share this folder" in text
    assert "not added to the dataset as a further category" in text
    assert "imgsynth train" in text and "Fonov" in text


# ---------------------------------------------------------------------------------------------
# Resume, Ctrl-C
# ---------------------------------------------------------------------------------------------
def test_second_run_skips_and_interrupted_stage_resumes(demo: tuple[Layout, str], env: dict[str, str]) -> None:
    lay, _ = demo
    before = _files(lay.root)
    # A second run finds every stage complete and rewrites none of their files.
    again = _demo(lay.root, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "done by an earlier run" in again.stdout
    # The summary says how long this run took (contract checks only; no timing bound in a test).
    assert re.search(r"this run: \d+ s", again.stdout) is not None
    after = _files(lay.root)
    changed = {k for k in before if after.get(k) != before[k]} - {"demo.json", "README.txt"}
    assert not changed, f"a skipped stage rewrote {sorted(changed)[:5]}"

    # An evaluation folder that no longer passes its contract is run again; Ctrl-C stops it cleanly.
    (lay.evaluation("ldm") / "report.json").unlink()
    cmd = [sys.executable, "-m", "imgsynth", "demo", str(lay.root), "--quick", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if "evaluate LDM" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    state = json.loads(lay.state.read_text())
    assert state["stages"]["evaluate-ldm"]["status"] == "running"
    assert not [p for p in lay.root.rglob("*.tmp")], "an interrupted stage left a temporary file"
    assert not (lay.evaluation("ldm") / "report.json").exists()

    # The next run resumes: only the evaluation runs again.
    third = _demo(lay.root, env=env)
    assert third.returncode == 0, third.stderr[-2000:]
    read_report(lay.evaluation("ldm"))
    final = _files(lay.root)
    rerun = {k.split("/")[0] for k in final if final[k] != after.get(k)} - {"demo.json", "README.txt"}
    assert rerun <= {"5-eval-ldm", "cache"}, rerun


# ---------------------------------------------------------------------------------------------
# Refusals and the pieces
# ---------------------------------------------------------------------------------------------
def test_refuses_foreign_or_other_mode_folders(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a demo folder"):
        run_demo(foreign, quick=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "demo.json").write_text(json.dumps({"format": "imgsynth-demo", "version": 1, "mode": "full", "stages": {}}))
    with pytest.raises(UsageError, match="holds a full demo: run it without --quick"):
        run_demo(full, quick=True)
    assert DemoState.open(Layout(tmp_path / "new"), QUICK).data["mode"] == "quick"


def test_builtin_dicom_sources_are_the_two_packages() -> None:
    test_files, data_store = dicom_sources()
    assert test_files.name == "test_files" and test_files.parent.name == "data"
    assert data_store.name == "data" and data_store.parent.name == "data_store"
    assert any(data_store.iterdir()) and any(test_files.iterdir())


def test_conditions_csv_text(demo: tuple[Layout, str]) -> None:
    lay, _ = demo
    real = Dataset.read(lay.dataset)
    csv_path = lay.root / "elsewhere" / "x.csv"
    text = conditions_csv_text(real, csv_path, ["plane", "position"], 3)
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["plane"] for r in rows] == [r["plane"] for r in condition_rows(real)]
    assert {r["count"] for r in rows} == {"3"} and "tissue" not in rows[0]
