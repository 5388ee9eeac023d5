"""DICOM series -> :class:`Volume`: header scan, series assembly, pixel decoding and geometry.

1. :func:`scan_file` reads one file's header (pixel data deferred) into :class:`Frame` records,
   one per frame (classic single-frame images give one; enhanced multi-frame objects one per
   frame from their per-frame and shared functional groups). Non-image objects (SR, RT plans,
   ECG, presentation states, ...) give a reason instead.
2. :func:`group_series` groups frames by SeriesInstanceUID, then splits where orientation, matrix,
   pixel spacing, echo, temporal position, stack or diffusion weighting differ; frames that still
   share a position are split by AcquisitionNumber, and otherwise refused as a mixed series.
3. :func:`load_series` decodes the pixels (compressed transfer syntaxes through pydicom's
   plugins), applies RescaleSlope/Intercept (CT in HU), sorts slices along the normal, refuses
   missing slices, and tilt-corrects / equalises irregular stacks (:mod:`geometry`).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.data.config import DicomOptions
from imgsynth.data.geometry import (
    missing_slices,
    native_affine,
    resample_stack,
    stack_geometry,
    stack_to_volume,
)
from imgsynth.data.volume import Volume, short_message
from imgsynth.errors import InputError

# Objects without an image to learn from, by Modality.
NON_IMAGE_MODALITIES = {
    "SR": "structured report",
    "RTPLAN": "RT plan",
    "RTSTRUCT": "RT structure set",
    "RTRECORD": "RT treatment record",
    "RTDOSE": "RT dose grid",
    "ECG": "ECG waveform",
    "HD": "haemodynamic waveform",
    "AU": "audio",
    "PR": "presentation state",
    "KO": "key object selection",
    "SEG": "segmentation",
    "REG": "registration",
    "DOC": "encapsulated document",
    "PLAN": "plan",
    "RWV": "real world value map",
}
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# Series-level fields kept for subjects, labels and the CSV join (never written as such).
SERIES_FIELDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "SeriesNumber",
    "Modality",
    "BodyPartExamined",
    "PatientSex",
    "PatientAge",
)


@dataclass
class Frame:
    """One 2D frame of a DICOM file with what is needed to place it in a volume."""

    path: str
    index: int | None  # frame number in a multi-frame file (0-based); None for single-frame files
    series_uid: str
    rows: int
    cols: int
    samples: int = 1
    iop: list[float] | None = None
    ipp: list[float] | None = None
    spacing: list[float] | None = None  # PixelSpacing: [between rows, between columns]
    thickness: float | None = None
    slope: float = 1.0
    intercept: float = 0.0
    instance: int | None = None
    acquisition: str = ""
    split_key: str = ""  # echo / temporal position / stack / b-value

    def group_key(self) -> tuple[Any, ...]:
        iop = tuple(round(v, 4) for v in self.iop) if self.iop else None
        spacing = tuple(round(v, 5) for v in self.spacing) if self.spacing else None
        return (self.series_uid, iop, self.rows, self.cols, self.samples, spacing, self.split_key)


@dataclass
class FileHeader:
    """What :func:`scan_file` learns from one file."""

    path: str
    series_uid: str = ""
    frames: list[Frame] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    skip: str | None = None  # reason this file holds no usable image


@dataclass
class SeriesGroup:
    """Frames that form one volume (a series, or a part of one), with its series-level fields."""

    frames: list[Frame]
    fields: dict[str, str]
    part: str = ""  # why a series was split ("echo 2", "acquisition 3", ...)
    error: str | None = None
    skipped_files: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        return sorted({f.path for f in self.frames}) or self.skipped_files


def _float(value: Any, default: float | None = None) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _floats(value: Any, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _item(seq_parent: Any, seq: str) -> Any:
    value = getattr(seq_parent, seq, None) if seq_parent is not None else None
    return value[0] if value else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def scan_file(path: str | Path, keywords: Iterable[str] = ()) -> FileHeader | None:
    """Read one file's header; None when it is not DICOM (or is a DICOMDIR)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = str(path)
    try:
        ds = pydicom.dcmread(path, defer_size="2 KB")
    except (InvalidDicomError, OSError, EOFError):
        return None
    except Exception as exc:  # a DICOM file whose header cannot be parsed
        return FileHeader(path=path, skip=f"unreadable DICOM header ({type(exc).__name__})")
    meta_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if meta_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        return None
    fields = {k: _text(ds.get(k)) for k in (*SERIES_FIELDS, *keywords)}
    head = FileHeader(path=path, series_uid=fields["SeriesInstanceUID"], fields=fields)
    modality = fields["Modality"].upper()
    if modality in NON_IMAGE_MODALITIES:
        head.skip = f"non-image object ({NON_IMAGE_MODALITIES[modality]}, Modality {modality})"
        return head
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    if not has_pixels or "Rows" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", "") or str(ds.get("SOPClassUID", "unknown SOP class"))
        head.skip = f"non-image object ({sop}): no pixel data"
        return head
    try:
        head.frames = _frames(ds, path)
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        head.skip = f"unreadable image header ({exc})"
    return head


