"""DICOM series assembly and geometry: synthetic series with known affines round-trip exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsynth.data.config import DicomOptions
from imgsynth.data.dicom import group_series, load_series, scan_file
from imgsynth.data.geometry import (
    equalised_positions,
    missing_slices,
    plane_slice,
    resample_stack,
    stack_geometry,
)
from imgsynth.data.volume import Volume
from imgsynth.errors import InputError

from .synth import LPS_TO_RAS, rotation, write_enhanced, write_series


def load_folder(folder: Path, **opts: object) -> list[Volume | InputError]:
    heads = [h for h in (scan_file(p) for p in sorted(folder.rglob("*")) if p.is_file()) if h is not None]
    out: list[Volume | InputError] = []
    for group in group_series(heads):
        try:
            if group.error:
                raise InputError(group.error)
            out.append(load_series(group, DicomOptions(**opts)))
        except InputError as exc:
            out.append(exc)
    return out


def one(folder: Path, **opts: object) -> Volume:
    (vol,) = load_folder(folder, **opts)
    assert isinstance(vol, Volume), vol
    return vol


@pytest.mark.parametrize("order", ["forward", "reversed", "shuffled"])
@pytest.mark.parametrize("angles", [(0, 0, 0), (30, 20, 0), (-50, 65, 10)])
def test_oblique_series_round_trips_exactly(tmp_path: Path, order: str, angles: tuple[int, int, int]) -> None:
    syn = write_series(tmp_path, n=5, rot=rotation(*angles), order=order, seed=3)
    vol = one(tmp_path)
    np.testing.assert_array_equal(vol.image, syn.volume)
    np.testing.assert_allclose(vol.affine, syn.affine, atol=1e-6)
    assert vol.unit == "HU" and vol.modality == "CT" and not vol.notes


def test_slices_sorted_along_the_normal_not_by_instance_number(tmp_path: Path) -> None:
    # Step against the normal: the first file is the last slice; sorting must use the normal.
    rot = rotation(10, 5)
    syn = write_series(tmp_path, n=4, rot=rot, step=-2.0 * np.cross(rot[:, 0], rot[:, 1]))
    vol = one(tmp_path)
    np.testing.assert_array_equal(vol.image, syn.volume)
    np.testing.assert_allclose(vol.affine, syn.affine, atol=1e-6)
    # The affine's slice column points along +normal (RAS), from the most negative position.
    normal_ras = (LPS_TO_RAS[:3, :3] @ np.cross(rot[:, 0], rot[:, 1]))
    assert np.dot(vol.affine[:3, 2], normal_ras) > 0


def test_enhanced_multiframe_per_frame_groups_round_trip(tmp_path: Path) -> None:
    syn = write_enhanced(tmp_path / "emr.dcm", rot=rotation(25, -15, 5))
    vol = one(tmp_path)
    np.testing.assert_array_equal(vol.image, syn.volume)  # rescale from the shared functional group
    np.testing.assert_allclose(vol.affine, syn.affine, atol=1e-6)
    assert vol.image.shape == (64, 64, 10)


def test_tilted_series_shear_is_exact_and_correction_is_orthogonal(tmp_path: Path) -> None:
    # Gantry tilt: slices tilted 15 degrees about x, table steps along z (as in the GE head CT).
    rot = rotation(0, 15)
    syn = write_series(tmp_path, n=6, rot=rot, step=np.array([0.0, 0.0, 3.0]))
    sheared = one(tmp_path, tilt="shear")
    np.testing.assert_array_equal(sheared.image, syn.volume)
    np.testing.assert_allclose(sheared.affine, syn.affine, atol=1e-6)
    assert "sheared" in sheared.notes[0]
    import gzip

    import nibabel as nib

    from imgsynth.data.nifti import nifti_bytes

    written = nib.Nifti1Image.from_bytes(gzip.decompress(nifti_bytes(sheared.image, sheared.affine)))
    np.testing.assert_allclose(written.affine, syn.affine, atol=1e-4)  # sform keeps the shear
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) == 1

    corrected = one(tmp_path, tilt="correct")
    cols = corrected.affine[:3, :3]
    gram = cols.T @ cols
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-9)  # orthogonal grid
    assert "gantry tilt 15.00 deg corrected" in corrected.notes[0]
    # Every corrected voxel lies where the sheared grid says the same anatomy is: sample the sheared
    # volume at the world position of each corrected voxel (inside the acquired slab).
    from scipy.ndimage import map_coordinates

    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in corrected.image.shape], indexing="ij"), -1).reshape(-1, 3)
    world = corrected.affine @ np.c_[ijk, np.ones(len(ijk))].T
    src = np.linalg.solve(sheared.affine, world)[:3]
    inside = np.all((src > 0.5) & (src < np.array(sheared.image.shape)[:, None] - 1.5), axis=0)
    expected = map_coordinates(sheared.image.astype(np.float64), src[:, inside], order=1)
    got = corrected.image.reshape(-1)[inside]
    assert inside.mean() > 0.5
    # Regular tilted slices map one-to-one onto corrected slices, so the correction is a bilinear
    # in-plane shift: exactly what trilinear sampling of the sheared grid gives at these points.
    assert np.abs(got - expected).max() < 1e-3

    with pytest.raises(InputError, match="gantry tilt 15.0 deg"):
        load_series_only(tmp_path, tilt="error")


def load_series_only(folder: Path, **opts: object) -> Volume:
    (res,) = load_folder(folder, **opts)
    if isinstance(res, InputError):
        raise res
    return res


def test_missing_slice_is_refused_with_instance_numbers(tmp_path: Path) -> None:
    syn = write_series(tmp_path, n=6)
    syn.files[3].unlink()
    with pytest.raises(InputError, match=r"missing slice\(s\): about 1 slice\(s\).*InstanceNumber 3 -> 5"):
        load_series_only(tmp_path)


def test_uneven_spacing_is_equalised_or_refused(tmp_path: Path) -> None:
    write_series(tmp_path, n=5, positions=[0, 1, 2, 3.5, 5.5], spacing=2.0)
    with pytest.raises(InputError, match="uneven slice spacing"):
        load_series_only(tmp_path, uneven="error")
    vol = load_series_only(tmp_path)
    # Smallest gap 2 mm over 11 mm: 6 equal slices (dcm2niix's rule), linear between neighbours.
    assert vol.image.shape[2] == 6 and abs(np.linalg.norm(vol.affine[:3, 2]) - 2.0) < 1e-6
    assert "equalised" in vol.notes[0]


def test_repeated_positions_split_by_acquisition_or_refused(tmp_path: Path) -> None:
    uid = "1.2.3.4.5.6.7.8"
    write_series(tmp_path / "a", n=3, series_uid=uid)
    write_series(tmp_path / "b", n=3, series_uid=uid, offset=11)
    (res,) = load_folder(tmp_path)
    assert isinstance(res, InputError) and "mixed series" in str(res)
    # With distinct AcquisitionNumbers the same files are two volumes.
    import pydicom

    for p in sorted((tmp_path / "b").glob("*.dcm")):
        ds = pydicom.dcmread(p)
        ds.AcquisitionNumber = 7  # CT_small's is 2
        ds.save_as(p)
    vols = load_folder(tmp_path)
    assert len(vols) == 2 and all(isinstance(v, Volume) for v in vols)


def test_series_split_by_orientation(tmp_path: Path) -> None:
    uid = "1.2.3.4.5.6.7.9"
    write_series(tmp_path / "ax", n=3, series_uid=uid)
    write_series(tmp_path / "ob", n=4, series_uid=uid, rot=rotation(0, 40))
    vols = load_folder(tmp_path)
    assert sorted(v.image.shape[2] for v in vols if isinstance(v, Volume)) == [3, 4]


def test_single_slice_and_non_image_objects_give_reasons(tmp_path: Path) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    write_series(tmp_path / "one", n=1)
    for name in ("rtplan.dcm", "waveform_ecg.dcm", "reportsi.dcm"):
        shutil.copy(get_testdata_file(name), tmp_path / name)
    reasons = sorted(str(r) for r in load_folder(tmp_path))
    assert any("1 slice(s), fewer than dicom.min_slices=2" in r for r in reasons)
    assert any("non-image object (RT plan" in r for r in reasons)
    assert any("non-image object (ECG waveform" in r for r in reasons)
    assert any("non-image object (structured report" in r for r in reasons)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])  # RLE, JPEG 2000 lossless
def test_compressed_series_decode_to_the_same_values(tmp_path: Path, syntax: str) -> None:
    plain = write_series(tmp_path / "plain", source="MR_small.dcm", n=3)
    packed = write_series(tmp_path / "packed", source="MR_small.dcm", n=3, syntax=syntax)
    vol = one(tmp_path / "packed")
    np.testing.assert_array_equal(vol.image, plain.volume)
    np.testing.assert_allclose(vol.affine, packed.affine, atol=1e-6)


def test_pydicom_compressed_files_decode(tmp_path: Path) -> None:
    """Real compressed files (JPEG-LS, JPEG 2000, RLE) of MR_small decode to its values."""
    import shutil

    from pydicom.data import get_testdata_file

    ref = None
    for name in ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(get_testdata_file(name), folder / name)
        vol = one(folder, min_slices=1)
        ref = vol.image if ref is None else ref
        np.testing.assert_array_equal(vol.image, ref)


def test_truncated_pixel_data_is_undecodable(tmp_path: Path) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "x.dcm")
    with pytest.raises(InputError, match="undecodable pixel data in x.dcm"):
        load_series_only(tmp_path, min_slices=1)


def test_equalised_positions_follow_dcm2niix_rule() -> None:
    np.testing.assert_allclose(equalised_positions(np.array([0.0, 3, 6, 12, 22])), np.arange(8) * 3.0)
    # More than twice the slices: capped at 2n, spread over the whole extent.
    w = np.array([0.0, 0.1, 10, 20])
    np.testing.assert_allclose(equalised_positions(w), np.linspace(0, 20, 8))
    np.testing.assert_allclose(equalised_positions(np.array([0.0, 1, 3]), 0.5), np.arange(7) * 0.5)


def test_missing_slices_counts_whole_multiples() -> None:
    iop = [1, 0, 0, 0, 1, 0]

    def count(z: list[float]) -> int:
        _, geo = stack_geometry(np.array(iop), np.array([[0, 0, v] for v in z]), (1.0, 1.0))
        return missing_slices(geo, 0.01)

    assert count([0, 1, 2, 3]) == 0
    assert count([0, 1, 3, 4]) == 1
    assert count([0, 1, 2, 5, 6]) == 2
    assert count([0, 1, 2.5, 3.5]) == 0  # uneven, not missing


def test_resample_stack_identity_on_regular_untilted_stack() -> None:
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(4, 5, 6)).astype(np.float32)
    ipps = np.array([[0, 0, 2.0 * k] for k in range(4)])
    _, geo = stack_geometry(np.array([1.0, 0, 0, 0, 1, 0]), ipps, (0.5, 0.25))
    out, affine = resample_stack(stack, geo, regular=True)
    np.testing.assert_allclose(out, stack, atol=1e-6)
    np.testing.assert_allclose(affine, LPS_TO_RAS @ np.diag([0.25, 0.5, 2.0, 1.0]), atol=1e-9)


def test_plane_slice_follows_radiological_display() -> None:
    # RAS array with markers: right (+x), anterior (+y), superior (+z).
    vol = np.zeros((1, 5, 6, 7), np.float32)
    vol[0, 4, 3, 3] = 1  # right
    vol[0, 2, 5, 3] = 2  # anterior
    vol[0, 2, 3, 6] = 3  # superior
    ax = plane_slice(vol, "axial", 3)[0]
    assert ax.shape == (6, 5)
    assert ax[0, 2] == 2  # anterior at the top
    assert ax[2, 0] == 1  # patient right on the image left
    cor = plane_slice(vol, "coronal", 3)[0]
    assert cor.shape == (7, 5) and cor[0, 2] == 3 and cor[3, 0] == 1
    sag = plane_slice(vol, "sagittal", 2)[0]
    assert sag.shape == (7, 6) and sag[0, 2] == 3 and sag[3, 0] == 2  # superior top, anterior left


def test_classic_multiframe_with_grid_frame_offsets(tmp_path: Path) -> None:
    """A classic multi-frame grid (pydicom's rtdose.dcm, relabelled as an image) placed by its
    GridFrameOffsetVector along the normal."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    frames = ds.pixel_array.astype(np.float32)  # [15, 10, 10]
    ds.Modality = "PT"
    ds.save_as(tmp_path / "grid.dcm")
    vol = one(tmp_path)
    np.testing.assert_array_equal(vol.image, np.transpose(frames, (2, 1, 0)))
    expected = np.diag([-10.0, -10.0, 5.0, 1.0])
    expected[:3, 3] = [-189.43125, -199.43125, -761.87]
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
