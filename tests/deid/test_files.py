"""Reading one input: the checks that quarantine broken pixel data read the raw values (explicit
and implicit VR, little and big endian) without converting them."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from imgsynth.deid.files import _int_value, read_dataset
from imgsynth.errors import InputError

SOURCES = ("CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "emri_small.dcm")


@pytest.mark.parametrize("name", SOURCES)
def test_raw_integer_values_match_pydicom(name: str) -> None:
    path = Path(pydicom.data.get_testdata_file(name))
    ds, _ = read_dataset(path)
    for tag in (0x00280010, 0x00280011, 0x00280100, 0x00280002):
        assert isinstance(ds._dict[tag], RawDataElement)  # not converted by the check
        assert _int_value(ds, tag) == int(pydicom.dcmread(path)[tag].value)
    expected_frames = int(pydicom.dcmread(path).get("NumberOfFrames", 1) or 1)
    assert (_int_value(ds, 0x00280008, 1) or 1) == expected_frames
    with pytest.raises(KeyError):
        _int_value(ds, 0x00280009)  # absent, no default


@pytest.mark.parametrize("name", SOURCES)
def test_pixel_data_shorter_than_described_is_quarantined(tmp_path: Path, name: str) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name))
    ds.Rows = int(ds.Rows) * 2  # the pixel data now holds half of what the header describes
    out = tmp_path / name
    ds.save_as(out)
    with pytest.raises(InputError, match=r"truncated pixel data \(\d+ of \d+ bytes\)"):
        read_dataset(out)


def test_pixel_data_without_rows_is_quarantined(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    del ds.Rows
    out = tmp_path / "norows.dcm"
    ds.save_as(out)
    with pytest.raises(InputError, match="without a valid Rows/Columns/BitsAllocated"):
        read_dataset(out)
