"""Write a de-identified dataset as a DICOM file, byte for byte what pydicom's ``dcmwrite`` writes.

De-identification keeps most elements as read (pydicom's raw elements). ``dcmwrite`` copies each
raw value twice through an intermediate buffer and, for a pixel data element of hundreds of
megabytes, that costs more than de-identifying the file. :func:`write_file` writes the header of a
raw element and then its value straight to the file; everything else (elements the profile
changed, datasets whose encoding or character set must be converted, deflated transfer syntaxes)
goes through pydicom's own writer, so the bytes are the same as ``ds.save_as(fh,
enforce_file_format=True)`` (a test compares them over the whole corpus).
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


class _Encoder:
    """Element headers for one transfer syntax encoding."""

    def __init__(self, implicit: bool, little: bool) -> None:
        self.implicit, self.little = implicit, little
        e = "<" if little else ">"
        self._tag_len = struct.Struct(e + "HHL")
        self._short = struct.Struct(e + "HH2sH")
        self._long = struct.Struct(e + "HH2sHL")

    def tag_length(self, tag: int, length: int) -> bytes:
        return self._tag_len.pack(tag >> 16, tag & 0xFFFF, length)

    def header(self, tag: int, vr: str, length: int) -> bytes | None:
        """The element header, or None where pydicom's writer must decide (it may raise or use UN)."""
        if self.implicit:
            return self._tag_len.pack(tag >> 16, tag & 0xFFFF, length)
        if not vr or len(vr) != 2:
            return None
        if vr in _LONG_VRS:
            return self._long.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), 0, length)
        if length > 0xFFFF:
            return None
        return self._short.pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)

    def buffer(self) -> DicomBytesIO:
        buf = DicomBytesIO()
        buf.is_implicit_VR, buf.is_little_endian = self.implicit, self.little
        return buf


def write_file(fh: BinaryIO, ds: Dataset, ts: UID) -> None:
    """Write ``ds`` (its ``file_meta`` already built for ``ts``, preamble set) as a DICOM file."""
    enc = _Encoder(ts.is_implicit_VR, ts.is_little_endian)
    for tag in (0x00080016, 0x00080018):  # dcmwrite reads (so converts) these two to check the meta
        ds.get(tag)
    pixels = ds._dict.get(PIXEL_DATA)
    if pixels is not None and not (isinstance(pixels, RawDataElement) and _raw_pixels_as_is(pixels, enc, ts.is_compressed)):
        # dcmwrite converts Pixel Data and flags its length by the transfer syntax (then pads an odd
        # length, resolves UN, and refuses unencapsulated data under a compressed syntax): the same.
        ds[PIXEL_DATA].is_undefined_length = ts.is_compressed
    fh.write(ds.preamble or b"\x00" * 128)
    fh.write(b"DICM")
    fh.write(_file_meta_bytes(cast(FileMetaDataset, ds.file_meta)))
    if ts == DeflatedExplicitVRLittleEndian:
        chunks: list[bytes] = []
        _write_dataset(chunks.append, ds, enc, default_encoding, ts.is_compressed)
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        deflated = compressor.compress(b"".join(chunks)) + compressor.flush()
        fh.write(deflated + (b"\x00" if len(deflated) % 2 else b""))
    else:
        _write_dataset(fh.write, ds, enc, default_encoding, ts.is_compressed)


_META_TAGS = {0x00020002: "UI", 0x00020003: "UI", 0x00020010: "UI", 0x00020012: "UI", 0x00020013: "SH"}
_META_HEAD = struct.Struct("<HH2sH")


def _file_meta_bytes(meta: FileMetaDataset) -> bytes:
    """The File Meta Information group (explicit VR little endian, with its group length)."""
    values = {int(t): meta.get_item(t).value for t in list(meta._dict)}
    if set(values) != set(_META_TAGS) or not all(isinstance(v, str) and v and v.isascii() for v in values.values()):
        buf = DicomBytesIO()  # not the meta prepare_file_meta builds: pydicom validates and writes it
        buf.is_implicit_VR, buf.is_little_endian = False, True
        write_file_meta_info(buf, meta, enforce_standard=True)
        return buf.getvalue()
    body = [struct.pack("<HH2sHL", 2, 1, b"OB", 0, 2), b"\x00\x01"]
    for tag, vr in _META_TAGS.items():
        data = str(values[tag]).encode("ascii")
        if len(data) % 2:
            data += b"\x00" if vr == "UI" else b" "
        body += [_META_HEAD.pack(2, tag & 0xFFFF, vr.encode("ascii"), len(data)), data]
    group = b"".join(body)
    return _META_HEAD.pack(2, 0, b"UL", 4) + struct.pack("<L", len(group)) + group


