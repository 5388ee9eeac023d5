"""De-identification of one dataset everywhere in it: nesting, private and repeating groups,
attributes outside the table, file meta, references, pixels, the de-identification marks."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imgsynth.deid import anonymize_tree
from imgsynth.deid.actions import Deidentifier
from imgsynth.deid.config import DeidConfig
from imgsynth.deid.profile import Option
from imgsynth.errors import ConfigError

from .conftest import make_ct, read, write


def _deid(ds: Dataset, keyring, **cfg) -> Dataset:  # noqa: ANN001
    out = copy.deepcopy(ds)
    Deidentifier(DeidConfig(**cfg), keyring).deidentify(out)
    return out


def _strings(ds: Dataset) -> str:
    """Every value of every element, nested included, as one text."""
    parts = []
    for elem in ds.iterall():
        if elem.VR != "SQ":
            parts.append(elem.value.decode("latin-1") if isinstance(elem.value, bytes) else str(elem.value))
    return "\n".join(parts).upper()


def test_identifiers_are_removed_at_every_depth(keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    inner = Dataset()
    inner.CodeMeaning = "Follow-up of Smitherson PID7731942"  # unlisted text holding identifiers
    inner.PersonName = "SMITHERSON^JOHNATHAN"  # (0040,A123) D
    inner.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.9.9"
    middle = Dataset()
    middle.ConceptNameCodeSequence = Sequence([inner])
    ds.AnatomicRegionSequence = Sequence([Dataset()])
    ds.AnatomicRegionSequence[0].ContentSequence = Sequence([middle])  # depth 3
    out = _deid(ds, keyring)
    text = _strings(out)
    for phi in ("SMITHERSON", "JOHNATHAN", "PID7731942", "ACC4455667", "SAINT HILDEGARD", "WELBYMARCUS", "19610412",
                "20200315", "1.2.826.0.1.3680043.2.1125"):
        assert phi not in text, phi
    deep = out.AnatomicRegionSequence[0].ContentSequence[0].ConceptNameCodeSequence[0]
    assert deep.CodeMeaning == "Follow-up of"
    assert deep.PersonName == "ANONYMIZED"
    assert deep.ReferencedSOPInstanceUID == keyring.uid("1.2.826.0.1.3680043.2.1125.9.9")
    assert out.Manufacturer == "ACME"  # public vocabulary is kept


def test_private_attributes_removed_everywhere_by_default(keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")
    item = Dataset()
    item.private_block(0x0029, "ACME 1.1", create=True).add_new(0x10, "LO", "SMITHERSON")
    ds.AnatomicRegionSequence = Sequence([item])
    out = _deid(ds, keyring)
    assert not [e for e in out.iterall() if e.tag.is_private]


def test_retain_safe_private_keeps_only_the_safe_list(keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")  # B_value: safe
    siemens.add_new(0x0E, "FD", [0.0, 0.7, 0.7])  # DiffusionGradientDirection: safe
    siemens.add_new(0x09, "LO", "SMITHERSON")  # not on the list
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"SMITHERSON\x00")
    out = _deid(ds, keyring, options=[Option.RETAIN_SAFE_PRIVATE])
    private = {int(e.tag): e.value for e in out if e.tag.is_private}
    creator = next(t for t, v in private.items() if v == "SIEMENS MR HEADER")
    block = (creator & 0xFF) << 8
    assert private == {creator: "SIEMENS MR HEADER", 0x00190000 | block | 0x0C: "1000",
                       0x00190000 | block | 0x0E: [0.0, 0.7, 0.7]}
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert "113111" in codes


def test_overlays_and_curves_removed_whole_unless_clean_graphics(keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 4)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff\x00")
    ds.add_new(0x60004000, "LT", "marked by SMITHERSON")
    ds.add_new(0x50000005, "US", 1)
    out = _deid(ds, keyring)
    assert not [e for e in out if 0x5000 <= e.tag.group <= 0x601E]
    kept = _deid(ds, keyring, options=[Option.CLEAN_GRAPHICS])
    assert kept[0x60003000].value == b"\xff\x00" and kept[0x60000010].value == 4
    assert kept[0x60004000].value == "marked by"  # Overlay Comments: C, cleaned of the patient's name


def test_unlisted_attributes_policy(keyring) -> None:  # noqa: ANN001
    ds = make_ct(BodyPartExamined="SMITHERSON", ConvolutionKernel="B30F PID7731942", SliceThickness="1.25")
    ds.MultiFrameSourceSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.8.8"  # unlisted instance UID
    ds.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # a class UID: kept
    out = _deid(ds, keyring)
    assert out.BodyPartExamined == "ANONYMIZED"  # nothing left after cleaning: a dummy keeps it valid
    assert out.ConvolutionKernel == "B30F"
    assert out.MultiFrameSourceSOPInstanceUID == keyring.uid("1.2.826.0.1.3680043.2.1125.8.8")
    assert out.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.SliceThickness == 1.25
    removed = _deid(ds, keyring, unlisted_text="remove")
    assert "ConvolutionKernel" not in removed and "BodyPartExamined" in removed  # CS is cleaned, not removed


def test_class_uids_that_are_not_uids_are_replaced(keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    item = Dataset()
    item.ReferencedSOPClassUID = "SMITHERSON JOHNATHAN"  # free text where a class UID belongs
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedInstanceSequence = Sequence([item])  # (unlisted: kept and walked)
    ds.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    for options in ([], [Option.RETAIN_UIDS]):
        out = _deid(ds, keyring, options=options)
        assert out.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # a real class UID: kept
        nested = out.ReferencedInstanceSequence[0].ReferencedSOPClassUID
        assert nested == keyring.uid("SMITHERSON JOHNATHAN")
        assert "SMITHERSON" not in _strings(out)


def test_unknown_public_attribute_in_implicit_vr_is_removed(keyring) -> None:  # noqa: ANN001
    from pydicom.datadict import dictionary_has_tag

    assert not dictionary_has_tag(0x0022FFF0)
    ds = make_ct()
    ds.add_new(0x0022FFF0, "UN", b"SMITHERSON")
    out = _deid(ds, keyring)
    assert 0x0022FFF0 not in out


def test_marks_and_codes(keyring) -> None:  # noqa: ANN001
    out = _deid(make_ct(), keyring, options=[Option.RETAIN_LONG_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS])
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod.startswith("imgsynth")
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100", "113105", "113107"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert _deid(make_ct(), keyring).LongitudinalTemporalInformationModified == "REMOVED"


def test_patient_pseudonyms_and_date_offsets_are_per_patient(keyring) -> None:  # noqa: ANN001
    opts = {"options": [Option.RETAIN_LONG_MODIFIED_DATES]}
    a1 = _deid(make_ct(StudyDate="20200315"), keyring, **opts)
    a2 = _deid(make_ct(StudyDate="20210101", SOPInstanceUID="1.2.3.99"), keyring, **opts)
    b = _deid(make_ct(PatientID="OTHER998877", StudyDate="20200315"), keyring, **opts)
    assert a1.PatientID == a2.PatientID == a1.PatientName != b.PatientID
    assert a1.PatientID.startswith("ANON") and len(a1.PatientID) == 16
    day = lambda s: dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))  # noqa: E731
    assert day(a2.StudyDate) - day(a1.StudyDate) == day("20210101") - day("20200315")
    assert -3650 <= (day(a1.StudyDate) - day("20200315")).days <= -365
    assert a1.StudyTime == "101500"  # times are kept: shifts are whole days
    assert "PatientBirthDate" in a1 and not a1.PatientBirthDate  # Z in every column


def test_references_between_files_still_link(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    image = make_ct()
    ko = make_ct(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.59", SOPInstanceUID="1.2.826.0.1.3680043.2.1125.7.7",
                 Modality="KO")
    for attr in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                 "PixelRepresentation", "PhotometricInterpretation"):
        delattr(ko, attr)
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([ref])
    evidence = Dataset()
    evidence.StudyInstanceUID = image.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([series])
    ko.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    write(image, tmp_path / "in" / "a.dcm")
    write(ko, tmp_path / "in" / "b.dcm")
    summary = anonymize_tree(tmp_path / "in", tmp_path / "out", keyring=keyring)
    outs = {Path(r["path"]).name: read(tmp_path / "out" / r["output"]) for r in summary.results}
    a, b = outs["a.dcm"], outs["b.dcm"]
    ev = b.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.StudyInstanceUID == a.StudyInstanceUID == b.StudyInstanceUID != image.StudyInstanceUID
    assert ev.ReferencedSeriesSequence[0].SeriesInstanceUID == a.SeriesInstanceUID
    assert ev.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.FrameOfReferenceUID == keyring.uid(image.FrameOfReferenceUID)


def test_file_meta_preamble_and_transfer_syntax(tmp_path: Path, keyring) -> None:  # noqa: ANN001
    ds = make_ct()
    ds.preamble = b"SMITHERSON JOHNATHAN".ljust(128, b"\x00")
    ds.file_meta.SourceApplicationEntityTitle = "WARD7_PACS"
    write(ds, tmp_path / "in" / "x.dcm")
    summary = anonymize_tree(tmp_path / "in", tmp_path / "out", keyring=keyring)
    path = tmp_path / "out" / summary.results[0]["output"]
    out = read(path)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == keyring.uid(ds.SOPInstanceUID)
    assert out.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert path.read_bytes()[:128] == b"\x00" * 128
    assert out.PixelData == ds.PixelData


@pytest.mark.parametrize("name", [
    "CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm", "image_dfl.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_gdcm.dcm", "emri_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg.dcm",  # its file meta says explicit VR, its dataset is implicit VR
    "ExplVR_LitEndNoMeta.dcm",  # no file meta at all: rebuilt
])
def test_pixel_data_byte_identical_and_transfer_syntax_kept(name: str, tmp_path: Path, keyring) -> None:  # noqa: ANN001
    src = pydicom.data.get_testdata_file(name)
    summary = anonymize_tree([src], tmp_path / "out", keyring=keyring, overrides=["pixels.burned_in=allow"])
    result = summary.results[0]
    assert result["status"] == "done", result
    inp = pydicom.dcmread(src, force=True)
    out = pydicom.dcmread(tmp_path / "out" / result["output"])  # a complete file: no force needed
    if "TransferSyntaxUID" in inp.file_meta:
        assert out.file_meta.TransferSyntaxUID == inp.file_meta.TransferSyntaxUID
    else:
        assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # the encoding it was read in
    assert out.get("PixelData") == inp.get("PixelData")
    assert out.get("Rows") == inp.get("Rows") and out.get("Columns") == inp.get("Columns")


def test_config_overrides_take_precedence(keyring) -> None:  # noqa: ANN001
    out = _deid(make_ct(PatientSex="F"), keyring, actions={"PatientID": "K", "PatientSex": "K", "(0008,0070)": "X"})
    assert out.PatientID == "PID7731942" and out.PatientSex == "F" and "Manufacturer" not in out
    assert out.PatientName.family_name.startswith("ANON")
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        _deid(make_ct(), keyring, actions={"PatientNmae": "K"})


def test_values_of_a_removed_sequence_are_cleaned_from_kept_text(keyring) -> None:  # noqa: ANN001
    ds = make_ct(ConvolutionKernel="RPID55667788")  # unlisted text echoing an identifier
    request = Dataset()
    request.RequestedProcedureID = "RPID55667788"
    ds.RequestAttributesSequence = Sequence([request])  # X: removed with everything in it
    out = _deid(ds, keyring)
    assert "RequestAttributesSequence" not in out and "RPID55667788" not in _strings(out)


def test_ideographic_and_compound_names_are_cleaned_from_kept_text(keyring) -> None:  # noqa: ANN001
    ds = make_ct(SpecificCharacterSet="ISO_IR 192", PatientName="YAMADAKUN^TARO=山田花子^太郎=やまだ^たろう",
                 ConvolutionKernel="山田花子 B30f")
    out = _deid(ds, keyring)
    assert "山田花子" not in _strings(out) and "B30F" in _strings(out)
    out = _deid(make_ct(PatientName="O'BRIEN-SMYTHE^MARY ANNE", BodyPartExamined="SMYTHE"), keyring)
    assert "SMYTHE" not in _strings(out)


@pytest.mark.parametrize("charset", ["ISO_IR 100", ""])
def test_identifying_values_in_kept_binary_data_refuse_the_file(keyring, charset: str) -> None:  # noqa: ANN001
    from imgsynth.errors import InputError

    name = "MÜLLERSOHN^JÖRGEN" if charset else "RICHARDSON^GWENDOLYN"
    ds = make_ct(SpecificCharacterSet=charset, PatientName=name)
    ds.add_new(0x00281201, "OW", (name + " ").encode("latin-1"))  # a palette lookup table holding the name
    with pytest.raises(InputError, match=r"\(0028,1201\) holds the value of PatientName in binary data"):
        _deid(ds, keyring)
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "OW", b"PID7731942 LUT ")  # the patient ID, inside a sequence item
    ds = make_ct(ModalityLUTSequence=Sequence([lut]))
    with pytest.raises(InputError, match=r"\(0028,3006\) holds the value of PatientID"):
        _deid(ds, keyring)
    ds = make_ct()
    ds.add_new(0x00281201, "OW", bytes(range(256)) * 4)  # ordinary binary data: kept
    assert _deid(ds, keyring)[0x00281201].value == bytes(range(256)) * 4
