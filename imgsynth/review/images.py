"""One display geometry and one intensity encoding for every case of a review, real or synthetic.

Blinding needs real and synthetic cases to be indistinguishable by anything but their pixels:
both are mapped back to physical units with their dataset's intensity mapping, put on the real
dataset's grid description (spacing, orientation; 3D volumes turned into axial slices) and
encoded with the same 16-bit linear map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imgsynth.contracts import Dataset, DatasetInfo, load_item
from imgsynth.errors import InputError, UsageError
from imgsynth.export.dicom import Encoding, affine_from_orientation, choose_encoding, reorient

# Window presets radiologists use on CT (centre, width in HU).
CT_PRESETS = (
    ("Soft tissue", 40.0, 400.0),
    ("Brain", 40.0, 80.0),
    ("Subdural", 75.0, 215.0),
    ("Lung", -600.0, 1500.0),
    ("Bone", 400.0, 1800.0),
)


@dataclass(frozen=True)
class Preset:
    name: str
    center: float | None  # None: computed per image in the viewer (1st-99th percentile)
    width: float | None


@dataclass(frozen=True)
class DisplaySpec:
    """What every case of a review shares: geometry, unit, stored-value encoding, presets."""

    spatial_dims: Literal[2, 3]
    shape: tuple[int, ...]  # display shape: [H, W] or [D, H, W] (axial slices)
    spacing: tuple[float, ...]  # mm per display axis
    affine: Any  # 4x4 voxel-to-RAS of the display array (3D), or None
    unit: str
    modality: Literal["CT", "MR", "OT"]
    encoding: Encoding
    value_range: tuple[float, float]
    presets: tuple[Preset, ...]
    channel: int = 0

    @property
    def dtype(self) -> str:
        return "int16" if self.encoding.signed else "uint16"


def spatial_shape(info: DatasetInfo) -> tuple[int, ...]:
    return tuple(info.shape[1:])


def check_compatible(real: DatasetInfo, synthetic: DatasetInfo, channel: int) -> list[str]:
    """Raise when the two datasets cannot be shown alike; return notes on harmless differences."""
    if real.spatial_dims != synthetic.spatial_dims:
        raise UsageError(
            f"real dataset is {real.spatial_dims}D but synthetic is {synthetic.spatial_dims}D; review needs both alike"
        )
    if spatial_shape(real) != spatial_shape(synthetic):
        raise UsageError(
            f"real items are {list(spatial_shape(real))} but synthetic items {list(spatial_shape(synthetic))}: "
            "image size would unblind readers; resample one set to the other's shape first"
        )
    if channel >= min(real.channels, synthetic.channels):
        raise UsageError(f"channel {channel} does not exist (real has {real.channels}, synthetic {synthetic.channels})")
    if (real.intensity.unit or "") != (synthetic.intensity.unit or ""):
        raise UsageError(
            f"real intensity unit '{real.intensity.unit}' differs from synthetic '{synthetic.intensity.unit}'"
        )
    notes = []
    orientation_differs = real.spatial_dims == 3 and (synthetic.orientation or "RAS") != (real.orientation or "RAS")
    if (synthetic.spacing or None) != (real.spacing or None) or orientation_differs:
        notes.append("synthetic spacing/orientation differ from the real dataset's; every case uses the real one")
    return notes


def pick_modality(info: DatasetInfo, requested: str) -> Literal["CT", "MR", "OT"]:
    if requested != "auto":
        if requested == "CT" and info.intensity.unit.upper() != "HU":
            raise UsageError(f"modality CT needs Hounsfield units; the dataset's unit is '{info.intensity.unit}'")
        return requested  # type: ignore[return-value]
    if info.intensity.unit.upper() == "HU":
        return "CT"
    source_modality = str(info.source.get("modality", "")).upper() if isinstance(info.source, dict) else ""
    return "MR" if source_modality == "MR" else "OT"


def display_spec(
    real: DatasetInfo,
    *,
    value_range: tuple[float, float],
    channel: int = 0,
    modality: str = "auto",
) -> DisplaySpec:
    """The shared display description (``value_range``: physical range of the encoded values).

    Call :func:`check_compatible` first: this takes the real dataset's grid for every case.
    """
    dims = real.spatial_dims
    spacing = spec_spacing_of(real)
    shape = spatial_shape(real)
    affine = None
    if dims == 3:
        affine0 = affine_from_orientation(real.orientation or "RAS", spacing)
        probe, affine = reorient(np.zeros(shape, dtype=np.uint8), affine0)
        shape = probe.shape
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    mod = pick_modality(real, modality)
    lo, hi = value_range
    encoding = choose_encoding(np.array([lo, hi]), "CT" if mod == "CT" else "OT", value_range=(lo, hi))
    return DisplaySpec(
        spatial_dims=dims,
        shape=tuple(int(s) for s in shape),
        spacing=spacing,
        affine=affine,
        unit=real.intensity.unit,
        modality=mod,
        encoding=encoding,
        value_range=(lo, hi),
        presets=tuple(presets_for(real, value_range, mod)),
        channel=channel,
    )


def presets_for(info: DatasetInfo, value_range: tuple[float, float], modality: str) -> list[Preset]:
    """Window presets: the dataset's own window first, CT presets on HU, full range, auto."""
    out: list[Preset] = []
    it = info.intensity
    if it.kind != "none" and it.low is not None and it.high is not None:
        out.append(Preset("Dataset", (it.low + it.high) / 2.0, it.high - it.low))
    if modality == "CT":
        out.extend(Preset(n, c, w) for n, c, w in CT_PRESETS)
    lo, hi = value_range
    out.append(Preset("Full range", (lo + hi) / 2.0, max(hi - lo, 1e-6)))
    unique: dict[tuple[float, float], Preset] = {}
    for p in out:  # the first name of a window wins (Dataset before Soft tissue before Full range)
        unique.setdefault((round(p.center, 6), round(p.width, 6)), p)  # type: ignore[arg-type]
    return [*unique.values(), Preset("Auto", None, None)]


