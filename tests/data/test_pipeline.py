"""``imgsynth preprocess`` end to end: bad inputs listed and skipped, privacy of outputs, NIfTI
transforms, covariates and splits, resume, the mini-batch entry."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from imgsynth.cli import main
from imgsynth.contracts import Dataset
from imgsynth.data.pipeline import preprocess
from imgsynth.errors import ConfigError, InputError, UsageError

from .synth import rotation, write_series


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, **header: object) -> Path:
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def errors_of(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]


def set_patient(files: list[Path], **fields: str) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in fields.items():
            setattr(ds, k, v)
        ds.save_as(f)


@pytest.fixture(scope="module")
def messy_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good CT series, two good NIfTI volumes and one of every kind of bad input."""
    root = tmp_path_factory.mktemp("messy")
    good = write_series(root / "patient1" / "ct", n=4, rot=rotation(0, 10))
    set_patient(good.files, PatientID="P-001")
    good2 = write_series(root / "patient2" / "ct", n=4, order="reversed")
    set_patient(good2.files, PatientID="P-002")
    for name in ("reportsi.dcm", "rtplan.dcm", "waveform_ecg.dcm"):
        shutil.copy(get_testdata_file(name), root / "patient1" / name)
    gap = write_series(root / "patient3" / "gap", n=6)
    gap.files[2].unlink()
    broken = write_series(root / "patient3" / "broken", source="MR_small.dcm", n=3)
    data = broken.files[1].read_bytes()
    broken.files[1].write_bytes(data[: len(data) - 3000])  # pixel data cut short
    uid = "1.2.826.0.1.3680043.8.498.1"
    write_series(root / "patient4" / "a", n=3, series_uid=uid)
    write_series(root / "patient4" / "b", n=3, series_uid=uid, offset=13)  # same positions, same UID
    (root / "notes.txt").write_text("not an image\n")
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, size=(12, 10, 8)).astype(np.float32)
    write_nifti(root / "nifti" / "good.nii.gz", vol, np.diag([1.5, 1.5, 2.0, 1.0]))
    nan = vol.copy()
    nan[3, 3, 3] = np.nan
    write_nifti(root / "nifti" / "nan.nii.gz", nan)
    write_nifti(root / "nifti" / "flat.nii.gz", np.full((6, 6, 6), 7, np.float32))
    write_nifti(root / "nifti" / "fourd.nii.gz", rng.normal(size=(6, 6, 6, 3)).astype(np.float32))
    uncoded = nib.Nifti1Image(vol, np.eye(4))
    uncoded.set_sform(None, code=0)
    uncoded.set_qform(None, code=0)
    nib.save(uncoded, str(root / "nifti" / "uncoded.nii.gz"))
    (root / "nifti" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return root


@pytest.fixture(scope="module")
def messy_run(messy_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, dict[str, str]]:
    before = tree_digest(messy_tree)
    out = tmp_path_factory.mktemp("messy_out") / "ds"
    code = main(["preprocess", str(messy_tree), str(out), "--set", "intensity.kind=ct_window", "--set", "nifti.modality=CT"])
    assert tree_digest(messy_tree) == before, "inputs were modified"
    return out, code, before


def test_bad_inputs_are_listed_with_reasons_and_the_rest_goes_on(messy_run: tuple[Path, int, dict[str, str]]) -> None:
    out, code, _ = messy_run
    assert code == 3
    ds = Dataset.read(out)
    assert len(ds.rows) == 3  # two CT series + the good NIfTI
    assert len({r["subject"] for r in ds.rows}) == 3
    reasons = {e["input"]: e["reason"] for e in errors_of(out)}
    joined = "\n".join(f"{k}: {v}" for k, v in reasons.items())
    expected = [
        "non-image object (structured report",
        "non-image object (RT plan",
        "non-image object (ECG waveform",
        "missing slice(s): about 1 slice(s)",
        "undecodable pixel data in",
        "mixed series: 3 slice(s) repeat a position",
        "non-finite voxel value(s) (NaN or inf)",
        "empty volume: every voxel is 7",
        "4D image with 3 volumes: choose one with nifti.volume",
        "no coded orientation (sform_code and qform_code are 0)",
        "unreadable NIfTI image",
    ]
    for text in expected:
        assert text in joined, f"{text!r} not in errors.jsonl:\n{joined}"
    assert all("\n" not in v for v in reasons.values())
    assert "notes.txt" not in joined  # not DICOM, not NIfTI: ignored, not an error


def test_output_is_clean_and_pseudonymous(messy_run: tuple[Path, int, dict[str, str]], messy_tree: Path) -> None:
    out, _, _ = messy_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not (out / ".work").exists()
    names = " ".join(str(p.relative_to(out)) for p in files)
    for secret in ("P-001", "P-002", "patient1", "good", "nifti"):
        assert secret not in names
    manifest = (out / "manifest.csv").read_text() + (out / "dataset.json").read_text()
    for secret in ("P-001", "P-002", "patient1", "good.nii", str(messy_tree)):
        assert secret not in manifest


def test_rerun_on_complete_output_does_nothing_and_other_config_is_refused(
    messy_run: tuple[Path, int, dict[str, str]], messy_tree: Path
) -> None:
    out, _, _ = messy_run
    before = tree_digest(out)
    result = preprocess([messy_tree], out, overrides=["intensity.kind=ct_window", "nifti.modality=CT"])
    assert result.resumed and result.exit_code == 3 and tree_digest(out) == before
    with pytest.raises(UsageError, match="other inputs or config"):
        preprocess([messy_tree], out, overrides=["intensity.kind=ct_window", "nifti.modality=CT", "split.seed=5"])


def test_output_inside_input_and_missing_input_exit_2(messy_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preprocess", str(messy_tree), str(messy_tree / "out")]) == 2
    assert "overlaps input" in capsys.readouterr().err
    assert main(["preprocess", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert main(["preprocess", str(tmp_path / "out")]) == 2
    assert main(["preprocess", str(messy_tree), str(tmp_path / "o"), "--set", "spatial.orientation=XYZ"]) == 2


def test_mixed_modalities_need_an_explicit_mapping(tmp_path: Path) -> None:
    write_series(tmp_path / "in" / "ct", n=3)
    write_series(tmp_path / "in" / "mr", source="MR_small.dcm", n=3)
    with pytest.raises(ConfigError, match="different intensity mappings"):
        preprocess([tmp_path / "in"], tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------
def all_text(out: Path) -> bytes:
    blob = b""
    for p in out.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            blob += gzip.decompress(data) if p.name.endswith(".gz") else data
            blob += str(p.relative_to(out)).encode()
    return blob


@pytest.mark.parametrize("config", [None, "preprocess_native"])
def test_nifti_header_text_and_file_names_never_reach_the_dataset(tmp_path: Path, config: str | None) -> None:
    rng = np.random.default_rng(1)
    src = write_nifti(
        tmp_path / "in" / "Doe_John_19700101.nii.gz",
        rng.normal(50, 10, (10, 9, 8)).astype(np.float32),
        np.diag([1.0, 1.0, 1.0, 1.0]),
        descrip=b"John Doe MRN 123456",
        aux_file=b"DoeAux",
        intent_name=b"DoeIntent",
        db_name=b"DoeHospital",
    )
    out = tmp_path / "out"
    preprocess([src.parent], out, config)
    blob = all_text(out)
    for secret in (b"Doe", b"John", b"123456", b"19700101"):
        assert secret not in blob


def test_sform_and_qform_codes_are_honoured(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    sform = np.diag([2.0, 2.0, 2.0, 1.0])
    sform[:3, 3] = [10, 20, 30]
    qform = np.diag([-1.0, 1.0, 3.0, 1.0])
    qform[:3, 3] = [5, -5, 0]
    img = nib.Nifti1Image(data, sform)
    img.set_sform(sform, code=2)
    img.set_qform(qform, code=1)
    nib.save(img, str(tmp_path / "both.nii.gz"))
    only_q = nib.Nifti1Image(data, qform)
    only_q.set_sform(sform, code=0)
    only_q.set_qform(qform, code=1)
    nib.save(only_q, str(tmp_path / "onlyq.nii.gz"))

    def affine_used(path: Path, *sets: str) -> np.ndarray:
        out = tmp_path / f"out-{path.stem}-{len(sets)}"
        ds = Dataset.read(preprocess([path], out, "preprocess_native", overrides=list(sets)).out_dir)
        return nib.load(str(ds.item_path(ds.rows[0]))).affine

    np.testing.assert_allclose(affine_used(tmp_path / "both.nii.gz"), sform)
    np.testing.assert_allclose(affine_used(tmp_path / "both.nii.gz", "nifti.prefer=qform"), qform, atol=1e-6)
    np.testing.assert_allclose(affine_used(tmp_path / "onlyq.nii.gz"), qform, atol=1e-6)


def test_4d_volume_selection(tmp_path: Path) -> None:
    data = np.stack([np.full((5, 5, 5), v, np.float32) + np.arange(5)[:, None, None] for v in (0, 10, 20)], -1)
    path = write_nifti(tmp_path / "f.nii.gz", data)
    ds = Dataset.read(preprocess([path], tmp_path / "o", "preprocess_native", overrides=["nifti.volume=2"]).out_dir)
    np.testing.assert_array_equal(ds.load(ds.rows[0])[0], data[..., 2])
    with pytest.raises(InputError, match="nifti.volume=5 but the image has 3 volumes"):
        preprocess([path], tmp_path / "o2", "preprocess_native", overrides=["nifti.volume=5"])


def test_transform_chain_reorients_resamples_crops_and_pads(tmp_path: Path) -> None:
    # LPS-stored volume (x index runs to the patient's left), 1 x 1 x 2 mm voxels, a box whose
    # left half is bright; box edges fall on the 2 mm grid so resampling leaves no partial voxels.
    data = np.zeros((20, 16, 10), np.float32)
    data[4:16, 4:12, 2:8] = 50.0
    data[10:16, 4:12, 2:8] = 100.0
    label = (data > 0).astype(np.float32) * 3
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    write_nifti(tmp_path / "in" / "a.nii.gz", data, affine)
    write_nifti(tmp_path / "in" / "a_seg.nii.gz", label, affine)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "kind: preprocess\n"
        "spatial: {spacing: [2, 2, 2], crop_foreground: true, foreground_threshold: -0.5, size: [8, 8, 8]}\n"
        "intensity: {kind: minmax, low: 0, high: 100}\n"
        "masks: {seg: {channels: [_seg]}}\n"
        "conditions: [{name: seg, source: 'mask:seg'}]\n"
    )
    ds = Dataset.read(preprocess([tmp_path / "in"], tmp_path / "out", cfg).out_dir)
    (row,) = ds.rows
    img, seg = ds.load(row)[0], ds.load_mask(row, "seg")[0]
    assert img.shape == seg.shape == (8, 8, 8) and ds.info.shape == [1, 8, 8, 8] and ds.info.spacing == [2.0, 2.0, 2.0]
    # Box 24 x 16 x 12 mm -> 6 x 4 x 6 voxels, centred by the pad. RAS x runs to the patient's
    # right, so the left (bright) half lands at the low x indices.
    expected = np.full((8, 8, 8), -1.0, np.float32)
    expected[1:7, 2:6, 1:7] = 0.0
    expected[1:4, 2:6, 1:7] = 1.0
    np.testing.assert_allclose(img, expected, atol=1e-6)
    np.testing.assert_array_equal(seg, np.where(expected > -1, 3.0, 0.0))


# ---------------------------------------------------------------------------------------------
# Covariates, CSV labels and subject splits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    ages = ["045Y", "006M", "010W", "", "072Y", "030Y", "051Y", "019Y"]
    for n, age in enumerate(ages):
        for s in range(2 if n == 0 else 1):  # subject 0 has two series
            syn = write_series(root / f"s{n}" / f"series{s}", n=2, offset=3 + s)
            set_patient(syn.files, PatientID=f"PID{n:03d}", PatientAge=age, PatientSex="MF"[n % 2], BodyPartExamined="HEAD")
    with open(root.parent / f"{root.name}-labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["PatientID", "diagnosis"])
        for n in range(7):  # PID007 has no row
            w.writerow([f"PID{n:03d}", "tumour" if n % 3 == 0 else "normal"])
    return root


def cohort_config(cohort: Path, tmp_path: Path, seed: int = 0) -> Path:
    cfg = tmp_path / f"cohort-{seed}.yaml"
    cfg.write_text(
        "kind: preprocess\n"
        "spatial: {orientation: RAS}\n"
        f"labels_csv: {{path: '{cohort.parent / (cohort.name + '-labels.csv')}', column: PatientID}}\n"
        "conditions:\n"
        "  - {name: sex, source: sex}\n"
        "  - {name: age, source: age, missing: 40}\n"
        "  - {name: body, source: body_part}\n"
        "  - {name: dx, source: 'csv:diagnosis'}\n"
        f"split: {{seed: {seed}, train: 0.5, val: 0.25, test: 0.25}}\n"
    )
    return cfg


def test_dicom_covariates_csv_join_and_subject_splits(cohort: Path, tmp_path: Path) -> None:
    result = preprocess([cohort], tmp_path / "a", cohort_config(cohort, tmp_path))
    ds = Dataset.read(result.out_dir)
    assert result.exit_code == 3 and [e["reason"] for e in result.errors] == ["no row in the labels CSV matches its PatientID"]
    assert len(ds.rows) == 8  # 7 subjects, one with two series
    assert ds.info.condition("dx").categories == ["normal", "tumour"]
    assert ds.info.condition("sex").categories == ["F", "M"]
    ages = sorted(float(r["age"]) for r in ds.rows)
    assert ages == pytest.approx(sorted([45, 45, 0.5, 10 * 7 / 365.25, 40, 72, 30, 51]), abs=1e-3)
    assert {r["body"] for r in ds.rows} == {"HEAD"}
    by_subject: dict[str, set[str]] = {}
    for r in ds.rows:
        by_subject.setdefault(r["subject"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_subject.values())  # no subject spans two splits
    counts = {s: sum(1 for v in by_subject.values() if s in v) for s in ("train", "val", "test")}
    assert counts == {"train": 4, "val": 2, "test": 1} or sum(counts.values()) == 7
    # Seeded: the same seed gives the same subject splits (pseudonyms differ between runs unless a
    # subject_key is set; the splits do not depend on it), another seed another assignment.
    def by_content(d: Dataset) -> list[tuple[str, ...]]:
        return sorted((r["age"], r["sex"], r["dx"], r["split"]) for r in d.rows)

    again = Dataset.read(preprocess([cohort], tmp_path / "b", cohort_config(cohort, tmp_path)).out_dir)
    assert by_content(again) == by_content(ds)
    keyed = [Dataset.read(preprocess([cohort], tmp_path / f"k{n}", cohort_config(cohort, tmp_path), overrides=["subject_key=s3cret"]).out_dir) for n in (1, 2)]
    assert [r["id"] for r in keyed[0].rows] == [r["id"] for r in keyed[1].rows]
    splits = {
        tuple(by_content(Dataset.read(preprocess([cohort], tmp_path / f"s{seed}", cohort_config(cohort, tmp_path, seed)).out_dir)))
        for seed in (1, 2, 3)
    }
    assert len(splits) > 1


def test_age_strings_parse_to_years() -> None:
    from imgsynth.data.covariates import parse_age

    assert parse_age("045Y") == 45 and parse_age("006M") == 0.5 and parse_age("003D") == pytest.approx(3 / 365.25, abs=1e-4)
    assert parse_age("010W") == pytest.approx(70 / 365.25, abs=1e-4) and parse_age("") is None and parse_age("4Z") is None


def test_identifying_dicom_fields_cannot_become_conditions() -> None:
    from imgsynth.data.config import ConditionSpec

    with pytest.raises(ValueError, match="may identify"):
        ConditionSpec(name="x", source="dicom:PatientName")
    assert ConditionSpec(name="k", source="dicom:ConvolutionKernel").type == "categorical"


# ---------------------------------------------------------------------------------------------
# Resume and the mini-batch entry
# ---------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_without_redoing_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imgsynth.data.process as process

    for n in range(3):
        write_series(tmp_path / "in" / f"s{n}", n=3, offset=n + 1)
    out = tmp_path / "out"
    real = process.process_unit
    calls: list[str] = []

    def crash_after_two(unit, *a, **k):  # noqa: ANN001, ANN002, ANN003
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(unit.uid)
        return real(unit, *a, **k)

    monkeypatch.setattr(process, "process_unit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        preprocess([tmp_path / "in"], out)
    assert (out / ".work" / "plan.json").is_file() and not (out / "manifest.csv").exists()
    calls.clear()
    monkeypatch.setattr(process, "process_unit", lambda unit, *a, **k: calls.append(unit.uid) or real(unit, *a, **k))
    result = preprocess([tmp_path / "in"], out)
    assert len(calls) == 1 and len(result.dataset.rows) == 3 and not (out / ".work").exists()


def test_step_by_step_as_a_parallel_job_runs_it(tmp_path: Path) -> None:
    """plan -> stats mini-batches -> fit -> mini-batches (any chunking, any order) -> finish."""
    from imgsynth.data.pipeline import finish_preprocess, fit_intensity, needs_dataset_fit, plan_preprocess
    from imgsynth.data.process import preprocess_minibatch, stats_minibatch

    for n in range(3):
        write_series(tmp_path / "in" / f"ok{n}", source="MR_small.dcm", n=3, offset=5 * n)
    write_series(tmp_path / "in" / "one", source="MR_small.dcm", n=1)
    out = tmp_path / "out"
    cfg = ["intensity.scope=dataset"]
    records = plan_preprocess([tmp_path / "in"], out, overrides=cfg)
    from imgsynth.data.pipeline import resolve_config

    config = resolve_config(None, cfg).model_dump(mode="json")
    assert len(records) == 4 and needs_dataset_fit(resolve_config(None, cfg), records)
    for chunk in (records[2:], records[:2]):
        stats_minibatch(chunk, str(out), config)
    fitted = fit_intensity(out, resolve_config(None, cfg))
    assert fitted is not None and fitted.params["scope"] == "dataset"
    results = preprocess_minibatch(records[::-1], str(out), config)
    assert sorted("error" in r for r in results) == [False, False, False, True]
    assert "fewer than dicom.min_slices" in next(r["error"] for r in results if "error" in r)
    result = finish_preprocess(out, resolve_config(None, cfg))
    assert len(result.dataset.rows) == 3 and result.exit_code == 3
    assert result.dataset.info.intensity.model_dump() == fitted.model_dump()


def test_dry_run_lists_units_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "in" / "a", n=3)
    write_series(tmp_path / "in" / "b", n=1)
    assert main(["preprocess", str(tmp_path / "in"), str(tmp_path / "out"), "--dry-run", "-c", "preprocess_ct"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("kind: preprocess") and "# 2 unit(s), 2 usable" in text and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# 2D slices from a CT series
# ---------------------------------------------------------------------------------------------
def test_ct_slices_range_step_and_empty_filter(tmp_path: Path) -> None:
    syn = write_series(tmp_path / "in", n=9)
    base = ["spatial_dims=2", "slices.axes=[axial]", "intensity.kind=ct_window", "conditions=[{name: z, source: slice_mm}, {name: pos, source: position}]"]
    ds = Dataset.read(preprocess([tmp_path / "in"], tmp_path / "all", overrides=base).out_dir)
    assert len(ds.rows) == 9 and ds.info.shape == [1, 128, 128]
    positions = sorted(float(r["pos"]) for r in ds.rows)
    assert positions == pytest.approx(np.linspace(0, 1, 9))
    z = sorted(float(r["z"]) for r in ds.rows)
    assert np.diff(z) == pytest.approx(2.5)  # RAS z of each slice centre, 2.5 mm apart
    some = Dataset.read(
        preprocess([tmp_path / "in"], tmp_path / "some", overrides=[*base, "slices.range=[0.25, 0.75]", "slices.step=2"]).out_dir
    )
    assert sorted(float(r["pos"]) for r in some.rows) == pytest.approx([0.25, 0.5, 0.75])
    # An axial DICOM image with identity orientation is already in radiological display (rows
    # anterior->posterior, patient right on the left): the stored slice is the DICOM image itself.
    row = min(ds.rows, key=lambda r: float(r["pos"]))
    img = ds.info.intensity.to_physical(ds.load(row)[0])
    hu = np.clip(syn.volume[:, :, 0].T, -1000, 1000)
    np.testing.assert_allclose(img, hu, atol=0.05)
    # Empty-slice filter: fraction of pixels above the threshold (model scale).
    frac = float((ds.load(row)[0] > -0.5).mean())
    kept = preprocess([tmp_path / "in"], tmp_path / "fg", overrides=[*base, f"slices.min_foreground={frac - 0.01}", "slices.foreground_threshold=-0.5"])
    assert len(kept.dataset.rows) == 9
    with pytest.raises(InputError, match="no slice passed the slice range / empty-slice filter"):
        preprocess([tmp_path / "in"], tmp_path / "none", overrides=[*base, f"slices.min_foreground={frac + 0.05}", "slices.foreground_threshold=-0.5"])


def test_medmnist_inputs_merge_and_bad_npz_is_listed(shared_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK not a zip")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(b"PK\x03\x04garbage")  # a zip header, then nothing readable
    a = shared_data / "medmnist" / "pneumoniamnist.npz"
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, train_images=np.load(a)["train_images"][:5])
    b = shared_data / "medmnist" / "balanced-subset" / "pneumoniamnist.npz"
    out = tmp_path / "out"
    code = main(["preprocess", str(a), str(cut), str(b), str(bad), str(unlabelled), str(out), "--config",
                 "preprocess_medmnist", "--set", "medmnist.max_per_split=3"])
    assert code == 3
    ds = Dataset.read(out)
    assert ds.info.shape == [1, 32, 32] and ds.info.splits == {"train": 6, "val": 6, "test": 6}
    assert {r["id"].rsplit("-", 2)[0] for r in ds.rows} == {"pneumoniamnist", "pneumoniamnist-2"}
    reasons = {e["input"]: e["reason"] for e in errors_of(out)}
    assert reasons["broken.npz"].startswith("not a readable .npz") and reasons["cut.npz"].startswith("not a readable .npz")
    assert reasons["unlabelled.npz"] == "'train_images' without 'train_labels' (MedMNIST files label every split)"


def test_npz_inside_a_dicom_tree_is_ignored_like_other_files(shared_data: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(shared_data / "dicom-series", tree, ignore=shutil.ignore_patterns("*.md", "*.json", "*.txt"))
    shutil.copy(shared_data / "medmnist" / "pneumoniamnist.npz", tree / "notes.npz")
    result = preprocess([tree], tmp_path / "out", "preprocess_native")
    assert len(result.dataset.rows) == 1


def test_builtin_preprocess_configs_validate_and_api_is_importable() -> None:
    from imgsynth.config import builtin_config_names, load_config
    from imgsynth.data import preprocess as api
    from imgsynth.data import preprocess_minibatch
    from imgsynth.data.config import PreprocessConfig

    names = [n for n in builtin_config_names() if n.startswith("preprocess_")]
    assert {"preprocess_native", "preprocess_ct", "preprocess_mr", "preprocess_medmnist", "preprocess_mni152_slices"} <= set(names)
    for name in names:
        assert isinstance(load_config(name, expect_kind="preprocess"), PreprocessConfig)
    assert api is preprocess and callable(preprocess_minibatch)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["conditions=[{name: p, source: plane}]"], "needs spatial_dims: 2"),
        (["conditions=[{name: d, source: 'csv:dx'}]"], "no labels_csv is set"),
        (["masks={m: {channels: [_m]}}"], "no condition uses them"),
        (["conditions=[{name: m, source: 'mask:x'}]"], "not defined under 'masks'"),
        (["output=nifti", "intensity.kind=percentile"], "output 'nifti' keeps physical units"),
        (["split.by=block"], "needs spatial_dims: 2"),
        (["intensity.kind=percentile", "intensity.low=0", "intensity.high=1"], "do not apply to kind 'percentile'"),
        (["split.train=0.5"], "must sum to 1"),
        (["conditions=[{name: a, source: age, type: categorical}]"], "is continuous, not categorical"),
        (["conditions=[{name: a, source: weight}]"], "unknown condition source 'weight'"),
        (["nifti.subject_pattern=sub-(["], "not a valid regular expression"),
        (["spatial.orientation=RRS"], "not three axis codes"),
        (["slices.axes=[axial, axial]"], "repeat a plane"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(overrides: list[str], message: str) -> None:
    from imgsynth.data.pipeline import resolve_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(None, overrides)


def test_medmnist_3d_keeps_its_size_and_labels(shared_data: Path, tmp_path: Path) -> None:
    npz = shared_data / "volumes" / "adrenalmnist3d_64.npz"
    ds = preprocess([npz], tmp_path / "out", overrides=["medmnist.max_per_split=2"]).dataset
    raw = np.load(npz)
    assert ds.info.spatial_dims == 3 and ds.info.shape == [1, 64, 64, 64]
    assert ds.info.condition("label").categories == ["normal", "mass"]
    first = next(r for r in ds.rows if r["split"] == "test")
    np.testing.assert_allclose(ds.info.intensity.to_physical(ds.load(first)[0]), raw["test_images"][0], atol=1e-3)
    assert first["label"] == ["normal", "mass"][int(raw["test_labels"][0, 0])]


def test_inputs_with_nothing_usable_say_so_and_leave_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image\n")
    for src in ("empty", "text"):
        assert main(["preprocess", str(tmp_path / src), str(tmp_path / f"out-{src}")]) == 1
        err = capsys.readouterr().err
        assert "no DICOM series, NIfTI volume or MedMNIST file found" in err and "errors.jsonl" not in err
        assert not (tmp_path / f"out-{src}").exists()
