"""DICOM series writer: dciodvfy (the standard's IOD tables), pydicom read-back and dcm2niix geometry."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from imgsynth.errors import InputError, UsageError
from imgsynth.export.dicom import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    affine_from_orientation,
    new_uid,
    patient_orientation,
    write_series,
)
from tests.conftest import require_tool

PROVENANCE = {"run": "runs/ldm-chest", "checkpoint": "sha256:0f3a9c", "seed": 1234}


def oblique_affine() -> np.ndarray:
    """RAS affine with anisotropic spacing, rotated 20 deg about S and 10 deg about R, offset origin."""
    a, b = np.deg2rad(20.0), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 2.5])
    aff[:3, 3] = [-40.25, 12.5, 33.0]
    return aff


def dciodvfy_errors(files: list[Path]) -> list[str]:
    tool = require_tool("dciodvfy")
    errors = []
    for f in files:
        out = subprocess.run([tool, str(f)], capture_output=True, text=True, timeout=60)
        errors += [f"{f.name}: {line}" for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    return errors


def world_of_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """RAS mm of every pixel centre of one slice, from its DICOM geometry alone: [rows, cols, 3]."""
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    r, c = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    lps = ipp + c[..., None] * dc * iop[:3] + r[..., None] * dr * iop[3:]
    return lps * np.array([-1.0, -1.0, 1.0])


def source_index(affine: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """Voxel index of RAS points in the source array (float; integral when the grid matches)."""
    inv = np.linalg.inv(affine)
    return ras @ inv[:3, :3].T + inv[:3, 3]


def test_ct_series_valid_marked_and_geometry_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vol = np.rint(rng.normal(30, 400, (5, 8, 9))).astype(np.float32)  # [D, H, W] HU
    aff = oblique_affine()
    files = write_series(
        vol, out_dir=tmp_path / "ct", affine_or_orientation=aff, modality="CT", unit="HU", series_description="chest <b>x</b>",
        synthetic=True, provenance=PROVENANCE, patient_id="0007", window=(40, 400),
    )
    # Array axis 2 points closest to S: turned into 9 axial slices (rows and columns from axes 1, 0).
    assert [f.name for f in files] == [f"IM{k:04d}.dcm" for k in range(1, 10)]
    assert dciodvfy_errors(files) == []
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["ct"]  # no temporary folder left behind

    sop_uids, series_uids = set(), set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.SeriesDescription == "SYNTHETIC chest <b>x</b>"
        assert ds.PatientName == "SYNTHETIC^0007" and ds.PatientID == "SYNTHETIC-0007"
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
        assert "SYNTHETIC" in ds.ImageComments and "sha256:0f3a9c" in ds.ImageComments
        assert "seed=1234" in ds.ImageComments and "runs/ldm-chest" in ds.ImageComments
        assert ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
        assert float(ds.WindowCenter) == 40 and float(ds.WindowWidth) == 400
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID):
            assert uid.startswith("2.25.") and len(uid) <= 64
        sop_uids.add(ds.SOPInstanceUID)
        series_uids.add(ds.SeriesInstanceUID)
        # Every pixel lands on a source voxel centre and carries that voxel's HU.
        idx = source_index(aff, world_of_pixels(ds))
        assert np.abs(idx - np.rint(idx)).max() < 1e-4
        ii = np.rint(idx).astype(int)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, vol[ii[..., 0], ii[..., 1], ii[..., 2]])
        normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
        assert float(ds.SliceLocation) == pytest.approx(float(np.dot(np.array(ds.ImagePositionPatient, float), normal)), abs=1e-6)
    assert len(sop_uids) == 9 and len(series_uids) == 1


def dcm2niix_volume(folder: Path, out: Path) -> nib.Nifti1Image:
    tool = require_tool("dcm2niix")
    out.mkdir()
    run = subprocess.run([tool, "-z", "n", "-f", "vol", "-o", str(out), str(folder)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return nib.load(str(out / "vol.nii"))


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_dcm2niix_recovers_geometry_within_1e_3_mm(tmp_path: Path, modality: str) -> None:
    rng = np.random.default_rng(1)
    vol = np.rint(rng.uniform(-900, 1200, (6, 7, 8))).astype(np.float32)
    if modality == "MR":
        vol = rng.uniform(0.0, 3.7, (6, 7, 8)).astype(np.float32)  # scanner units, not integers
    aff = oblique_affine()
    files = write_series(vol, out_dir=tmp_path / "s", affine_or_orientation=aff, modality=modality,  # type: ignore[arg-type]
                         unit="HU" if modality == "CT" else "", synthetic=True, provenance=PROVENANCE)
    assert dciodvfy_errors(files) == []
    img = dcm2niix_volume(tmp_path / "s", tmp_path / "nii")
    assert img.shape == vol.shape or sorted(img.shape) == sorted(vol.shape)
    # The NIfTI grid is the same set of points: corner voxels map onto source corners within 1e-3 mm.
    corners = np.array([[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1) for k in (0, img.shape[2] - 1)])
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    idx = source_index(aff, world)
    back = np.rint(idx) @ aff[:3, :3].T + aff[:3, 3]
    assert np.abs(back - world).max() < 1e-3
    src_corners = {tuple(int(v) for v in c) for c in np.rint(idx)}
    assert src_corners == {(i, j, k) for i in (0, 5) for j in (0, 6) for k in (0, 7)}
    # And every voxel value comes back (MR: the stored 16-bit values, linear in the source).
    data = np.asarray(img.dataobj, dtype=np.float64) * (img.dataobj.slope if modality == "CT" else 1) + (
        img.dataobj.inter if modality == "CT" else 0)
    grid = np.indices(img.shape).reshape(3, -1).T
    src = np.rint(source_index(aff, grid @ img.affine[:3, :3].T + img.affine[:3, 3])).astype(int)
    expected = vol[src[:, 0], src[:, 1], src[:, 2]]
    if modality == "CT":
        np.testing.assert_allclose(data.reshape(-1), expected, atol=1e-3)
    else:
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID == MR_IMAGE_STORAGE and ds.ScanningSequence == "RM"
        rw = ds.RealWorldValueMappingSequence[0]
        physical = data.reshape(-1) * float(rw.RealWorldValueSlope) + float(rw.RealWorldValueIntercept)
        np.testing.assert_allclose(physical, expected, atol=float(rw.RealWorldValueSlope) / 2 + 1e-9)


def test_orientation_codes_and_axial_reorientation(tmp_path: Path) -> None:
    vol = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)  # RAS: axis 0 toward R (sagittal slices)
    files = write_series(vol, out_dir=tmp_path / "s", spacing=(1.5, 0.5, 2.0), affine_or_orientation="RAS", modality="CT",
                         unit="HU", synthetic=True)
    assert len(files) == 5  # turned into axial slices: one per S position
    aff = affine_from_orientation("RAS", (1.5, 0.5, 2.0))
    for f in files:
        ds = pydicom.dcmread(f)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert patient_orientation([float(v) for v in ds.ImageOrientationPatient]) == ["L", "P"]
        idx = np.rint(source_index(aff, world_of_pixels(ds))).astype(int)
        np.testing.assert_array_equal(ds.pixel_array, vol[idx[..., 0], idx[..., 1], idx[..., 2]])
    # Without reorientation, slices follow array axis 0 (sagittal here).
    files = write_series(vol, out_dir=tmp_path / "raw", spacing=(1.5, 0.5, 2.0), affine_or_orientation="RAS", modality="CT",
                         unit="HU", synthetic=True, reorient_axial=False)
    assert len(files) == 3 and dciodvfy_errors(files[:1]) == []


def test_secondary_capture_2d_undisclosed_and_real_markings(tmp_path: Path) -> None:
    img = np.linspace(0.0, 1.0, 6 * 7, dtype=np.float32).reshape(6, 7)
    (f,) = write_series(img, out_dir=tmp_path / "sc", spacing=(0.4, 0.3), modality="OT", synthetic=None,
                        patient_id="R01", series_description="case K7Q3P")
    assert dciodvfy_errors([f]) == []
    ds = pydicom.dcmread(f)
    assert ds.SOPClassUID == SECONDARY_CAPTURE_IMAGE_STORAGE and ds.ConversionType == "WSD"
    assert ds.SeriesDescription == "REVIEW case K7Q3P" and ds.PatientName == "REVIEW^R01"
    assert "real or synthetic" in ds.ImageComments and "SYNTHETIC IMAGE" not in ds.ImageComments
    assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.3]
    np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), img, atol=1e-5)

    (f,) = write_series(img, out_dir=tmp_path / "syn", spacing=(0.4, 0.3), modality="SC", synthetic=True)
    assert pydicom.dcmread(f).ConversionType == "SYN"
    with pytest.raises(UsageError, match="pseudonymous patient_id"):
        write_series(img, out_dir=tmp_path / "real", modality="OT", synthetic=False)
    (f,) = write_series(img, out_dir=tmp_path / "real", modality="OT", synthetic=False, patient_id="SUBJ-0042")
    ds = pydicom.dcmread(f)
    assert ds.PatientID == "SUBJ-0042" and ds.PatientIdentityRemoved == "YES"
    assert "SYNTHETIC" not in ds.SeriesDescription and "De-identified" in ds.ImageComments


def test_uid_root_and_shared_study(tmp_path: Path) -> None:
    root = "1.2.826.0.1.3680043.10.999"
    study = new_uid(root)
    vol = np.zeros((2, 3, 3), np.float32)
    a = write_series(vol, out_dir=tmp_path / "a", modality="CT", unit="HU", uid_root=root, study_uid=study)
    b = write_series(vol, out_dir=tmp_path / "b", modality="CT", unit="HU", uid_root=root, study_uid=study)
    uids = set()
    assert len({pydicom.dcmread(f).PatientID for f in a + b}) == 1  # one pseudonymous patient per study
    for f in a + b:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == study
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.file_meta.MediaStorageSOPInstanceUID):
            assert uid.startswith(root + ".") and len(uid) <= 64
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == 6  # RAS [2, 3, 3] becomes 3 axial slices per series
    assert len({pydicom.dcmread(a[0]).SeriesInstanceUID, pydicom.dcmread(b[0]).SeriesInstanceUID}) == 2
    with pytest.raises(UsageError, match="uid_root"):
        write_series(vol, out_dir=tmp_path / "c", uid_root="1.2.abc")


def test_bad_inputs_one_line_errors_and_nothing_written(tmp_path: Path) -> None:
    vol = np.zeros((2, 3, 3), np.float32)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(UsageError, match="not orthogonal"):
        write_series(vol, out_dir=tmp_path / "x", affine_or_orientation=sheared)
    bad = vol.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        write_series(bad, out_dir=tmp_path / "x")
    with pytest.raises(UsageError, match=r"\[H, W\] or \[D, H, W\]"):
        write_series(np.zeros((1, 2, 3, 4)), out_dir=tmp_path / "x")
    with pytest.raises(UsageError, match="Hounsfield"):
        write_series(vol, out_dir=tmp_path / "x", modality="CT", unit="mm2/s")
    with pytest.raises(UsageError, match="orientation 'RAX'"):
        write_series(vol, out_dir=tmp_path / "x", affine_or_orientation="RAX")
    assert not any(tmp_path.iterdir())
    write_series(vol, out_dir=tmp_path / "y")
    with pytest.raises(UsageError, match="not empty"):
        write_series(vol, out_dir=tmp_path / "y")
    files = write_series(vol, out_dir=tmp_path / "y", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == [f.name for f in files]
