"""Shared fixtures of the deid tests: a key, the real corpus roots, small synthetic datasets."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from imgsynth.deid.keys import Keyring

KEY = "test-key-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    return Keyring(KEY)


@pytest.fixture(scope="session")
def corpus_roots() -> list[Path]:
    """pydicom's own test files and pydicom-data's files: the two roots of the real corpus."""
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    data_store = Path(pydicom.__file__).parent.parent / "data_store" / "data"
    roots = [p for p in (test_files, data_store) if p.is_dir()]
    if len(roots) < 2:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    return roots


def make_ct(**values: object) -> Dataset:
    """A small valid CT image dataset with a file meta; ``values`` set or override attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.2.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.3.1"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.4.1"
    ds.Modality = "CT"
    ds.PatientName = "SMITHERSON^JOHNATHAN"
    ds.PatientID = "PID7731942"
    ds.PatientBirthDate = "19610412"
    ds.PatientSex = "M"
    ds.StudyDate = "20200315"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC4455667"
    ds.InstitutionName = "SAINT HILDEGARD CLINIC"
    ds.ReferringPhysicianName = "WELBYMARCUS^ALFRED"
    ds.Manufacturer = "ACME"
    ds.Rows, ds.Columns = 4, 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


def read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)