def _frames(ds: Any, path: str) -> list[Frame]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    series_uid = _text(ds.get("SeriesInstanceUID"))
    instance = int(ds.InstanceNumber) if _float(ds.get("InstanceNumber")) is not None else None
    acquisition = _text(ds.get("AcquisitionNumber"))
    n_frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    top_iop = _floats(ds.get("ImageOrientationPatient"), 6)
    top_ipp = _floats(ds.get("ImagePositionPatient"), 3)
    top_spacing = _floats(ds.get("PixelSpacing"), 2)
    top_thick = _float(ds.get("SpacingBetweenSlices")) or _float(ds.get("SliceThickness"))
    slope = _float(ds.get("RescaleSlope"), 1.0) or 1.0
    intercept = _float(ds.get("RescaleIntercept"), 0.0) or 0.0
    echo = _text(ds.get("EchoNumbers")) or _text(ds.get("EchoTime"))
    temporal = _text(ds.get("TemporalPositionIdentifier")) or _text(ds.get("TriggerTime"))
    bvalue = _text(ds.get("DiffusionBValue"))

    if n_frames == 1 and per_frame is None:
        key = "|".join(f"{k}={v}" for k, v in (("echo", echo), ("time", temporal), ("b", bvalue)) if v)
        return [
            Frame(path, None, series_uid, rows, cols, samples, top_iop, top_ipp, top_spacing, top_thick,
                  slope, intercept, instance, acquisition, key)
        ]

    # Multi-frame: per-frame functional groups override the shared ones (PS3.3 C.7.6.16).
    offsets = _floats(ds.get("GridFrameOffsetVector"), n_frames) if per_frame is None else None
    frames = []
    for i in range(n_frames):
        groups = [per_frame[i] if per_frame is not None and i < len(per_frame) else None, shared]

        def find(seq: str, attr: str, groups: list[Any] = groups) -> Any:
            for g in groups:
                item = _item(g, seq)
                if item is not None and attr in item:
                    return item.get(attr)
            return None

        iop = _floats(find("PlaneOrientationSequence", "ImageOrientationPatient"), 6) or top_iop
        ipp = _floats(find("PlanePositionSequence", "ImagePositionPatient"), 3)
        if ipp is None and offsets is not None and top_ipp is not None and iop is not None:
            normal = np.cross(iop[:3], iop[3:])
            ipp = list(np.asarray(top_ipp) + offsets[i] * normal)
        if ipp is None and n_frames == 1:
            ipp = top_ipp
        spacing = _floats(find("PixelMeasuresSequence", "PixelSpacing"), 2) or top_spacing
        thick = _float(find("PixelMeasuresSequence", "SpacingBetweenSlices")) or _float(
            find("PixelMeasuresSequence", "SliceThickness")
        ) or top_thick
        f_slope = _float(find("PixelValueTransformationSequence", "RescaleSlope"), slope) or slope
        f_inter = _float(find("PixelValueTransformationSequence", "RescaleIntercept"), intercept)
        parts = [
            ("stack", _text(find("FrameContentSequence", "StackID"))),
            ("time", _text(find("FrameContentSequence", "TemporalPositionIndex"))),
            ("echo", _text(find("MREchoSequence", "EffectiveEchoTime")) or echo),
            ("b", _text(find("MRDiffusionSequence", "DiffusionBValue")) or bvalue),
        ]
        key = "|".join(f"{k}={v}" for k, v in parts if v)
        frames.append(
            Frame(path, i, series_uid, rows, cols, samples, iop, ipp, spacing, thick,
                  f_slope, intercept if f_inter is None else f_inter, instance, acquisition, key)
        )
    return frames