def _write_dataset(write, ds: Dataset, enc: _Encoder, parent_encoding, compressed: bool) -> None:  # noqa: ANN001
    """pydicom's ``write_dataset``, with raw elements written directly."""
    if (enc.implicit, enc.little) != ds.original_encoding or ds.original_character_set != ds._character_set:
        buf = enc.buffer()  # pydicom converts every element of this dataset: let it
        write_dataset(buf, ds, parent_encoding)
        write(buf.getvalue())
        return
    encodings = ds.get("SpecificCharacterSet", parent_encoding)  # (converted, as pydicom does)
    elements = ds._dict  # (looked up with plain ints: no Tag conversion per element)
    for t in sorted(map(int, elements)):
        if t & 0xFFFF == 0 and t >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        elem = elements[t]
        if isinstance(elem, RawDataElement) and elem.value is None:
            elem = ds.get_item(t)  # a deferred value: read it
        if isinstance(elem, RawDataElement) and elem.value is not None and _write_raw(write, elem, enc, compressed):
            continue
        if isinstance(elem, DataElement):
            if elem.VR == "SQ" and not elem.is_buffered:
                _write_sequence(write, elem, enc, encodings)
                continue
            data = _ascii_value(elem)
            if data is not None:
                header = enc.header(t, elem.VR, len(data))
                if header is not None:
                    write(header)
                    write(data)
                    continue
        buf = enc.buffer()
        write_data_element(buf, elem, encodings)
        write(buf.getvalue())


# VRs whose values are ASCII whatever the character set, and their padding byte.
_ASCII_PAD = {"UI": b"\x00", "CS": b" ", "DA": b" ", "TM": b" ", "DT": b" ", "AS": b" ", "AE": b" "}


def _ascii_value(elem: DataElement) -> bytes | None:
    """The encoded value of a plain-string element of an ASCII VR (what pydicom writes); None
    for anything else, which pydicom's writer handles."""
    pad = _ASCII_PAD.get(elem.VR)
    if pad is None or elem.is_undefined_length:
        return None
    value = elem.value
    if value is None:
        return b""
    if isinstance(value, str):
        text = value
    elif isinstance(value, MultiValue) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _write_raw(write, elem: RawDataElement, enc: _Encoder, compressed: bool) -> bool:  # noqa: ANN001
    """Write a raw element as read; False where pydicom's writer has to handle it."""
    value = cast(bytes, elem.value)
    undefined = elem.length == _UNDEFINED
    if elem.tag == PIXEL_DATA and not _raw_pixels_as_is(elem, enc, compressed):
        return False  # pydicom's writer converts it (nested pixel data: it writes it as read)
    header = enc.header(elem.tag, elem.VR or "", _UNDEFINED if undefined else len(value))
    if header is None:
        return False
    write(header)
    write(value)
    if undefined:
        write(enc.tag_length(_SEQUENCE_DELIMITER, 0))
    return True


def _raw_pixels_as_is(elem: RawDataElement, enc: _Encoder, compressed: bool) -> bool:
    """Whether raw Pixel Data written as read gives the bytes dcmwrite's conversion gives."""
    value = elem.value
    if value is None:
        return False  # deferred
    undefined = elem.length == _UNDEFINED
    if undefined != compressed or len(value) % 2 or (not enc.implicit and elem.VR not in ("OB", "OW")):
        return False
    return not undefined or value.startswith(b"\xfe\xff\x00\xe0" if enc.little else b"\xff\xfe\xe0\x00")


def _write_sequence(write, elem: DataElement, enc: _Encoder, encodings) -> None:  # noqa: ANN001
    """pydicom's sequence writing (defined item lengths unless an item was read undefined)."""
    parts: list[bytes] = []
    item_encodings = convert_encodings(encodings or [default_encoding])
    for item in cast(list[Dataset], elem.value or []):
        body: list[bytes] = []
        _write_dataset(body.append, item, enc, item_encodings, False)
        data = b"".join(body)
        if getattr(item, "is_undefined_length_sequence_item", False):
            parts += [enc.tag_length(_ITEM, _UNDEFINED), data, enc.tag_length(_ITEM_DELIMITER, 0)]
        else:
            parts += [enc.tag_length(_ITEM, len(data)), data]
    value = b"".join(parts)
    undefined = elem.is_undefined_length
    header = enc.header(elem.tag, "SQ", _UNDEFINED if undefined else len(value))
    assert header is not None  # SQ has a 32-bit length in every encoding
    write(header)
    write(value)
    if undefined:
        write(enc.tag_length(_SEQUENCE_DELIMITER, 0))
