"""Schema of ``kind: preprocess`` configs (pydantic only: importing this never loads torch).

The defaults are the sensible choice for every kind of input: DICOM and NIfTI volumes become a
3D dataset in RAS orientation at native spacing with an intensity mapping picked by modality
(``auto``: a CT window in HU for CT, per-volume percentiles otherwise); MedMNIST ``.npz`` files keep
their official splits and are padded to 32x32. Built-in configs (``configs/preprocess_*.yaml``)
list only what differs.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from imgsynth.config import ConfigBase, register_config

PLANES = ("axial", "coronal", "sagittal")
Plane = Literal["axial", "coronal", "sagittal"]

# Condition sources that need no argument, with the condition type they produce.
BUILTIN_SOURCES: dict[str, str] = {
    "modality": "categorical",  # DICOM Modality (NIfTI: nifti.modality)
    "body_part": "categorical",  # DICOM BodyPartExamined
    "sex": "categorical",  # DICOM PatientSex (M, F, O)
    "age": "continuous",  # DICOM PatientAge in years ("045Y", "006M", "010W", "003D")
    "plane": "categorical",  # slice plane of a 2D item (axial, coronal, sagittal)
    "position": "continuous",  # relative slice level 0..1 along its axis (2D items)
    "slice_mm": "continuous",  # world coordinate of a 2D slice along its axis (RAS mm)
}
# DICOM keywords never usable as a condition: they identify people, places or instances.
_IDENTIFYING = re.compile(
    r"(Name|ID|IDs|UID|Date|DateTime|Time|Address|Telephone|Institution|Physician|Operator|Comments|"
    r"BirthDate|Accession|Station|DeviceSerialNumber|OtherPatient)$"
)


class DicomOptions(ConfigBase):
    """How DICOM files are grouped into series and how irregular geometry is handled."""

    modalities: list[str] | None = Field(
        default=None, description="Keep only these modalities (e.g. [CT]); None keeps every cross-sectional image."
    )
    min_slices: int = Field(default=2, ge=1, description="Series with fewer slices are skipped (listed).")
    tilt: Literal["correct", "shear", "error"] = Field(
        default="correct",
        description="Gantry tilt: resample onto an orthogonal grid (correct), keep the sheared affine (shear, "
        "regular spacing only) or refuse (error).",
    )
    uneven: Literal["resample", "error"] = Field(
        default="resample", description="Unevenly spaced slices: equalise by linear interpolation, or refuse."
    )
    resample_spacing: float | None = Field(
        default=None,
        gt=0,
        description="Slice spacing (mm) when equalising; default as dcm2niix: the smallest gap, at most 2x slices.",
    )
    spacing_tolerance: float = Field(
        default=0.01, gt=0, description="Relative deviation of slice gaps still treated as regular."
    )


class NiftiOptions(ConfigBase):
    volume: int | None = Field(default=None, ge=0, description="4D inputs: the volume to take (0-based); required.")
    prefer: Literal["sform", "qform"] = Field(default="sform", description="Which coded transform wins when both are set.")
    subject_pattern: str | None = Field(
        default=None,
        description="Regex on the input's relative path giving its subject (group 1 or the match), e.g. 'sub-[^/_]+'; "
        "default: every file is its own subject.",
    )
    modality: str = Field(default="MR", description="Modality assumed for NIfTI inputs (intensity 'auto', conditions).")

    @field_validator("subject_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value


class MaskSpec(ConfigBase):
    """A mask condition built from aligned maps: one channel per named map."""

    channels: list[str] = Field(
        min_length=1,
        description="Channel maps: NIfTI file suffixes (image 'x.nii.gz' + '_gm' -> 'x_gm.nii.gz') or the maps of "
        "a built-in input (nilearn:mni152 offers gm, wm, brain).",
    )
    interpolation: Literal["nearest", "linear"] = Field(
        default="nearest", description="nearest for label maps, linear for probability maps."
    )


class SpatialOptions(ConfigBase):
    orientation: str | None = Field(default="RAS", description="Axis codes to reorient to; None keeps the input's.")
    spacing: list[float] | None = Field(
        default=None, description="Target voxel size in mm per axis (0 keeps that axis); None keeps native spacing."
    )
    crop_foreground: bool = False
    foreground_threshold: float | None = Field(
        default=None,
        description="crop_foreground keeps voxels above this, in model scale [-1, 1] (physical units when "
        "intensity.kind is none); default -1 (anything above the background).",
    )
    margin: int = Field(default=0, ge=0, description="Voxels kept around the foreground box.")
    size: list[int] | None = Field(
        default=None, description="Pad (with the background) or centre-crop to this size; -1 keeps an axis."
    )

    @field_validator("orientation")
    @classmethod
    def _axcodes(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.upper()
            if len(value) != 3 or not _valid_axcodes(value):
                raise ValueError(f"'{value}' is not three axis codes such as RAS or LPS")
        return value


def _valid_axcodes(codes: str) -> bool:
    pairs = [set("LR"), set("AP"), set("SI")]
    used = []
    for c in codes:
        for i, pair in enumerate(pairs):
            if c in pair:
                used.append(i)
    return sorted(used) == [0, 1, 2]


class IntensityOptions(ConfigBase):
    """How physical values map to model scale [-1, 1] (recorded in dataset.json to map back)."""

    kind: Literal["auto", "ct_window", "percentile", "minmax", "none"] = Field(
        default="auto", description="auto: ct_window for CT, percentile otherwise."
    )
    low: float | None = Field(default=None, description="ct_window/minmax: physical value mapped to -1.")
    high: float | None = Field(default=None, description="ct_window/minmax: physical value mapped to +1.")
    percentiles: tuple[float, float] = (0.5, 99.5)
    scope: Literal["volume", "dataset"] = Field(
        default="volume", description="percentile/minmax fitted per volume, or once over the whole dataset."
    )
    unit: str | None = Field(default=None, description="Physical unit; default HU for CT, none otherwise.")

    @model_validator(mode="after")
    def _check(self) -> IntensityOptions:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles {self.percentiles} must satisfy 0 <= low < high <= 100")
        if (self.low is None) != (self.high is None):
            raise ValueError("give both intensity.low and intensity.high, or neither")
        if self.low is not None and self.high is not None and not self.high > self.low:
            raise ValueError(f"intensity.high ({self.high}) must exceed intensity.low ({self.low})")
        if self.low is not None and self.kind in ("auto", "percentile", "none"):
            raise ValueError(f"intensity.low/high do not apply to kind '{self.kind}' (use ct_window or minmax)")
        return self


class SliceOptions(ConfigBase):
    """2D datasets: which slices of each volume become items."""

    axes: list[Plane] = Field(default_factory=lambda: ["axial"], min_length=1)
    range: tuple[float, float] = Field(default=(0.0, 1.0), description="Relative positions kept along each axis.")
    step: int = Field(default=1, ge=1, description="Keep every step-th slice.")
    min_foreground: float = Field(
        default=0.0, ge=0, le=1, description="Drop slices whose fraction of foreground pixels is below this."
    )
    foreground_threshold: float = Field(
        default=-0.98,
        description="A pixel counts as foreground above this, in model scale [-1, 1] (with intensity.kind none: "
        "spatial.foreground_threshold in physical units, else the volume minimum).",
    )

    @field_validator("axes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"axes {value} repeat a plane")
        return value


class ConditionSpec(ConfigBase):
    """One condition column of the dataset, and where its values come from."""

    name: str
    source: str = Field(
        description="modality | body_part | sex | age | plane | position | slice_mm | mask:<masks key> | "
        "csv:<column> | dicom:<Keyword>"
    )
    type: Literal["categorical", "continuous", "mask"] | None = None
    categories: list[str] | None = None
    range: tuple[float, float] | None = None
    missing: str | float | None = Field(
        default=None, description="Value used when a series lacks it; None skips that series (listed)."
    )

    @model_validator(mode="before")
    @classmethod
    def _implied_type(cls, data: object) -> object:
        """Fill ``type`` from the source (mask/categorical/continuous), refusing a contradiction."""
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            return data
        source, given = data["source"], data.get("type")
        kind, _, arg = source.partition(":")
        if kind in BUILTIN_SOURCES and not arg:
            implied = BUILTIN_SOURCES[kind]
        elif kind == "mask" and arg:
            implied = "mask"
        elif kind in ("csv", "dicom") and arg:
            implied = given or "categorical"
            if kind == "dicom" and _IDENTIFYING.search(arg):
                raise ValueError(f"DICOM keyword '{arg}' may identify a person or site and cannot be a condition")
            if implied == "mask":
                raise ValueError(f"condition from '{source}' cannot be a mask")
        else:
            valid = ", ".join([*BUILTIN_SOURCES, "mask:<name>", "csv:<column>", "dicom:<Keyword>"])
            raise ValueError(f"unknown condition source '{source}' (valid: {valid})")
        if given is not None and given != implied:
            raise ValueError(f"condition '{data.get('name')}' from '{source}' is {implied}, not {given}")
        return {**data, "type": implied}


class LabelsCsv(ConfigBase):
    """A user CSV of labels/covariates joined on a subject or series key."""

    path: str
    column: str = Field(description="CSV column holding the key.")
    match: Literal["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber", "file", "subject"] = Field(
        default="PatientID",
        description="What the key matches: a DICOM field, 'file' (NIfTI path relative to its input, without "
        "extension) or 'subject' (the nifti.subject_pattern match).",
    )


class SplitOptions(ConfigBase):
    by: Literal["subject", "block"] = Field(
        default="subject",
        description="subject: whole subjects per split (seeded). block: contiguous blocks of slice positions "
        "with a gap between splits (one-subject 2D datasets). MedMNIST inputs keep their official splits.",
    )
    train: float = Field(default=0.8, ge=0, le=1)
    val: float = Field(default=0.1, ge=0, le=1)
    test: float = Field(default=0.1, ge=0, le=1)
    seed: int = 0
    block: int = Field(default=8, ge=1, description="block: slices per block.")
    gap: int = Field(default=2, ge=0, description="block: slices dropped on each side of a change of split.")

    @model_validator(mode="after")
    def _fractions(self) -> SplitOptions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1 (got {total:g})")
        if self.train <= 0:
            raise ValueError("split.train must be > 0")
        return self


class MedmnistOptions(ConfigBase):
    size: int | None = Field(default=None, ge=1, description="Pad/resize to this size; default 32 for 28x28 sources.")
    max_per_split: int | None = Field(default=None, ge=1)


@register_config("preprocess")
class PreprocessConfig(ConfigBase):
    """``imgsynth preprocess``: DICOM / NIfTI / MedMNIST inputs -> one dataset folder."""

    spatial_dims: Literal[2, 3] = 3
    output: Literal["array", "nifti"] = Field(
        default="array",
        description="array: .npy items in model scale; nifti: .nii.gz volumes in physical units (conversion only).",
    )
    dtype: Literal["float32", "float16"] = "float32"
    dicom: DicomOptions = Field(default_factory=DicomOptions)
    nifti: NiftiOptions = Field(default_factory=NiftiOptions)
    spatial: SpatialOptions = Field(default_factory=SpatialOptions)
    intensity: IntensityOptions = Field(default_factory=IntensityOptions)
    slices: SliceOptions = Field(default_factory=SliceOptions)
    masks: dict[str, MaskSpec] = Field(default_factory=dict)
    conditions: list[ConditionSpec] = Field(default_factory=list)
    labels_csv: LabelsCsv | None = None
    split: SplitOptions = Field(default_factory=SplitOptions)
    medmnist: MedmnistOptions = Field(default_factory=MedmnistOptions)
    subject_key: str | None = Field(
        default=None,
        description="Secret for pseudonymous subject numbering (else $IMGSYNTH_SUBJECT_KEY, else random per run).",
    )
    workers: int = Field(default=1, ge=1)
    batch_size: int = Field(default=4, ge=1, description="Series per mini-batch.")

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        names = [c.name for c in self.conditions]
        if len(set(names)) != len(names):
            raise ValueError(f"condition names repeat: {names}")
        for cond in self.conditions:
            kind, _, arg = cond.source.partition(":")
            if kind == "mask" and arg not in self.masks:
                raise ValueError(f"condition '{cond.name}' uses mask '{arg}', not defined under 'masks'")
            if kind in ("plane", "position", "slice_mm") and self.spatial_dims != 2:
                raise ValueError(f"condition '{cond.name}' ({kind}) needs spatial_dims: 2")
            if kind == "csv" and self.labels_csv is None:
                raise ValueError(f"condition '{cond.name}' reads '{cond.source}' but no labels_csv is set")
        if self.output == "nifti":
            if self.spatial_dims != 3:
                raise ValueError("output 'nifti' writes volumes: it needs spatial_dims: 3")
            if self.intensity.kind not in ("none", "auto"):
                raise ValueError("output 'nifti' keeps physical units: set intensity.kind: none")
        used = {c.source.partition(":")[2] for c in self.conditions if c.type == "mask"}
        unused = sorted(set(self.masks) - used)
        if unused:
            raise ValueError(f"masks {unused} are defined but no condition uses them (add source: 'mask:{unused[0]}')")
        if self.spatial.crop_foreground and self.intensity.kind == "none" and self.spatial.foreground_threshold is None:
            raise ValueError("crop_foreground with intensity.kind none needs spatial.foreground_threshold (physical units)")
        if self.split.by == "block" and self.spatial_dims != 2:
            raise ValueError("split.by 'block' splits slice positions: it needs spatial_dims: 2")
        return self
