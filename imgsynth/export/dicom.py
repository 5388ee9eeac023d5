"""Write an image or volume in physical units as a DICOM series a radiologist's viewer accepts.

One file per slice, Explicit VR Little Endian, fresh UIDs, geometry from the voxel-to-RAS affine
of the dataset contract converted to DICOM's LPS patient frame. Three storage classes:

* **CT Image Storage** for Hounsfield units: signed 16-bit stored values with RescaleSlope /
  RescaleIntercept (slope 1 whenever the HU range fits);
* **MR Image Storage** for scanner units: unsigned 16-bit, values rescaled into 0..65535 unless
  they already are integers that fit (the linear map is kept in RealWorldValueMappingSequence);
* **Secondary Capture Image Storage** for anything else (``modality="OT"``), with RescaleSlope /
  RescaleIntercept back to the physical unit.

Every series is marked: ``synthetic=True`` writes the SYNTHETIC markers (SeriesDescription prefix,
ImageComments with generator provenance, pseudonymous ``SYNTHETIC^<id>`` patient);
``synthetic=False`` writes a de-identified real image (pseudonymous patient given by the caller);
``synthetic=None`` writes an *undisclosed* case of a blinded reader study, marked the same way
whether the pixels are real or synthetic. No attribute is ever copied from a source file: the
series is built from the pixel array alone. Patient identity removal is declared
(PatientIdentityRemoved YES, DeidentificationMethod).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

import imgsynth
from imgsynth.errors import InputError, UsageError

Modality = Literal["CT", "MR", "OT"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "OT": SECONDARY_CAPTURE_IMAGE_STORAGE}

SYNTHETIC_PREFIX = "SYNTHETIC"
UNDISCLOSED_PREFIX = "REVIEW"
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# RAS unit vector of each axis code (nibabel's axcodes: the direction of increasing index).
_CODE_VECTORS = {
    "R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
AXIAL_CODES = ("S", "P", "L")  # [D, H, W]: slices toward S, rows toward P, columns toward L (DICOM axial)


# =============================================================================================
# Geometry
# =============================================================================================
def affine_from_orientation(
    orientation: str, spacing: Sequence[float] | None, origin: Sequence[float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """4x4 voxel-to-RAS affine from axis codes (one letter per array axis, nibabel's convention).

    ``orientation[i]`` names the direction in which the index of array axis ``i`` increases, as
    in the dataset contract (``RAS``: axis 0 toward the patient's right, ...).
    """
    codes = str(orientation).upper()
    spacing = [1.0] * len(codes) if spacing is None else [float(s) for s in spacing]
    if len(codes) != 3 or any(c not in _CODE_VECTORS for c in codes) or sorted({_axis_of(c) for c in codes}) != [0, 1, 2]:
        raise UsageError(f"orientation '{orientation}' must be 3 axis codes covering R/L, A/P and S/I (e.g. RAS)")
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise UsageError(f"spacing {spacing} must be 3 positive numbers (mm)")
    aff = np.eye(4)
    for i, (code, step) in enumerate(zip(codes, spacing, strict=True)):
        aff[:3, i] = np.asarray(_CODE_VECTORS[code]) * step
    aff[:3, 3] = np.asarray(origin, dtype=float)
    return aff


def _axis_of(code: str) -> int:
    return int(np.argmax(np.abs(_CODE_VECTORS[code])))


def reorient(volume: np.ndarray, affine: np.ndarray, codes: Sequence[str] = AXIAL_CODES) -> tuple[np.ndarray, np.ndarray]:
    """Flip/transpose ``volume [D, H, W]`` so its axes point along ``codes``; returns (volume, affine).

    Only axis permutations and flips (no resampling), chosen from the closest axes of the affine;
    the default gives DICOM's usual axial slices (rows toward P, columns toward L).
    """
    import nibabel.orientations as nio

    start = nio.io_orientation(affine)
    end = nio.axcodes2ornt(tuple(codes))
    transform = nio.ornt_transform(start, end)
    out = nio.apply_orientation(volume, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, volume.shape)
    return np.ascontiguousarray(out), new_affine


@dataclass(frozen=True)
class SliceGeometry:
    """DICOM geometry of slice ``index`` (LPS, mm)."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    thickness: float
    location: float


def slice_geometry(affine: np.ndarray, n_slices: int) -> list[SliceGeometry]:
    """Per-slice ImagePositionPatient / ImageOrientationPatient / SliceLocation from a RAS affine.

    Array ``[D, H, W]``: slice ``k`` is ``volume[k]``; its rows run along array axis 1, its
    columns along axis 2. DICOM cannot hold sheared grids, so the three axes must be orthogonal.
    """
    aff = np.asarray(affine, dtype=float)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise UsageError(f"affine must be a finite 4x4 matrix (got shape {aff.shape})")
    axes = RAS_TO_LPS @ aff[:3, :3]  # columns: LPS step of array axes 0 (slice), 1 (row), 2 (column)
    steps = np.linalg.norm(axes, axis=0)
    if np.any(steps <= 0):
        raise UsageError("affine has a zero-length axis; spacing must be positive")
    unit = axes / steps
    for a, b in ((0, 1), (0, 2), (1, 2)):
        if abs(float(unit[:, a] @ unit[:, b])) > 1e-4:
            raise UsageError("affine axes are not orthogonal (sheared grid); DICOM slices cannot represent it")
    row_dir = unit[:, 2]  # direction of increasing column index
    col_dir = unit[:, 1]  # direction of increasing row index
    normal = np.cross(row_dir, col_dir)
    origin = RAS_TO_LPS @ aff[:3, 3]
    iop = tuple(float(v) for v in (*row_dir, *col_dir))
    out = []
    for k in range(n_slices):
        pos = origin + k * axes[:, 0]
        out.append(
            SliceGeometry(
                position=(float(pos[0]), float(pos[1]), float(pos[2])),
                orientation=iop,  # type: ignore[arg-type]
                pixel_spacing=(float(steps[1]), float(steps[2])),
                thickness=float(steps[0]),
                location=float(pos @ normal),
            )
        )
    return out


def patient_orientation(iop: Sequence[float]) -> list[str]:
    """PatientOrientation (row direction, column direction) as letters, e.g. ``['L', 'P']``."""

    def letters(v: Sequence[float]) -> str:
        names = (("L", "R"), ("P", "A"), ("H", "F"))  # LPS: +x left, +y posterior, +z head
        order = np.argsort(-np.abs(np.asarray(v)))
        return "".join(names[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) > 1e-3)[:3]

    return [letters(iop[:3]), letters(iop[3:])]


# =============================================================================================
# UIDs and text
# =============================================================================================
def new_uid(root: str | None = None) -> str:
    """A fresh UID: ``2.25.<uuid4 as integer>`` by default, else ``<root>.<random digits>`` (<= 64 chars)."""
    if root is None:
        return f"2.25.{uuid.uuid4().int}"
    root = root.rstrip(".")
    check_uid_root(root)
    suffix = str(uuid.uuid4().int)[: 63 - len(root)].lstrip("0") or "1"
    return f"{root}.{suffix}"


def check_uid_root(root: str) -> str:
    """Validate an organisation UID root (digits and dots, no leading zeros, <= 40 chars)."""
    if not _UID_RE.match(root) or len(root) > 40:
        raise UsageError(f"uid_root '{root}' must be a dotted numeric UID prefix of at most 40 characters (e.g. 1.2.826.0.1.3680043.10.999)")
    return root


def _text(value: Any, max_len: int) -> str:
    """A DICOM text value: no backslash or control characters, trimmed to the VR's length."""
    clean = re.sub(r"[\x00-\x1f\x7f\\]+", " ", str(value)).strip()
    return clean[:max_len]


def _ds_number(x: float) -> str:
    """A decimal string (VR DS, at most 16 characters) for ``x``."""
    for digits in range(10, 0, -1):
        text = f"{x:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{x:.6e}"[:16]


# =============================================================================================
# Pixel encoding
# =============================================================================================
@dataclass(frozen=True)
class Encoding:
    """How physical values map to stored integers: ``physical = stored * slope + intercept``."""

    signed: bool
    slope: float
    intercept: float

    def encode(self, values: np.ndarray) -> np.ndarray:
        lo, hi = (-32768, 32767) if self.signed else (0, 65535)
        stored = np.rint((np.asarray(values, dtype=np.float64) - self.intercept) / self.slope)
        return np.clip(stored, lo, hi).astype(np.int16 if self.signed else np.uint16)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return stored.astype(np.float64) * self.slope + self.intercept


def choose_encoding(values: np.ndarray, modality: Modality, value_range: tuple[float, float] | None = None) -> Encoding:
    """Slope/intercept for ``values``: exact integers kept as they are, else the range spread over 16 bits.

    ``value_range`` fixes the mapped interval (use the same one for every series of a study so
    that they are encoded alike).
    """
    lo, hi = value_range if value_range is not None else (float(np.min(values)), float(np.max(values)))
    if modality == "CT":
        # Hounsfield units: whole HU in int16 when the range fits, else a coarser step.
        span = max(abs(lo), abs(hi))
        slope = 1.0 if span <= 32767 else float(np.ceil(span / 32767))
        return Encoding(signed=True, slope=slope, intercept=0.0)
    integer = value_range is None and bool(np.all(np.asarray(values) == np.rint(values)))
    if integer and lo >= 0 and hi <= 65535:
        return Encoding(signed=False, slope=1.0, intercept=0.0)
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    return Encoding(signed=False, slope=slope, intercept=lo)


# =============================================================================================
# Writer
# =============================================================================================
def write_series(
    volume: np.ndarray,
    *,
    out_dir: str | Path,
    spacing: Sequence[float] | None = None,
    affine_or_orientation: np.ndarray | str | None = None,
    modality: Modality | Literal["SC"] = "OT",
    unit: str = "",
    series_description: str = "",
    synthetic: bool | None = True,
    provenance: Mapping[str, Any] | None = None,
    uid_root: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient_id: str | None = None,
    study_description: str = "",
    study_id: str = "1",
    series_number: int = 1,
    window: tuple[float, float] | None = None,
    value_range: tuple[float, float] | None = None,
    reorient_axial: bool = True,
    overwrite: bool = False,
    now: _dt.datetime | None = None,
    series_uid: str | None = None,
    first_instance: int = 1,
) -> list[Path]:
    """Write ``volume`` (``[H, W]`` image or ``[D, H, W]`` volume, physical units) as a DICOM series.

    Geometry: ``affine_or_orientation`` is a 4x4 voxel-to-RAS affine (array axes in order) or
    axis codes as in the dataset contract (``"RAS"``: nibabel's convention, the direction each
    array axis increases toward) used with ``spacing`` (mm, one per array axis; default RAS); a
    2D image is one slice with in-plane ``spacing`` and, without an affine, the axial display
    orientation. With ``reorient_axial`` a volume is flipped/transposed (no resampling) into
    axial slices first. ``modality``: ``CT`` (unit HU), ``MR`` or ``OT``/``SC`` (Secondary
    Capture). ``synthetic``: True marks the series SYNTHETIC with
    ``provenance`` (run, checkpoint hash, seed, ...) in ImageComments, False marks a
    de-identified real image, None an undisclosed case of a blinded reader study.
    ``patient_id`` is a pseudonym (``SYNTHETIC^<patient_id>`` for synthetic series; by default
    derived from the study UID, so series sharing ``study_uid`` share the patient). ``window`` =
    (centre, width) in physical units. ``value_range`` fixes the stored-value mapping so that
    several series share it. UIDs are fresh (under ``uid_root`` if given); pass ``study_uid`` /
    ``frame_of_reference_uid`` to put several series in one study (and ``series_uid`` /
    ``first_instance``, the InstanceNumber of the first slice, to add files to a series). The series is written into a
    temporary folder and renamed onto ``out_dir`` (which must be absent or empty unless
    ``overwrite``); returns the slice files in order.
    """
    vol = np.asarray(volume)
    if vol.ndim not in (2, 3) or min(vol.shape) < 1:
        raise UsageError(f"volume must be [H, W] or [D, H, W] (got shape {vol.shape})")
    if not np.issubdtype(vol.dtype, np.number) or not np.all(np.isfinite(vol)):
        raise InputError("volume holds non-finite or non-numeric values; cannot encode as DICOM")
    modality = "OT" if modality == "SC" else modality
    if modality not in SOP_CLASS:
        raise UsageError(f"modality '{modality}' must be one of CT, MR, OT (or SC)")
    if modality == "CT" and unit and unit.upper() != "HU":
        raise UsageError(f"CT series need Hounsfield units (unit is '{unit}'); use modality MR or OT")
    if uid_root is not None:
        check_uid_root(uid_root.rstrip("."))
    vol3, aff = _volume_and_affine(vol, spacing=spacing, geometry=affine_or_orientation)
    if reorient_axial and vol.ndim == 3:
        vol3, aff = reorient(vol3, aff)
    geometry = slice_geometry(aff, vol3.shape[0])
    enc = choose_encoding(vol3, modality, value_range)

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(f"{out_dir}: DICOM output folder is not empty; choose a new folder or pass overwrite")
    now = now or _dt.datetime.now()
    series = _SeriesHeader(
        modality=modality,
        unit=unit,
        synthetic=synthetic,
        provenance=dict(provenance or {}),
        series_description=series_description,
        study_description=study_description,
        study_id=study_id,
        series_number=int(series_number),
        patient_id=patient_id,
        study_uid=study_uid or new_uid(uid_root),
        series_uid=series_uid or new_uid(uid_root),
        frame_uid=frame_of_reference_uid or new_uid(uid_root),
        uid_root=uid_root,
        window=window,
        encoding=enc,
        now=now,
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        names = []
        for k, geo in enumerate(geometry):
            ds = series.slice_dataset(vol3[k], geo, first_instance + k)
            name = f"IM{k + 1:04d}.dcm"
            ds.save_as(staging / name, enforce_file_format=True)
            names.append(name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / n for n in names]


def _volume_and_affine(
    vol: np.ndarray, *, spacing: Sequence[float] | None, geometry: np.ndarray | str | None
) -> tuple[np.ndarray, np.ndarray]:
    """``[D, H, W]`` view of the input and its 4x4 RAS affine."""
    orientation = geometry if isinstance(geometry, str) else None
    if geometry is not None and orientation is None:
        aff = np.asarray(geometry, dtype=float)
        if aff.shape != (4, 4):
            raise UsageError(f"affine must be 4x4 (got {aff.shape})")
        return (vol[None] if vol.ndim == 2 else vol), aff
    if vol.ndim == 2:
        row, col = (1.0, 1.0) if spacing is None else (float(spacing[-2]), float(spacing[-1]))
        if len(spacing or (1, 1)) != 2 or row <= 0 or col <= 0:
            raise UsageError(f"2D spacing {spacing} must be 2 positive numbers (row, column) in mm")
        # One axial slice: rows toward P (+y LPS), columns toward L (+x LPS); in RAS: -y, -x.
        aff = np.diag([1.0, 1.0, 1.0, 1.0])
        aff[:3, :3] = np.array([[0.0, 0.0, -col], [0.0, -row, 0.0], [1.0, 0.0, 0.0]])
        return vol[None], aff
    if spacing is not None and len(spacing) != 3:
        raise UsageError(f"3D spacing {list(spacing)} must have 3 values (mm)")
    return vol, affine_from_orientation(orientation or "RAS", spacing)


@dataclass
class _SeriesHeader:
    modality: Modality
    unit: str
    synthetic: bool | None
    provenance: dict[str, Any]
    series_description: str
    study_description: str
    study_id: str
    series_number: int
    patient_id: str | None
    study_uid: str
    series_uid: str
    frame_uid: str
    uid_root: str | None
    window: tuple[float, float] | None
    encoding: Encoding
    now: _dt.datetime

    def _marking(self) -> tuple[str, str, str, str]:
        """(patient name, patient id, description prefix, de-identification method)."""
        # Without a given pseudonym, one derived from the study UID: every series of a study agrees.
        pid = _text(self.patient_id or hashlib.sha256(self.study_uid.encode()).hexdigest()[:12].upper(), 48)
        if self.synthetic is True:
            return f"SYNTHETIC^{pid}", f"SYNTHETIC-{pid}", SYNTHETIC_PREFIX, "imgsynth synthetic image: no patient data"
        if self.synthetic is None:
            return (f"REVIEW^{pid}", f"REVIEW-{pid}", UNDISCLOSED_PREFIX,
                    "imgsynth reader study: pixels only, new identifiers")
        if not self.patient_id:
            raise UsageError("a de-identified real series needs a pseudonymous patient_id")
        return f"ANONYMOUS^{pid}", pid, "", "imgsynth: pixels only, no source attributes kept"

    def _comments(self) -> str:
        prov = "; ".join(f"{k}={v}" for k, v in self.provenance.items())
        if self.synthetic is True:
            head = f"SYNTHETIC IMAGE generated by a model (imgsynth {imgsynth.__version__}); not a real patient"
        elif self.synthetic is None:
            head = "READER STUDY CASE: real or synthetic (undisclosed); not for clinical use"
        else:
            head = "De-identified image rebuilt from pixel data only; not for clinical use"
        return _text(f"{head}. {prov}" if prov else head, 10240)

    def slice_dataset(self, pixels: np.ndarray, geo: SliceGeometry, number: int) -> Any:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence as DicomSequence
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

        sop_uid = new_uid(self.uid_root)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASS[self.modality]
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = _text(f"IMGSYNTH_{imgsynth.__version__}", 16)

        ds = Dataset()
        ds.file_meta = meta
        date, time = self.now.strftime("%Y%m%d"), self.now.strftime("%H%M%S")
        name, pid, prefix, method = self._marking()
        # SOP Common.
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = SOP_CLASS[self.modality]
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        # Patient (pseudonymous) and de-identification.
        ds.PatientName = name
        ds.PatientID = pid
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = _text(method, 64)
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = DicomSequence([code])
        # General Study.
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate, ds.StudyTime = date, time
        ds.ReferringPhysicianName = ""
        ds.StudyID = _text(self.study_id, 16) or "1"
        ds.AccessionNumber = ""
        ds.StudyDescription = _text(self.study_description or f"{prefix or 'DEIDENTIFIED'} imgsynth", 64)
        # General Series.
        ds.Modality = self.modality
        ds.SeriesInstanceUID = self.series_uid
        ds.SeriesNumber = self.series_number
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.Laterality = ""
        if self.modality != "OT":
            ds.PatientPosition = ""
        desc = " ".join(p for p in (prefix, _text(self.series_description, 64)) if p)
        ds.SeriesDescription = _text(desc, 64)
        # Frame of Reference.
        ds.FrameOfReferenceUID = self.frame_uid
        ds.PositionReferenceIndicator = ""
        # General Equipment (+ SC Equipment).
        ds.Manufacturer = "imgsynth"
        ds.ManufacturerModelName = "imgsynth"
        ds.SoftwareVersions = imgsynth.__version__
        if self.modality == "OT":
            ds.ConversionType = "SYN" if self.synthetic is True else "WSD"
        # General Image.
        ds.InstanceNumber = number
        ds.ContentDate, ds.ContentTime = date, time
        value3 = {"CT": ["AXIAL"], "MR": ["OTHER"], "OT": []}[self.modality]
        ds.ImageType = ["DERIVED", "SECONDARY", *value3]
        ds.DerivationDescription = _text(
            "Synthetic image from a generative model" if self.synthetic is True
            else "Rebuilt from pixel data with new identifiers", 1024)
        ds.ImageComments = self._comments()
        ds.BurnedInAnnotation = "NO"
        ds.PatientOrientation = patient_orientation(geo.orientation)
        # Image Plane.
        ds.ImagePositionPatient = [_ds_number(v) for v in geo.position]
        ds.ImageOrientationPatient = [_ds_number(round(v, 8)) for v in geo.orientation]
        ds.PixelSpacing = [_ds_number(v) for v in geo.pixel_spacing]
        ds.SliceThickness = _ds_number(geo.thickness)
        ds.SliceLocation = _ds_number(geo.location)
        # Image Pixel.
        stored = self.encoding.encode(pixels)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if self.encoding.signed else 0
        ds.PixelData = np.ascontiguousarray(stored).astype("<i2" if self.encoding.signed else "<u2").tobytes()
        ds.SmallestImagePixelValue = int(stored.min())
        ds.LargestImagePixelValue = int(stored.max())
        self._modality_attributes(ds)
        return ds

    def _modality_attributes(self, ds: Any) -> None:
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        enc = self.encoding
        if self.modality == "CT":
            ds.RescaleIntercept = _ds_number(enc.intercept)
            ds.RescaleSlope = _ds_number(enc.slope)
            ds.RescaleType = "HU"
            ds.KVP = ""
            ds.AcquisitionNumber = 1
        elif self.modality == "MR":
            ds.ScanningSequence = "RM"  # research mode: no acquisition behind these pixels
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "3D"
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
            ds.RepetitionTime = ""
            ds.SpacingBetweenSlices = ds.SliceThickness
            ds.AcquisitionNumber = 1
            mapping = Dataset()
            mapping.RealWorldValueFirstValueMapped = 0
            mapping.RealWorldValueLastValueMapped = 65535
            mapping.RealWorldValueSlope = enc.slope
            mapping.RealWorldValueIntercept = enc.intercept
            mapping.LUTExplanation = _text(f"stored value to {self.unit or 'scanner units'}", 64)
            mapping.LUTLabel = "IMGSYNTH"
            unit_code = Dataset()
            unit_code.CodeValue = _text(self.unit or "1", 16)
            unit_code.CodingSchemeDesignator = "UCUM"
            unit_code.CodeMeaning = _text(self.unit or "no units", 64)
            mapping.MeasurementUnitsCodeSequence = DicomSequence([unit_code])
            ds.RealWorldValueMappingSequence = DicomSequence([mapping])
        else:
            ds.RescaleIntercept = _ds_number(enc.intercept)
            ds.RescaleSlope = _ds_number(enc.slope)
            ds.RescaleType = _text(self.unit or "US", 16) if self.unit and self.unit.isascii() else "US"
        if self.window is not None:
            centre, width = float(self.window[0]), float(self.window[1])
            if self.modality == "MR":  # no Modality LUT: the window applies to stored values
                centre, width = (centre - enc.intercept) / enc.slope, width / enc.slope
            ds.WindowCenter = _ds_number(centre)
            ds.WindowWidth = _ds_number(max(width, 1.0))
            ds.WindowCenterWidthExplanation = "DATASET"