# ---------------------------------------------------------------------------------------------
# Series assembly
# ---------------------------------------------------------------------------------------------
def group_series(headers: Iterable[FileHeader]) -> list[SeriesGroup]:
    """Group frames into volumes; series of non-image files come back with ``error`` set."""
    by_key: dict[tuple[Any, ...], list[Frame]] = defaultdict(list)
    fields_of: dict[str, dict[str, str]] = {}
    skipped: dict[str, list[FileHeader]] = defaultdict(list)
    for head in headers:
        if head.skip is not None:
            skipped[head.series_uid or head.path].append(head)
            continue
        fields_of.setdefault(head.series_uid, head.fields)
        for frame in head.frames:
            by_key[frame.group_key()].append(frame)

    groups: list[SeriesGroup] = []
    per_series: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for key in by_key:
        per_series[key[0]].append(key)
    for series_uid, keys in per_series.items():
        keys.sort(key=lambda k: (len(by_key[k]) * -1, str(k)))
        for n, key in enumerate(keys):
            part = _part_label(key, keys, n)
            for sub, sub_part in _split_acquisitions(by_key[key]):
                label = ", ".join(p for p in (part, sub_part) if p)
                groups.append(SeriesGroup(sub, fields_of[series_uid], label))
    for heads in skipped.values():
        reasons = sorted({h.skip or "" for h in heads})
        more = f" (+{len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        groups.append(
            SeriesGroup([], heads[0].fields, "", reasons[0] + more, sorted(h.path for h in heads))
        )
    return groups


def _part_label(key: tuple[Any, ...], keys: list[tuple[Any, ...]], n: int) -> str:
    if len(keys) == 1:
        return ""
    differs = []
    names = ("series", "orientation", "rows", "columns", "samples", "pixel spacing", "")
    for i, name in enumerate(names[1:], start=1):
        if len({k[i] for k in keys}) > 1:
            differs.append(key[6] if i == 6 else name)
    return f"part {n + 1}/{len(keys)} ({'; '.join(d for d in differs if d)})"


def _split_acquisitions(frames: list[Frame]) -> list[tuple[list[Frame], str]]:
    """Keep frames together unless positions repeat; then split by AcquisitionNumber if that helps."""
    if not _has_duplicates(frames):
        return [(frames, "")]
    by_acq: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        by_acq[f.acquisition].append(f)
    if len(by_acq) > 1 and not any(_has_duplicates(fs) for fs in by_acq.values()):
        return [(fs, f"acquisition {acq or '?'}") for acq, fs in sorted(by_acq.items())]
    return [(frames, "")]


def _has_duplicates(frames: list[Frame]) -> bool:
    positions = [tuple(round(v, 3) for v in f.ipp) for f in frames if f.ipp is not None]
    return len(positions) != len(set(positions))


