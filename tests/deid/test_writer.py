"""The direct writer writes exactly the bytes pydicom's ``dcmwrite`` writes, over the whole corpus."""

from __future__ import annotations

import copy
import io
import os
import struct
import warnings
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from imgsynth.deid.actions import Deidentifier
from imgsynth.deid.config import DeidConfig
from imgsynth.deid.files import lenient_values, prepare_file_meta, read_dataset, transfer_syntax
from imgsynth.deid.writer import write_file
from imgsynth.errors import InputError

from .conftest import make_ct


def _both(ds: Dataset, ts) -> tuple[bytes | type, bytes | type]:  # noqa: ANN001
    """Our bytes and pydicom's for the same dataset (each writer gets its own copy: dcmwrite
    converts elements in place); an exception's type where a writer refuses it."""
    prepare_file_meta(ds, ts)
    out: list[bytes | type] = []
    for write in (lambda d, fh: write_file(fh, d, ts), lambda d, fh: d.save_as(fh, enforce_file_format=True)):
        fh = io.BytesIO()
        try:
            write(copy.deepcopy(ds), fh)
            out.append(fh.getvalue())
        except Exception as exc:  # noqa: BLE001
            out.append(type(exc))
    return out[0], out[1]


def test_corpus_bytes_equal_dcmwrite(corpus_roots: list[Path], keyring) -> None:  # noqa: ANN001
    """Every corpus file, as read and after de-identification: the same bytes as ``save_as``."""
    deid = Deidentifier(DeidConfig(), keyring)
    compared = 0
    with warnings.catch_warnings(), lenient_values():
        warnings.simplefilter("ignore")
        for root in corpus_roots:
            for dirpath, _dirs, names in os.walk(root):
                for name in sorted(names):
                    path = Path(dirpath) / name
                    for deidentify in (False, True):
                        try:
                            ds, _notes = read_dataset(path)
                            ts = transfer_syntax(ds)
                            if deidentify:
                                deid.deidentify(ds)
                        except InputError:
                            break  # quarantined by deid: never written
                        ours, theirs = _both(ds, ts)  # where pydicom refuses it, so must we (same error)
                        assert ours == theirs, f"{path.name} (de-identified: {deidentify})"
                        compared += isinstance(ours, bytes)
    assert compared > 300


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_other_encodings_and_nested_sequences(ts, keyring) -> None:  # noqa: ANN001
    """Converted datasets, big endian, deflate, new and nested sequence items, odd pixel lengths."""
    ds = make_ct()
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "1", "DCM", "x"
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = "1.2.3.4"
    outer.ConceptNameCodeSequence = [inner]
    ds.ReferencedImageSequence = [outer, Dataset()]
    ds.PixelData = b"\x01\x02\x03"
    raw = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.file_meta.TransferSyntaxUID = ts
        ds.save_as(raw, enforce_file_format=True)
        raw.seek(0)
        from pydicom import dcmread

        back = dcmread(raw)
        for item in (ds, back):
            Deidentifier(DeidConfig(), keyring).deidentify(item)
            ours, theirs = _both(item, ts)
            assert ours == theirs


# Raw files pydicom will not write itself: Pixel Data that dcmwrite converts before writing.
_EVLE, _IVLE, _EVBE, _JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"
_LONG = {"OB", "OW", "UN", "SQ", "UT"}


def _element(tag: int, vr: str, value: bytes, *, implicit: bool, little: bool, length: int | None = None) -> bytes:
    e = "<" if little else ">"
    n = len(value) if length is None else length
    if implicit:
        return struct.pack(e + "HHL", tag >> 16, tag & 0xFFFF, n) + value
    if vr in _LONG:
        return struct.pack(e + "HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, n) + value
    return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), n) + value


def _raw_file(ts: str, pixels: tuple[str, bytes, int | None], *, implicit: bool = False, little: bool = True) -> bytes:
    meta = b"".join(_element(t, vr, v, implicit=False, little=True) for t, vr, v in (
        (0x00020001, "OB", b"\x00\x01"), (0x00020002, "UI", b"1.2.840.10008.5.1.4.1.1.7\x00"),
        (0x00020003, "UI", b"1.2.3.4\x00"), (0x00020010, "UI", ts.encode() + b"\x00" * (len(ts) % 2)),
    ))
    head = b"\x00" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<L", len(meta)), implicit=False, little=True)
    us = "<H" if little else ">H"
    body = b"".join(_element(t, vr, v, implicit=implicit, little=little) for t, vr, v in (
        (0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.7\x00"), (0x00080018, "UI", b"1.2.3.4\x00"),
        (0x00280002, "US", struct.pack(us, 1)), (0x00280004, "CS", b"MONOCHROME2 "),
        (0x00280010, "US", struct.pack(us, 3)), (0x00280011, "US", struct.pack(us, 1)),
        (0x00280100, "US", struct.pack(us, 8)),
    ))
    vr, value, length = pixels
    return head + meta + body + _element(0x7FE00010, vr, value, implicit=implicit, little=little, length=length)


_ENCAPSULATED = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00\x01\x02\x03\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00"


@pytest.mark.parametrize(("ts", "implicit", "little", "pixels"), [
    (_EVLE, False, True, ("OB", b"\x01\x02\x03", None)),  # odd length: padded
    (_IVLE, True, True, ("OB", b"\x01\x02\x03", None)),
    (_EVBE, False, False, ("OB", b"\x01\x02\x03", None)),
    (_EVLE, False, True, ("UN", b"\x01\x02\x03\x04", None)),  # VR UN: resolved
    (_JPEG, False, True, ("OB", b"\x01\x02\x03\x04", None)),  # not encapsulated: refused
    (_EVLE, False, True, ("OB", _ENCAPSULATED, 0xFFFFFFFF)),  # encapsulated under a native syntax
], ids=["odd-explicit", "odd-implicit", "odd-big-endian", "UN", "defined-under-jpeg", "encapsulated-under-native"])
def test_pixel_data_that_dcmwrite_converts(ts: str, implicit: bool, little: bool, pixels) -> None:  # noqa: ANN001
    import pydicom

    with warnings.catch_warnings(), lenient_values():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(_raw_file(ts, pixels, implicit=implicit, little=little)))
        ours, theirs = _both(ds, transfer_syntax(ds))
    assert ours == theirs
