"""One file: read and check it, de-identify it, encode it, and place it in the output folder.

Every problem becomes an :class:`~imgsynth.errors.InputError` with a one-line reason that names the
problem and never a value from the file (reasons are written inside the output folder).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import DicomDictionary, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

import imgsynth
from imgsynth.errors import InputError

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
IMPLEMENTATION_VERSION = f"IMGSYNTH_{imgsynth.__version__}"[:16]
_UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")
_TAG_IN_TEXT = re.compile(r"\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)")


def _tag_hint(text: str) -> str:
    m = _TAG_IN_TEXT.search(text)
    return f" at ({m.group(1).upper()},{m.group(2).upper()})" if m else ""


def text_value(ds: Dataset, tag: int) -> str:
    """A string element's value as stripped text, decoded straight from its raw bytes when pydicom
    has not converted it yet (for the few attributes read to decide what to do with a file)."""
    elem = ds._dict.get(tag)  # (a plain dict lookup: no Tag conversion)
    if elem is None:
        return ""
    value = elem.value
    if value is None and isinstance(elem, RawDataElement):  # deferred: read it
        value = ds.get_item(tag).value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \x00")
    return "" if value is None else str(value).strip(" \x00")


def describe_error(exc: BaseException) -> str:
    """A one-line reason for an exception that names its kind and tag, never a value or a path."""
    text = str(exc)
    if isinstance(exc, InputError):
        return text
    if isinstance(exc, EOFError) or "end of file" in text.lower() or "truncat" in text.lower():
        return f"truncated file{_tag_hint(text)}"
    if isinstance(exc, MemoryError):
        return "file too large to decode in memory"
    if isinstance(exc, struct.error) or (isinstance(exc, OSError) and text.startswith("No tag to read")):
        return f"truncated file (an element or item header cut short){_tag_hint(text)}"
    if isinstance(exc, ValueError) and "not a transfer syntax" in text:
        return "unknown transfer syntax in the file meta"
    if isinstance(exc, zlib.error):
        return "deflated dataset that cannot be inflated (corrupt, or not deflated as its transfer syntax says)"
    return f"cannot decode DICOM ({type(exc).__name__}{_tag_hint(text)})"


def read_dataset(path: Path) -> tuple[Dataset, list[str]]:
    """Read ``path`` completely; returns the dataset and notes about what was repaired."""
    notes: list[str] = []
    if path.stat().st_size == 0:
        raise InputError("empty file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                raise InputError("not a DICOM file (no DICM prefix and no readable dataset)") from None
            notes.append("no file meta information: rebuilt")
        except Exception as exc:
            raise InputError(describe_error(exc)) from None
        messages = [str(w.message) for w in caught]
    for msg in messages:
        low = msg.lower()
        if "end of file" in low or "truncat" in low or "premature" in low:
            raise InputError(f"truncated file{_tag_hint(msg)}")
        if "expected explicit vr, but found implicit" in low or "expected implicit vr, but found explicit" in low:
            notes.append("transfer syntax in file meta contradicts the encoding: corrected")
    if _meta_value(ds, 0x00020002) == DICOMDIR_SOP_CLASS or 0x00041220 in ds._dict:
        raise InputError("DICOMDIR (media directory), not an instance: rebuild it from the de-identified files")
    try:
        sop_class, sop_instance = text_value(ds, 0x00080016), text_value(ds, 0x00080018)
    except Exception:
        raise InputError("not a DICOM file (unreadable SOP Class/Instance UID)") from None
    if not sop_class or not sop_instance:
        if _byte_swapped(ds):
            raise InputError("byte order of the dataset contradicts its transfer syntax (file meta)")
        if not notes:
            raise InputError("not a composite instance: SOP Class UID or SOP Instance UID missing")
        raise InputError("not a DICOM file (no DICM prefix, no SOP Class/Instance UID)")
    if len(sop_class) > 64 or not _UID_SYNTAX.fullmatch(sop_class):
        raise InputError("SOP Class UID is not a valid UID (it is kept as is, so it must be one)")
    _check_complete(ds, path.stat().st_size)
    _check_pixel_length(ds)
    _match_encoding(ds)
    return ds, notes


_COMMON_GROUPS = frozenset({0x0008, 0x0010, 0x0018, 0x0020, 0x0028})


def _byte_swapped(ds: Dataset) -> bool:
    """Whether the first element's group reads as a common group with its bytes swapped (a
    little-endian dataset read as big-endian, or the reverse)."""
    first = next(iter(ds._dict), None)
    if first is None:
        return False
    group = int(first) >> 16
    return group not in _COMMON_GROUPS and ((group & 0xFF) << 8 | group >> 8) in _COMMON_GROUPS


def _match_encoding(ds: Dataset) -> None:
    """Record the encoding the elements were really read in (a file meta may claim explicit VR for
    an implicit dataset), so that writing them in the file's transfer syntax converts them."""
    # The first element still raw (pydicom converts SpecificCharacterSet while reading).
    first = next((e for e in ds._dict.values() if isinstance(e, RawDataElement)), None)
    if first is not None and (first.is_implicit_VR, first.is_little_endian) != ds.original_encoding:
        ds.set_original_encoding(first.is_implicit_VR, first.is_little_endian, ds.original_character_set)