# ---------------------------------------------------------------------------------------------
# Loading a group as a volume
# ---------------------------------------------------------------------------------------------
def check_group(group: SeriesGroup, opts: DicomOptions) -> None:
    """Header-only checks (before any pixel is decoded)."""
    frames = group.frames
    modality = group.fields.get("Modality", "").upper()
    if opts.modalities is not None and modality not in {m.upper() for m in opts.modalities}:
        raise InputError(f"modality {modality or '(none)'} not in dicom.modalities {opts.modalities}")
    if frames[0].samples != 1:
        raise InputError(f"colour images (SamplesPerPixel {frames[0].samples}) are not supported")
    if any(f.iop is None or f.ipp is None for f in frames):
        raise InputError("no plane geometry (ImagePositionPatient/ImageOrientationPatient): not a cross-sectional image")
    if any(f.spacing is None for f in frames):
        raise InputError("no PixelSpacing")
    row, col = np.asarray(frames[0].iop[:3]), np.asarray(frames[0].iop[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise InputError(f"invalid ImageOrientationPatient {frames[0].iop} (not two orthogonal unit vectors)")
    if len(frames) < opts.min_slices:
        raise InputError(f"{len(frames)} slice(s), fewer than dicom.min_slices={opts.min_slices}")
    if _has_duplicates(frames):
        n = len(frames) - len({tuple(round(v, 3) for v in f.ipp) for f in frames})
        raise InputError(f"mixed series: {n} slice(s) repeat a position of another (same SeriesInstanceUID, not separable)")


def read_pixels(frames: list[Frame]) -> np.ndarray:
    """Decode frames to physical values ``[n, rows, cols]`` (float32, RescaleSlope/Intercept applied)."""
    import pydicom

    out = np.empty((len(frames), frames[0].rows, frames[0].cols), dtype=np.float32)
    by_path: dict[str, list[int]] = defaultdict(list)
    for n, f in enumerate(frames):
        by_path[f.path].append(n)
    for path, slots in by_path.items():
        name = os.path.basename(path)
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception as exc:
            raise InputError(f"undecodable pixel data in {name}: {short_message(exc)}") from None
        n_frames = int(_float(ds.get("NumberOfFrames"), 1) or 1)
        if n_frames > 1 and pixels.ndim == 2:
            pixels = pixels[None]
        for slot in slots:
            f = frames[slot]
            arr = pixels[f.index] if f.index is not None and pixels.ndim == 3 else pixels
            if arr.shape != (f.rows, f.cols):
                raise InputError(f"{name}: frame shape {list(arr.shape)} differs from Rows/Columns {[f.rows, f.cols]}")
            if "ModalityLUTSequence" in ds and f.index is None:
                from pydicom.pixels import apply_modality_lut

                out[slot] = apply_modality_lut(arr, ds).astype(np.float32)
            else:
                out[slot] = (arr.astype(np.float64) * f.slope + f.intercept).astype(np.float32)
    return out


def load_series(group: SeriesGroup, opts: DicomOptions) -> Volume:
    """Assemble one series group as a volume in physical units with its RAS affine."""
    check_group(group, opts)
    frames = group.frames
    iop = np.asarray(frames[0].iop)
    ipps = np.asarray([f.ipp for f in frames])
    thickness = frames[0].thickness
    order, geo = stack_geometry(iop, ipps, tuple(frames[0].spacing), thickness)
    frames = [frames[i] for i in order]
    tol = opts.spacing_tolerance
    missing = missing_slices(geo, tol)
    if missing:
        numbers = [f.instance for f in frames if f.instance is not None]
        jump = ""
        if len(numbers) == len(frames):
            k = int(np.argmax(geo.gaps))
            jump = f" (InstanceNumber {numbers[k]} -> {numbers[k + 1]})"
        raise InputError(f"missing slice(s): about {missing} slice(s) absent from a regular {np.median(geo.gaps):.3g} mm stack{jump}")
    stack = read_pixels(frames)
    notes: list[str] = []
    regular = geo.regular(tol)
    if geo.tilted and opts.tilt == "error":
        raise InputError(f"gantry tilt {geo.tilt_degrees:.1f} deg; set dicom.tilt: correct to resample it")
    if not regular and opts.uneven == "error":
        gaps = geo.gaps
        raise InputError(f"uneven slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); set dicom.uneven: resample")
    if geo.tilted and opts.tilt == "shear" and not regular:
        raise InputError("gantry tilt with uneven spacing cannot be kept as a sheared affine; set dicom.tilt: correct")
    if (geo.tilted and opts.tilt == "correct") or not regular or opts.resample_spacing is not None:
        resampled, affine = resample_stack(stack, geo, regular=regular, spacing=opts.resample_spacing)
        if geo.tilted:
            notes.append(f"gantry tilt {geo.tilt_degrees:.2f} deg corrected (in-plane shift per slice, bilinear)")
        if not regular:
            gaps = geo.gaps
            notes.append(
                f"uneven slice gaps {gaps.min():.3g}..{gaps.max():.3g} mm equalised to "
                f"{np.linalg.norm(affine[:3, 2]):.4g} mm ({resampled.shape[0]} slices, linear)"
            )
        stack = resampled
    else:
        affine = native_affine(geo, ipps[order])
        if geo.tilted:
            notes.append(f"gantry tilt {geo.tilt_degrees:.2f} deg kept as a sheared affine")
    modality = group.fields.get("Modality", "").upper()
    return Volume(
        image=stack_to_volume(stack),
        affine=affine,
        modality=modality,
        unit="HU" if modality == "CT" else "",
        notes=notes,
    )


def frames_to_json(frames: list[Frame]) -> list[dict[str, Any]]:
    return [asdict(f) for f in frames]


def frames_from_json(data: list[dict[str, Any]]) -> list[Frame]:
    return [Frame(**d) for d in data]