def physical_range(info: DatasetInfo) -> tuple[float, float] | None:
    """[low, high] of the dataset's intensity mapping, or None when values are stored unmapped."""
    it = info.intensity
    if it.kind == "none" or it.low is None or it.high is None:
        return None
    return float(it.low), float(it.high)


def load_physical(dataset: Dataset, row: dict[str, str], channel: int, expect: Sequence[int]) -> np.ndarray:
    """One item in physical units (``[H, W]`` or ``[D, H, W]``, array order); checks shape and values."""
    arr = load_item(dataset.item_path(row))
    if arr.ndim != len(expect) + 1 or tuple(arr.shape[1:]) != tuple(expect):
        raise InputError(f"item '{row['id']}' has shape {list(arr.shape)}, expected [C, {', '.join(map(str, expect))}]")
    if channel >= arr.shape[0]:
        raise InputError(f"item '{row['id']}' has no channel {channel}")
    x = np.asarray(arr[channel], dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError(f"item '{row['id']}' holds NaN or infinite values")
    return dataset.info.intensity.to_physical(x)


def to_display(physical: np.ndarray, info: DatasetInfo, spec: DisplaySpec) -> np.ndarray:
    """Physical array (array order) -> display order (3D: axial slices), float32."""
    if spec.spatial_dims == 2:
        return physical
    spacing = spec_spacing_of(info)
    affine0 = affine_from_orientation(info.orientation or "RAS", spacing)
    out, _ = reorient(physical, affine0)
    if tuple(out.shape) != spec.shape:
        raise InputError(f"volume orientation '{info.orientation}' gives shape {list(out.shape)}, not {list(spec.shape)}")
    return out


def spec_spacing_of(info: DatasetInfo) -> tuple[float, ...]:
    return tuple(float(s) for s in (info.spacing or [1.0] * info.spatial_dims))
