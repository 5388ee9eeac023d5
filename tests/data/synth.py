"""Synthetic DICOM series with known geometry, built from real single slices of pydicom's test files.

Each slice is the real image with a slice-specific offset added to its stored values, so slices
differ and order mistakes show; positions, orientation and spacing are chosen, so the true
voxel-to-world affine is known in closed form.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ds_str(v: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{v:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix R = Rz(yaw) @ Rx(pitch) @ Ry(roll)."""
    a, b, c = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    return rz @ rx @ ry


@dataclass
class Synthetic:
    folder: Path
    volume: np.ndarray  # [i, j, k] physical values in slice order along the normal
    affine: np.ndarray  # RAS affine
    files: list[Path]


def write_series(
    folder: Path,
    *,
    source: str = "CT_small.dcm",
    n: int = 5,
    rot: np.ndarray | None = None,
    spacing: float = 2.5,
    origin: tuple[float, float, float] = (-40.0, -55.5, 12.25),
    order: str = "forward",  # forward | reversed | shuffled (InstanceNumber and file names)
    step: np.ndarray | None = None,  # slice-to-slice vector (LPS mm); default normal * spacing
    positions: list[float] | None = None,  # distances along ``step`` per slice (default 0..n-1)
    offset: int = 7,  # added to the stored values of slice k: k * offset
    series_uid: str | None = None,
    seed: int = 0,
    syntax: str | None = None,
) -> Synthetic:
    """Write ``n`` slices of ``source`` as one series with the given geometry into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rot = np.eye(3) if rot is None else rot
    iop = [float(ds_str(v)) for v in (*rot[:, 0], *rot[:, 1])]
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    step = normal * spacing if step is None else np.asarray(step, dtype=float)
    positions = list(range(n)) if positions is None else positions
    series_uid = series_uid or generate_uid()
    base = pydicom.dcmread(get_testdata_file(source))
    dr, dc = (float(v) for v in base.PixelSpacing)
    slope = float(base.get("RescaleSlope", 1) or 1)
    intercept = float(base.get("RescaleIntercept", 0) or 0)
    stored = base.pixel_array.astype(np.int64)
    ipps = [[float(ds_str(v)) for v in np.asarray(origin) + p * step] for p in positions]

    numbers = list(range(1, n + 1))
    if order == "reversed":
        numbers.reverse()
    names = [f"{i:03d}.dcm" for i in numbers]
    if order == "shuffled":
        random.Random(seed).shuffle(names)
    files = []
    planes = []
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file(source))
        arr = (stored + k * offset).astype(ds.pixel_array.dtype)
        ds.PixelData = arr.tobytes()
        ds.ImageOrientationPatient = [ds_str(v) for v in iop]
        ds.ImagePositionPatient = [ds_str(v) for v in ipps[k]]
        ds.InstanceNumber = numbers[k]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for tag in ("SliceLocation", "GantryDetectorTilt"):
            if tag in ds:
                delattr(ds, tag)
        if syntax is not None:
            ds.compress(syntax, arr)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        planes.append((np.asarray(ipps[k]) @ normal, arr.astype(np.float64) * slope + intercept, ipps[k]))
    planes.sort(key=lambda p: p[0])
    stack = np.stack([p[1] for p in planes])  # [k, rows, cols]
    first = np.asarray(planes[0][2])
    last = np.asarray(planes[-1][2])
    slice_vec = (last - first) / (n - 1) if n > 1 else normal * spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * dc, col * dr, slice_vec, first
    return Synthetic(folder, np.transpose(stack, (2, 1, 0)).astype(np.float32), LPS_TO_RAS @ lps, files)


def write_enhanced(
    path: Path,
    *,
    rot: np.ndarray | None = None,
    spacing: float = 1.2,
    origin: tuple[float, float, float] = (10.0, -20.0, 30.5),
    slope: float = 2.0,
    intercept: float = -100.0,
    reverse: bool = True,
) -> Synthetic:
    """pydicom's enhanced MR (10 frames of 64x64) with functional groups giving a known geometry.

    Frames are stored in descending slice order when ``reverse`` (the reader must sort them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    frames = ds.pixel_array.astype(np.float64)  # [10, 64, 64]
    n = frames.shape[0]
    rot = np.eye(3) if rot is None else rot
    iop = [float(ds_str(v)) for v in (*rot[:, 0], *rot[:, 1])]
    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    ds.Manufacturer = "Philips"

    def item(**kw: object) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    shared = item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=["0.9", "0.8"], SliceThickness=ds_str(spacing))]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[ds_str(v) for v in iop])]),
        PixelValueTransformationSequence=Sequence(
            [item(RescaleSlope=ds_str(slope), RescaleIntercept=ds_str(intercept), RescaleType="US")]
        ),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    slot = list(range(n))[::-1] if reverse else list(range(n))  # frame i lies at slice slot[i]
    ipps = [[float(ds_str(v)) for v in np.asarray(origin) + slot[i] * spacing * normal] for i in range(n)]
    per_frame = []
    for i in range(n):
        per_frame.append(
            item(
                PlanePositionSequence=Sequence([item(ImagePositionPatient=[ds_str(v) for v in ipps[i]])]),
                FrameContentSequence=Sequence([item(InStackPositionNumber=slot[i] + 1, StackID="1")]),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(path, enforce_file_format=True)
    order = np.argsort(slot)
    stack = frames[order] * slope + intercept
    first, last = np.asarray(ipps[order[0]]), np.asarray(ipps[order[-1]])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * 0.8, col * 0.9
    lps[:3, 2], lps[:3, 3] = (last - first) / (n - 1), first
    return Synthetic(path.parent, np.transpose(stack, (2, 1, 0)).astype(np.float32), LPS_TO_RAS @ lps, [path])
