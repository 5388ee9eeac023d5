"""The direct writer writes exactly the bytes pydicom's ``dcmwrite`` writes, over the whole corpus."""

from __future__ import annotations

import io
import os
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


def _both(ds: Dataset, ts) -> tuple[bytes, bytes]:  # noqa: ANN001
    prepare_file_meta(ds, ts)
    ours = io.BytesIO()
    write_file(ours, ds, ts)
    theirs = io.BytesIO()
    ds.save_as(theirs, enforce_file_format=True)
    return ours.getvalue(), theirs.getvalue()


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
                        try:
                            ours, theirs = _both(ds, ts)
                        except Exception as exc:  # noqa: BLE001
                            # pydicom refuses it: so must the direct writer (via pydicom's own path)
                            with pytest.raises(type(exc)):
                                write_file(io.BytesIO(), ds, ts)
                            continue
                        assert ours == theirs, f"{path.name} (de-identified: {deidentify})"
                        compared += 1
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
