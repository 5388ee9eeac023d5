"""Sample files in physical units with provenance: PNG text chunks, NIfTI header and geometry, DICOM
checked with pydicom, dciodvfy and dcm2niix, the model card."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from imgsynth.contracts import (
    Condition,
    Dataset,
    DatasetInfo,
    Intensity,
    Metric,
    Report,
    RunFolder,
    write_report,
)
from imgsynth.export.dicom import affine_from_orientation
from imgsynth.generate import generate
from imgsynth.generate.dicom import DicomSettings, derived_uid, resolve_modality, series_key
from imgsynth.generate.modelcard import build_model_card
from imgsynth.generate.outputs import write_sample
from imgsynth.utils.io import sha256_file
from tests.conftest import require_tool
from tests.generate.conftest import assert_dciodvfy_clean


@pytest.fixture(scope="module")
def sample_set(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("formats") / "s"
    return generate(tiny_run, out, n=4, steps=2, seed=5, batch_size=4, formats=["png", "nifti", "dicom"],
                    uid_root="1.2.826.0.1.3680043.10.999")


def test_hu_round_trip_through_nifti_and_dicom(sample_set: Dataset) -> None:
    intensity = sample_set.info.intensity  # minmax [0, 1000] HU
    assert (intensity.low, intensity.high, intensity.unit) == (0.0, 1000.0, "HU")
    for row in sample_set.rows:
        model = np.load(sample_set.item_path(row))  # [1, 16, 16] in [-1, 1]
        hu = (model.astype(np.float64) + 1) * 500.0  # the mapping inverted by hand
        nii = nib.load(str(sample_set.root / row["nifti"]))
        data = np.asarray(nii.dataobj)
        assert data.shape == (16, 16, 1)
        np.testing.assert_allclose(data[:, :, 0], hu[0], atol=1e-3)
        np.testing.assert_allclose(intensity.to_model(data[:, :, 0])[None], model, atol=1e-6)  # and back
        ds = pydicom.dcmread(sample_set.root / row["dicom"])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"  # CT Image Storage: HU
        stored = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        # The 2D item's axes (R, A) become an axial slice: rows toward P, columns toward L.
        assert np.max(np.abs(stored - np.flipud(np.fliplr(hu[0])).T)) <= 0.5


def test_nifti_geometry_and_provenance(sample_set: Dataset, tiny_run: Path) -> None:
    sha = sha256_file(tiny_run / "weights" / "diffusion-ema.safetensors")
    row = sample_set.rows[1]
    nii = nib.load(str(sample_set.root / row["nifti"]))
    np.testing.assert_allclose(nii.affine, np.diag([1.5, 1.5, 1.0, 1.0]))  # RAS, training spacing 1.5 mm
    assert nib.aff2axcodes(nii.affine) == ("R", "A", "S") and int(nii.header["sform_code"]) > 0
    hdr = nii.header
    assert hdr["intent_name"].tobytes().rstrip(b"\0") == b"SYNTHETIC"
    descrip = hdr["descrip"].tobytes().decode().rstrip("\0")
    assert descrip.startswith("SYNTHETIC") and f"seed {row['seed']}" in descrip and sha[:16] in descrip
    prov = json.loads(hdr.extensions[0].get_content())
    assert prov["synthetic"] is True and prov["checkpoint_sha256"] == sha and prov["seed"] == int(row["seed"])
    assert prov["run"] == "run" and prov["condition"]["label"] == row["label"] and prov["sampler"] == "dpm++"


def test_png_text_chunks(sample_set: Dataset, tiny_run: Path) -> None:
    row = sample_set.rows[0]
    png = Image.open(sample_set.root / row["png"])
    text = png.text
    assert text["imgsynth:synthetic"] == "true" and text["imgsynth:seed"] == row["seed"]
    assert text["imgsynth:checkpoint_sha256"] == sha256_file(tiny_run / "weights" / "diffusion-ema.safetensors")
    assert "SYNTHETIC" in text["Description"] and json.loads(text["Comment"])["index"] == 0
    model = np.load(sample_set.item_path(row))[0]
    np.testing.assert_array_equal(np.asarray(png), np.round((model + 1) * 127.5).astype(np.uint8))


def test_dicom_series_per_condition_and_markers(sample_set: Dataset) -> None:
    files = {r["id"]: pydicom.dcmread(sample_set.root / r["dicom"]) for r in sample_set.rows}
    labels = {r["id"]: r["label"] for r in sample_set.rows}
    assert len({d.StudyInstanceUID for d in files.values()}) == 1  # one study per sample set
    for label in ("left", "right"):
        series = {d.SeriesInstanceUID for k, d in files.items() if labels[k] == label}
        assert len(series) == 1  # one series per condition
    assert len({d.SeriesInstanceUID for d in files.values()}) == 2
    for i, (item, d) in enumerate(sorted(files.items())):
        assert d.InstanceNumber == i + 1 and list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert d.SeriesDescription == f"SYNTHETIC ldm label={labels[item]}"
        assert d.PatientIdentityRemoved == "YES" and str(d.PatientName).startswith("SYNTHETIC^")
        assert "SYNTHETIC IMAGE" in d.ImageComments and "checkpoint_sha256=" in d.ImageComments
        for uid in (d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.FrameOfReferenceUID):
            assert uid.startswith("1.2.826.0.1.3680043.10.999.") and len(uid) <= 64
        assert float(d.PixelSpacing[0]) == 1.5


def test_dicom_outputs_pass_dciodvfy(sample_set: Dataset) -> None:
    for row in sample_set.rows[:2]:
        assert_dciodvfy_clean(sample_set.root / row["dicom"])


def test_3d_volume_geometry_matches_dcm2niix(tmp_path: Path) -> None:
    """A [1, D, H, W] volume in LPI order, 1.5 x 2 x 3 mm: NIfTI affine and the DICOM series rebuilt by dcm2niix agree."""
    tool = require_tool("dcm2niix")
    info = DatasetInfo(spatial_dims=3, shape=[1, 6, 8, 10], spacing=[1.5, 2.0, 3.0], orientation="LPI",
                       intensity=Intensity(kind="ct_window", low=-1000.0, high=1000.0, unit="HU"))
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 6, 8, 10)).astype(np.float32)
    settings = DicomSettings(set_uid="abc", created="2024-01-02T03:04:05")
    row = write_sample(tmp_path, "synthetic-000003", 3, 11, {}, image, info, [], formats=["nifti", "dicom"],
                       provenance={"run": "r", "checkpoint_sha256": "f" * 64, "family": "ldm"}, digests={},
                       dicom=settings)
    nii = nib.load(str(tmp_path / row["nifti"]))
    np.testing.assert_allclose(nii.affine, affine_from_orientation("LPI", [1.5, 2.0, 3.0]))
    hu = info.intensity.to_physical(image)[0]
    np.testing.assert_allclose(np.asarray(nii.dataobj), hu, atol=1e-3)
    series = sorted((tmp_path / row["dicom"]).glob("*.dcm"))
    first = pydicom.dcmread(series[0])
    key, _, _ = series_key({}, [])
    assert first.SeriesInstanceUID == derived_uid(None, "abc", "series", key, 3) and len(series) == 10  # axial: along I
    assert first.StudyDate == "20240102" and first.SeriesTime == "030405"
    assert_dciodvfy_clean(series[len(series) // 2])
    conv = tmp_path / "conv"
    conv.mkdir()
    subprocess.run([tool, "-z", "y", "-f", "vol", "-o", str(conv), str(tmp_path / row["dicom"])],
                   capture_output=True, check=True, timeout=120)
    back = nib.load(str(conv / "vol.nii.gz"))
    # Same grid: every voxel's world position and value agree (dcm2niix may order the axes differently).
    ornt = nib.orientations.ornt_transform(nib.io_orientation(back.affine), nib.io_orientation(nii.affine))
    data = nib.orientations.apply_orientation(np.asarray(back.dataobj, dtype=np.float64), ornt)
    aff = back.affine @ nib.orientations.inv_ornt_aff(ornt, back.shape)
    np.testing.assert_allclose(aff, nii.affine, atol=1e-3)
    assert np.max(np.abs(data - hu)) <= 0.5


def test_modality_choice() -> None:
    base = {"spatial_dims": 2, "shape": [1, 4, 4]}
    hu = DatasetInfo(**base, intensity=Intensity(kind="ct_window", low=-1000, high=1000, unit="HU"))
    mr = DatasetInfo(**base, intensity=Intensity(kind="percentile", low=0, high=900), source={"modalities": ["MR"]})
    other = DatasetInfo(**base, intensity=Intensity(kind="minmax", low=0, high=1))
    assert [resolve_modality(i) for i in (hu, mr, other)] == ["CT", "MR", "OT"]
    assert resolve_modality(hu, "SC") == "OT"
    with pytest.raises(Exception, match="needs images in HU"):
        resolve_modality(mr, "CT")


def test_model_card(tiny_run: Path, tmp_path: Path) -> None:
    run = RunFolder(tiny_run)
    card = (tiny_run / "MODEL_CARD.md").read_text()  # written into the run folder by generate
    assert card == build_model_card(run)
    for heading in ("## Model", "## Training data", "## Training budget", "## Evaluation", "## Intended use", "## Known limits"):
        assert heading in card
    assert "Items per split: train 24, val 8" in card and "[0, 1000] HU" in card
    assert "`diffusion`: 0.024 of 0.024 kimg, 3 steps, batch 8" in card and "No evaluation report" in card
    write_report(tmp_path / "eval", Report(inputs={}, metrics={"fid": Metric(value=12.5, floor=3.25)}))
    with_eval = build_model_card(run, evaluation=tmp_path / "eval")
    assert "- fid: 12.5 (real-vs-real floor 3.25)" in with_eval


def test_dicom_refuses_multichannel_models() -> None:
    from imgsynth.errors import UsageError
    from imgsynth.generate.dicom import check_dicom

    rgb = DatasetInfo(spatial_dims=2, shape=[3, 4, 4], intensity=Intensity(kind="none"),
                      conditions=[Condition(name="label", type="categorical", categories=["a"])])
    with pytest.raises(UsageError, match="single-channel"):
        check_dicom(rgb)
