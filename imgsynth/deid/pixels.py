"""Burned-in text: the risk test and Clean Pixel Data (blanking configured rectangles).

An image is *at risk* when it says so (BurnedInAnnotation or RecognizableVisualFeatures YES), or
when its SOP class or modality is one where text is commonly burned into the pixels (ultrasound,
secondary capture, video, screenshots) or whose content cannot be checked (encapsulated documents).
At-risk images are quarantined unless the config allows them (``pixels.burned_in: allow``) or a
``pixels.clean`` rule matching the image gives rectangles to blank. Cleaning decodes the pixels,
sets the rectangles to zero in every frame and sample, and stores them again: natively for an
uncompressed transfer syntax, re-encoded for RLE Lossless, otherwise as Explicit VR Little Endian
(a lossy image is never re-compressed lossily). The audit says which.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless

from imgsynth.deid.config import CleanRule, PixelsConfig
from imgsynth.deid.files import text_value

PIXEL_DATA = 0x7FE00010


def _text(ds: Dataset, keyword: str) -> str:
    return text_value(ds, tag_for_keyword(keyword)).upper()


def pixel_risk(ds: Dataset, cfg: PixelsConfig) -> str | None:
    """Why ``ds`` may carry identifying text in its pixels or content (one line), or None."""
    if _text(ds, "BurnedInAnnotation") == "YES":
        return "burned-in text risk: BurnedInAnnotation is YES"
    if _text(ds, "RecognizableVisualFeatures") == "YES":
        return "recognizable visual features: RecognizableVisualFeatures is YES"
    sop = text_value(ds, 0x00080016)
    if sop in cfg.risky_sop_classes:
        kind = "identifying content risk" if sop.startswith("1.2.840.10008.5.1.4.1.1.104.") else "burned-in text risk"
        return f"{kind}: {UID(sop).name or sop}"
    modality = _text(ds, "Modality")
    if modality and modality in {m.upper() for m in cfg.risky_modalities}:
        return f"burned-in text risk: modality {modality}"
    return None


def matching_rule(ds: Dataset, rules: list[CleanRule]) -> CleanRule | None:
    """The first rule whose every given field matches ``ds`` (and that has pixel data to clean)."""
    if PIXEL_DATA not in ds:
        return None
    for rule in rules:
        if rule.modality is not None and _text(ds, "Modality") != rule.modality.upper():
            continue
        if rule.manufacturer is not None and _text(ds, "Manufacturer") != rule.manufacturer.upper():
            continue
        if rule.model is not None and _text(ds, "ManufacturerModelName") != rule.model.upper():
            continue
        if rule.rows is not None and ds.get("Rows") != rule.rows:
            continue
        if rule.columns is not None and ds.get("Columns") != rule.columns:
            continue
        return rule
    return None


def clean_pixels(ds: Dataset, rule: CleanRule, ts: UID) -> UID:
    """Blank ``rule``'s rectangles in every frame of ``ds`` (stored in ``ts``); returns the
    transfer syntax the cleaned pixels must be written in."""
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        from pydicom.dataset import FileMetaDataset

        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    arr = ds.pixel_array.copy()  # [H, W], [H, W, S], [F, H, W] or [F, H, W, S]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    view = arr if frames > 1 else arr[None]
    if samples == 1 and view.ndim == 3:
        view = view[..., None]  # [F, H, W, S]
    for x0, y0, x1, y1 in rule.rectangles:
        view[:, y0:y1, x0:x1, :] = 0
    if not ts.is_compressed:
        ds.PixelData = arr.tobytes() if ds.get("BitsAllocated") != 1 else _pack_bits(arr)
        return ts
    if ts == RLELossless:
        ds.compress(RLELossless, arr, encoding_plugin="pydicom")
        return RLELossless
    ds.PixelData = arr.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds["PixelData"].is_undefined_length = False
    ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
    if "PhotometricInterpretation" in ds and str(ds.PhotometricInterpretation).startswith("YBR") and samples == 3:
        ds.PhotometricInterpretation = "RGB"  # pydicom decodes YCbCr JPEG to RGB
    return ExplicitVRLittleEndian


def _pack_bits(arr) -> bytes:  # noqa: ANN001
    from pydicom.pixels.utils import pack_bits

    return pack_bits(arr)
