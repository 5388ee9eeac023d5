"""Burned-in text: risky images are quarantined unless allowed or cleaned; Clean Pixel Data blanks
the configured rectangles and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from imgsynth.deid import anonymize_tree

from .conftest import make_ct, read, write


def _run(tmp_path: Path, src: str | Path, keyring, *overrides: str):  # noqa: ANN001, ANN202
    summary = anonymize_tree([src], tmp_path / "out", keyring=keyring, overrides=list(overrides))
    return summary.results[0]


@pytest.mark.parametrize("name,reason", [("US1_UNCR.dcm", "burned-in text risk: Ultrasound"),
                                         ("SC_rgb.dcm", "burned-in text risk: Secondary Capture")])
def test_risky_images_are_quarantined_by_default(name: str, reason: str, tmp_path: Path, keyring) -> None:  # noqa: ANN001
    result = _run(tmp_path, pydicom.data.get_testdata_file(name), keyring)
    assert result["status"] == "quarantined" and result["reason"].startswith(reason)
    assert "pixels.burned_in=allow" in result["reason"]
    assert not list((tmp_path / "out").rglob("*.dcm"))
    allowed = anonymize_tree([pydicom.data.get_testdata_file(name)], tmp_path / "out2", keyring=keyring,
                             overrides=["pixels.burned_in=allow"])
    assert allowed.results[0]["status"] == "done"


def test_burned_in_annotation_yes_is_quarantined(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = write(make_ct(BurnedInAnnotation="YES"), tmp_path / "in" / "a.dcm")
    assert _run(tmp_path, src, keyring)["reason"].startswith("burned-in text risk: BurnedInAnnotation is YES")


RULE = "pixels.clean=[{modality: CT, rows: 4, columns: 4, rectangles: [[0, 0, 2, 1]]}]"


def test_clean_rectangles_in_native_pixels(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = make_ct(BurnedInAnnotation="YES")
    path = write(src, tmp_path / "in" / "a.dcm")
    result = _run(tmp_path, path, keyring, RULE)
    assert result["status"] == "done", result
    out = read(tmp_path / "out" / result["output"])
    before, after = src.pixel_array, out.pixel_array
    assert (after[0, 0:2] == 0).all()
    mask = np.ones_like(before, dtype=bool)
    mask[0, 0:2] = False
    assert (after[mask] == before[mask]).all()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_clean_rectangles_keep_rle_and_decompress_lossy(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    rle = pydicom.data.get_testdata_file("MR_small_RLE.dcm")
    src = pydicom.dcmread(rle)
    rule = "pixels.clean=[{modality: MR, rectangles: [[10, 5, 30, 20]]}]"
    result = _run(tmp_path, rle, keyring, rule)
    out = read(tmp_path / "out" / result["output"])
    assert out.file_meta.TransferSyntaxUID == RLELossless
    a, b = src.pixel_array, out.pixel_array
    assert (b[5:20, 10:30] == 0).all() and (b[20:] == a[20:]).all() and (b[:, 30:] == a[:, 30:]).all()
    jpeg = pydicom.data.get_testdata_file("SC_rgb_jpeg_gdcm.dcm")
    rule = "pixels.clean=[{rectangles: [[0, 0, 8, 8]]}]"
    result = anonymize_tree([jpeg], tmp_path / "out_jpeg", keyring=keyring, overrides=[rule]).results[0]
    out = read(tmp_path / "out_jpeg" / result["output"])
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # a lossy image is never re-compressed
    assert (out.pixel_array[:8, :8] == 0).all() and out.PhotometricInterpretation == "RGB"
    assert any("pixels cleaned" in n for n in result["notes"])
