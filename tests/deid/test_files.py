"""Reading one input: what is corrected, what is quarantined and with which reason. The pixel-length
checks read the raw values (explicit and implicit VR, little and big endian) without converting them."""

from __future__ import annotations

import io
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


def _ct(tmp_path: Path, name: str = "ct.dcm", **save: object) -> Path:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    out = tmp_path / name
    ds.save_as(out, **save)
    return out


def test_meta_claiming_explicit_vr_for_an_implicit_dataset_is_corrected(tmp_path: Path) -> None:
    from pydicom.uid import ExplicitVRLittleEndian

    from imgsynth.deid.files import encode, transfer_syntax

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    assert "SpecificCharacterSet" in ds  # (converted while reading: the check must look past it)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "liar.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, force_encoding=True)
    read, notes = read_dataset(path)
    assert any("contradicts the encoding" in n for n in notes)
    written = pydicom.dcmread(io.BytesIO(encode(read, transfer_syntax(read))))
    assert written.PixelData == ds.PixelData and written.PatientName == ds.PatientName


@pytest.mark.parametrize("kept", [2, 6, 10])
def test_file_cut_inside_the_last_element_header_is_truncated(tmp_path: Path, kept: int) -> None:
    from imgsynth.deid.files import describe_error

    path = _ct(tmp_path)
    header_at = pydicom.dcmread(path).get_item(0x7FE00010).value_tell - 12  # explicit VR OW: 12-byte header
    path.write_bytes(path.read_bytes()[: header_at + kept])
    with pytest.raises(Exception) as info:  # noqa: PT011  (InputError, or pydicom's own error)
        read_dataset(path)
    reason = describe_error(info.value)
    assert reason.startswith("truncated file"), reason


def test_subsampled_ybr_pixel_data_is_not_called_truncated() -> None:
    ds, _ = read_dataset(Path(pydicom.data.get_testdata_file("SC_ybr_full_422_uncompressed.dcm")))
    assert len(ds.PixelData) == ds.Rows * ds.Columns * 2  # 4:2:2, 8 bits: two bytes per pixel


def test_unknown_value_representation_is_quarantined_by_tag(tmp_path: Path) -> None:
    from imgsynth.deid import anonymize_tree

    (tmp_path / "in").mkdir()
    path = _ct(tmp_path / "in")
    data = path.read_bytes()
    needle = b"\x18\x00\x50\x00DS"  # (0018,0050) Slice Thickness, explicit VR little endian
    assert data.count(needle) == 1
    path.write_bytes(data.replace(needle, b"\x18\x00\x50\x00ZZ"))
    summary = anonymize_tree(tmp_path / "in", tmp_path / "out", keyring="k" * 32)
    assert summary.counts["quarantined"] == 1
    assert summary.quarantine_reasons == {"(0018,0050) has an unknown value representation: cannot be checked or kept": 1}


def test_sop_class_uid_that_is_not_a_uid_is_quarantined(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = "SMITH JOHN 1234"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    with pytest.raises(InputError, match="SOP Class UID is not a valid UID"):
        read_dataset(path)


def test_encapsulation_must_match_the_transfer_syntax(tmp_path: Path) -> None:
    path = _ct(tmp_path, implicit_vr=False, little_endian=True)
    data = path.read_bytes()
    explicit = b"1.2.840.10008.1.2.1\x00"
    assert data.count(explicit) == 1  # the file meta's transfer syntax
    path.write_bytes(data.replace(explicit, b"1.2.840.10008.1.2.5\x00"))  # RLE Lossless: same length
    with pytest.raises(InputError, match="not encapsulated although the transfer syntax is compressed"):
        read_dataset(path)


def test_reasons_for_low_level_decoding_errors() -> None:
    import struct
    import zlib

    from imgsynth.deid.files import describe_error

    assert describe_error(struct.error("unpack requires a buffer of 4 bytes")).startswith("truncated file")
    assert describe_error(OSError("No tag to read at file position 1F4")).startswith("truncated file")
    assert describe_error(zlib.error("invalid stored block lengths")).startswith("deflated dataset that cannot be inflated")


@pytest.mark.parametrize(("meta_ts", "reason"), [
    (b"1.2.840.10008.1.2.2\x00", "byte order of the dataset contradicts its transfer syntax"),  # big endian claimed
    (b"1.2.840.10008.9.9.9\x00", "unknown transfer syntax in the file meta"),
])
def test_meta_transfer_syntax_that_does_not_fit(tmp_path: Path, meta_ts: bytes, reason: str) -> None:
    path = _ct(tmp_path, implicit_vr=False, little_endian=True)
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", meta_ts))
    with pytest.raises(InputError, match=reason):
        read_dataset(path)
