"""Geometry oracle: our volumes against dcm2niix, the converter the field trusts.

Regular series (real CT and MR of pydicom's corpus, real enhanced CT, synthetic oblique /
reversed / multi-frame series): after reorientation of both to the closest canonical (RAS)
axes, the voxel arrays are equal and the affines agree within 1e-3 mm. The real GE head CT
(18.5 deg gantry tilt, uneven gaps) is compared with dcm2niix's tilt-corrected, equalised output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from imgsynth.data.volume import Volume

from ..conftest import require_tool
from .synth import rotation, write_enhanced, write_series
from .test_geometry import one

DICOMDIR_TESTS = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent


def dcm2niix(folder: Path, out: Path) -> list[Path]:
    exe = require_tool("dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-z", "n", "-f", "%s_%j", "-o", str(out), str(folder)], check=True, capture_output=True, timeout=120)
    return sorted(out.glob("*.nii"))


def assert_same_volume(vol: Volume, path: Path) -> None:
    ours = nib.as_closest_canonical(nib.Nifti1Image(vol.image, vol.affine))
    theirs = nib.as_closest_canonical(nib.load(str(path)))
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.asarray(ours.dataobj, dtype=np.float64), theirs.get_fdata())
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)


def test_real_ct_series_matches_dcm2niix(tmp_path: Path) -> None:
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"  # real CT, 5 slices, z descending
    (nii,) = dcm2niix(folder, tmp_path / "ref")
    assert_same_volume(one(folder), nii)


@pytest.mark.parametrize(
    "name",
    ["MR_small.dcm", "CT_small.dcm", "dicomdirtests/98892003/MR700/4467", "dicomdirtests/98892003/MR700/4528",
     "dicomdirtests/98892003/MR1/4919", "MR_small_jp2klossless.dcm"],
)
def test_real_single_images_match_dcm2niix(tmp_path: Path, name: str) -> None:
    """Real CT and MR images of pydicom's corpus (axial, sagittal, oblique; one compressed), one
    slice each: the slice thickness gives the third axis, as in dcm2niix."""
    src = DICOMDIR_TESTS / name.split("/", 1)[1] if name.startswith("dicomdirtests/") else Path(pydicom.data.get_testdata_file(name))
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / "x.dcm")
    (nii,) = dcm2niix(folder, tmp_path / "ref")
    assert_same_volume(one(folder, min_slices=1), nii)


@pytest.mark.parametrize(
    ("source", "angles", "order"),
    [("CT_small.dcm", (30, 20, 0), "reversed"), ("MR_small.dcm", (-50, 65, 10), "shuffled"), ("CT_small.dcm", (0, 0, 0), "forward")],
)
def test_synthetic_oblique_series_match_dcm2niix(tmp_path: Path, source: str, angles: tuple[int, ...], order: str) -> None:
    syn = write_series(tmp_path / "in", source=source, n=5, rot=rotation(*angles), order=order)
    (nii,) = dcm2niix(syn.folder, tmp_path / "ref")
    assert_same_volume(one(syn.folder), nii)


def test_enhanced_multiframe_matches_dcm2niix(tmp_path: Path) -> None:
    syn = write_enhanced(tmp_path / "in" / "emr.dcm", rot=rotation(25, -15, 5))
    (nii,) = dcm2niix(syn.folder, tmp_path / "ref")
    assert_same_volume(one(syn.folder), nii)


def test_real_enhanced_ct_matches_dcm2niix(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("eCT_Supplemental.dcm"), folder)
    (nii,) = dcm2niix(folder, tmp_path / "ref")
    vol = one(folder)
    assert vol.image.min() == -1024  # Pixel Value Transformation functional group applied (HU)
    assert_same_volume(vol, nii)


def test_native_config_writes_what_dcm2niix_writes(tmp_path: Path) -> None:
    """The conversion-only config end to end (scan, plan, write NIfTI) on a real CT series."""
    from imgsynth.contracts import Dataset
    from imgsynth.data.pipeline import preprocess

    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    (nii,) = dcm2niix(folder, tmp_path / "ref")
    result = preprocess([folder], tmp_path / "out", "preprocess_native")
    ds = Dataset.read(result.out_dir)
    assert ds.info.intensity.kind == "none" and ds.info.intensity.unit == "HU" and ds.info.orientation is None
    (row,) = ds.rows
    ours = nib.load(str(ds.item_path(row)))
    theirs = nib.load(str(nii))
    a, b = nib.as_closest_canonical(ours), nib.as_closest_canonical(theirs)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
    assert ours.header["descrip"].item() == b"" and int(ours.header["sform_code"]) == 1


def test_tilted_uneven_head_ct_matches_dcm2niix_tilt_corrected_equalised(shared_data: Path, tmp_path: Path) -> None:
    """Real GE head CT: 18.5 deg gantry tilt, gaps 4.0 / 1.08 / 7.0 mm along the normal.

    dcm2niix writes ``*_Tilt_Eq_*.nii``: each slice shifted in plane by tan(tilt) x its distance
    along the normal, then slices interpolated onto equal steps of d_last / (2n - 1). Our
    correction builds the same orthogonal grid (512 x 611 x 56, same rule), so the voxel arrays
    compare index by index (dcm2niix stores rows flipped). dcm2niix's header keeps the
    pre-correction slice vector, so its affine is not compared; ours is checked to be orthogonal.
    Tolerance is that of two linear interpolations, one rounded to int16: inside the head, away
    from the scanner's -1500 padding circle and slice borders.
    """
    from scipy.ndimage import binary_erosion

    folder = shared_data / "dicom-series" / "dcm_qa_ct-GE-head"
    refs = dcm2niix(folder, tmp_path / "ref")
    eq = next(p for p in refs if "Tilt_Eq" in p.name)
    vol = one(folder)
    ref_img = nib.load(str(eq))
    ref = np.asarray(ref_img.dataobj, dtype=np.float32)[:, ::-1, :]
    assert vol.image.shape == ref.shape == (512, 611, 56)
    assert len(vol.notes) == 2 and "18.50 deg" in vol.notes[0] and "56 slices" in vol.notes[1]
    cols = vol.affine[:3, :3]
    np.testing.assert_allclose(np.triu(cols.T @ cols, 1), 0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(cols, axis=0), ref_img.header["pixdim"][1:4], atol=1e-4)

    # Tissue and air, 2 voxels away from the scanner's padding (-1500) and from slice borders.
    head = binary_erosion(np.minimum(vol.image, ref) > -1100, structure=np.ones((5, 5, 5), bool))
    diff = np.abs(vol.image - ref)[head]
    assert head.mean() > 0.5
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99.9) < 1.5
    assert (diff > 5).mean() < 1e-4