def _check_complete(ds: Dataset, size: int) -> None:
    """A file cut short leaves its last element shorter than its declared length, or a few bytes
    of an element header that pydicom stops at without a word (``size``: the file's size)."""
    if not len(ds):
        return
    last = next(reversed(ds.keys()))  # elements are read in tag order
    raw = ds.get_item(last, keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
        return
    t = int(last)
    if raw.value is not None and len(raw.value) < raw.length:
        raise InputError(f"truncated file: ({t >> 16:04X},{t & 0xFFFF:04X}) holds {len(raw.value)} of {raw.length} bytes")
    if _meta_value(ds, 0x00020010) == "1.2.840.10008.1.2.1.99":
        return  # deflated: offsets are in the inflated stream
    stray = size - (raw.value_tell + raw.length)
    if 0 < stray < 12:  # less than an element header (12 bytes: anything longer is read as an element)
        raise InputError(f"truncated file: {stray} byte(s) of an element header after ({t >> 16:04X},{t & 0xFFFF:04X})")


def _check_pixel_length(ds: Dataset) -> None:
    """Native pixel data shorter than Rows x Columns x Frames x Samples x Bits means a truncated file."""
    elem = ds.get_item(0x7FE00010)
    if elem is None or elem.value is None:
        return
    ts = _meta_value(ds, 0x00020010)
    if ts and not UID(ts).is_transfer_syntax:  # (without pixel data the encoding read is written)
        raise InputError("unknown transfer syntax in the file meta: cannot tell how the pixel data is encoded")
    encapsulated = elem.length == 0xFFFFFFFF
    if ts and UID(ts).is_compressed:
        if not encapsulated:
            raise InputError("pixel data not encapsulated although the transfer syntax is compressed")
        return
    if ts and encapsulated:
        raise InputError("encapsulated pixel data under an uncompressed transfer syntax")
    try:
        rows, cols, bits = (_int_value(ds, t) for t in (0x00280010, 0x00280011, 0x00280100))
        frames = _int_value(ds, 0x00280008, 1) or 1
        samples = _int_value(ds, 0x00280002, 1) or 1
    except (KeyError, TypeError, ValueError):
        raise InputError("pixel data without a valid Rows/Columns/BitsAllocated description") from None
    if samples == 3 and text_value(ds, 0x00280004) == "YBR_FULL_422":
        samples = 2  # chroma subsampled horizontally: two samples per pixel on average
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if len(elem.value) < expected:
        raise InputError(f"truncated pixel data ({len(elem.value)} of {expected} bytes)")


def _meta_value(ds: Dataset, tag: int) -> str:
    """A file meta string value ("" when there is no file meta or no such element)."""
    meta = getattr(ds, "file_meta", None)
    return text_value(meta, tag) if meta is not None else ""


def _int_value(ds: Dataset, tag: int, default: int | None = None) -> int:
    """An unsigned short (US) or integer string (IS) value, read from the raw bytes when the
    element has not been converted (so that it is still written back byte for byte)."""
    elem = ds._dict.get(tag)
    if elem is None:
        if default is None:
            raise KeyError(tag)
        return default
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes):
        vr = elem.VR or (get_entry(tag)[0] if tag in DicomDictionary else None)
        if vr == "US" and len(raw) == 2:
            return int.from_bytes(raw, "little" if elem.is_little_endian else "big")
        if vr == "IS":
            text = raw.decode("latin-1").strip(" \x00")
            return int(text) if text else (default if default is not None else int(text))
    value = ds[tag].value
    if value is None or value == "":
        if default is None:
            raise ValueError(tag)
        return default
    return int(value)


def transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax to write: the file's own, or the encoding it was actually read with."""
    implicit, little = ds.original_encoding
    actual = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None or not UID(ts).is_transfer_syntax:
        return actual
    ts = UID(ts)
    if not ts.is_compressed and not ts.is_deflated and (ts.is_implicit_VR, ts.is_little_endian) != (implicit, little):
        return actual  # meta contradicts the encoding: keep the encoding the data is really in
    return ts


def prepare_file_meta(ds: Dataset, ts: UID) -> None:
    """Zero preamble and rebuilt file meta (MediaStorageSOPInstanceUID = SOPInstanceUID)."""
    meta = FileMetaDataset()
    for tag, value in ((0x00020002, text_value(ds, 0x00080016)), (0x00020003, text_value(ds, 0x00080018)),
                       (0x00020010, ts), (0x00020012, PYDICOM_IMPLEMENTATION_UID)):
        meta[tag] = DataElement(tag, "UI", value)
    meta[0x00020013] = DataElement(0x00020013, "SH", IMPLEMENTATION_VERSION)
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128


def encode(ds: Dataset, ts: UID) -> bytes:
    """The whole DICOM file as bytes (see :func:`prepare_file_meta`)."""
    from imgsynth.deid.writer import write_file

    buf = io.BytesIO()
    prepare_file_meta(ds, ts)
    write_file(buf, ds, ts)
    return buf.getvalue()


@contextlib.contextmanager
def lenient_values() -> Iterator[None]:
    """Neither validate values read nor values written (a plain read/write copy does neither),
    and keep pydicom's log quiet."""
    settings, logger = pydicom.config.settings, logging.getLogger("pydicom")
    saved = settings.reading_validation_mode, settings.writing_validation_mode, logger.disabled
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    logger.disabled = True  # pydicom logs what it warns about, with values and paths
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode, logger.disabled = saved


def place(out_dir: Path, rel: str, write: Callable[[BinaryIO], None]) -> tuple[str, bool, int]:
    """Write a file at ``out_dir/rel`` with ``write(fh)``, never overwriting another file.

    Returns (relative path, written, size). Identical content already there is not written again
    (``written`` False). Different content under the same name gets ``_1``, ``_2``, ... before the
    suffix. The file appears under its final name only once complete (temporary name + hard link,
    atomic between processes; a plain rename where the file system has no hard links).
    """
    target = out_dir / rel
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        try:
            fh = open(tmp, "wb")  # noqa: SIM115
        except FileNotFoundError:  # the first file of its folder
            target.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115
        with fh:
            write(fh)
        size = tmp.stat().st_size
        stem, suffix = (rel[: -len(Path(rel).suffix)], Path(rel).suffix) if Path(rel).suffix else (rel, "")
        for n in range(1000):
            candidate = rel if n == 0 else f"{stem}_{n}{suffix}"
            path = out_dir / candidate
            try:
                os.link(tmp, path)
                return candidate, True, size
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system (some network mounts): rename instead
                if not path.exists():
                    os.replace(tmp, path)
                    return candidate, True, size
            if path.stat().st_size == size and path.read_bytes() == tmp.read_bytes():
                return candidate, False, size
        raise InputError(f"more than 1000 different files named {rel}")
    finally:
        tmp.unlink(missing_ok=True)
