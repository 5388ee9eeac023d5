"""Voxel-to-world geometry: DICOM slice stacks, the LPS->RAS affine, gantry tilt and uneven spacing.

Conventions (the same as nibabel and dcm2niix): a volume is an array ``a[i, j, k]`` whose affine
maps voxel indices to RAS millimetres. For a DICOM stack, ``i`` runs along a row (the first
ImageOrientationPatient vector, column index ``c``), ``j`` down a column (the second vector, row
index ``r``) and ``k`` along the slice normal ``row x col``, slices sorted by their position on it.
DICOM patient coordinates are LPS, so the RAS affine is ``diag(-1, -1, 1, 1) @ A_lps`` (DICOM PS3.3
C.7.6.2.1.1).

Irregular stacks are resampled onto an orthogonal grid the way dcm2niix does, so that its
``_Tilt_Eq`` output is a like-for-like reference:

* gantry tilt (slice positions not stepping along the normal): every slice is shifted in plane by
  its offset from the first, with bilinear interpolation, onto a grid widened to cover all slices;
* uneven gaps: slices are linearly interpolated along the normal onto equal steps of the smallest
  gap (at most twice as many slices as acquired, as in dcm2niix), or ``spacing`` when given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TILT_TOLERANCE_MM = 0.01  # in-plane drift of slice origins still treated as untilted


@dataclass
class StackGeometry:
    """Geometry of a sorted stack of parallel slices (all vectors in LPS mm)."""

    row: np.ndarray  # unit vector along a row (increasing column index)
    col: np.ndarray  # unit vector down a column (increasing row index)
    normal: np.ndarray  # row x col
    spacing_rc: tuple[float, float]  # (between rows, between columns) = PixelSpacing
    origin: np.ndarray  # ImagePositionPatient of the first sorted slice
    w: np.ndarray  # [n] distance of each slice from the first along the normal
    offsets: np.ndarray  # [n, 2] in-plane offset of each slice origin from the first (columns, rows), pixels
    thickness: float | None = None  # for single-slice stacks

    @property
    def n(self) -> int:
        return len(self.w)

    @property
    def gaps(self) -> np.ndarray:
        return np.diff(self.w)

    @property
    def tilted(self) -> bool:
        dr, dc = self.spacing_rc
        drift = np.abs(self.offsets) * np.array([dc, dr])
        return bool(self.n > 1 and drift.max() > TILT_TOLERANCE_MM)

    @property
    def tilt_degrees(self) -> float:
        if self.n < 2 or self.w[-1] <= 0:
            return 0.0
        dr, dc = self.spacing_rc
        drift = math.hypot(self.offsets[-1, 0] * dc, self.offsets[-1, 1] * dr)
        return math.degrees(math.atan2(drift, self.w[-1]))

    def regular(self, tolerance: float) -> bool:
        """True when every gap is within ``tolerance`` (relative) of the mean gap."""
        if self.n < 3:
            return True
        gaps = self.gaps
        mean = float(gaps.mean())
        return bool(np.abs(gaps - mean).max() <= max(1e-3, tolerance * mean))

    def step(self) -> float:
        if self.n > 1:
            return float(self.w[-1] / (self.n - 1))
        return float(self.thickness or 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def stack_geometry(
    iop: np.ndarray, ipps: np.ndarray, spacing_rc: tuple[float, float], thickness: float | None = None
) -> tuple[np.ndarray, StackGeometry]:
    """Sort slices along the normal; return (order, geometry of the sorted stack)."""
    iop = np.asarray(iop, dtype=np.float64)
    row, col = _unit(iop[:3]), _unit(iop[3:])
    normal = _unit(np.cross(row, col))
    ipps = np.asarray(ipps, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(ipps @ normal, kind="stable")
    sorted_ipps = ipps[order]
    delta = sorted_ipps - sorted_ipps[0]
    dr, dc = float(spacing_rc[0]), float(spacing_rc[1])
    offsets = np.stack([delta @ row / dc, delta @ col / dr], axis=1)
    geo = StackGeometry(row, col, normal, (dr, dc), sorted_ipps[0], delta @ normal, offsets, thickness)
    return order, geo


def missing_slices(geo: StackGeometry, tolerance: float) -> int:
    """Number of slices missing from an otherwise regular stack (gaps that are whole multiples of the usual gap)."""
    if geo.n < 3:
        return 0
    gaps = geo.gaps
    usual = float(np.median(gaps))
    if usual <= 0:
        return 0
    ratio = gaps / usual
    nearest = np.rint(ratio)
    whole = np.abs(ratio - nearest) <= max(tolerance, 1e-3 / usual) * np.maximum(nearest, 1)
    if not whole.all() or nearest.max() < 2:
        return 0
    return int((nearest - 1).sum())


def lps_affine(geo: StackGeometry, slice_vector: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
    """LPS affine of the stack with the given slice-to-slice vector (mm)."""
    dr, dc = geo.spacing_rc
    affine = np.eye(4)
    affine[:3, 0] = geo.row * dc
    affine[:3, 1] = geo.col * dr
    affine[:3, 2] = slice_vector
    affine[:3, 3] = geo.origin if origin is None else origin
    return affine


def native_affine(geo: StackGeometry, ipps_sorted: np.ndarray) -> np.ndarray:
    """RAS affine of a regular stack: slice vector = mean step between first and last slice positions."""
    if geo.n > 1:
        step = (ipps_sorted[-1] - ipps_sorted[0]) / (geo.n - 1)
    else:
        step = geo.normal * geo.step()
    return LPS_TO_RAS @ lps_affine(geo, step)


def equalised_positions(w: np.ndarray, spacing: float | None = None) -> np.ndarray:
    """Equal slice positions covering [0, w[-1]]: the smallest gap, at most twice the slice count (dcm2niix)."""
    n = len(w)
    if spacing is None:
        gaps = np.diff(w)
        spacing = float(gaps[gaps > 1e-6].min())
        count = int(math.floor(w[-1] / spacing + 1e-6)) + 1
        if count > 2 * n:
            count = 2 * n
            spacing = float(w[-1] / (count - 1))
    else:
        count = int(math.floor(w[-1] / spacing + 1e-6)) + 1
    return np.arange(count, dtype=np.float64) * spacing


def resample_stack(
    stack: np.ndarray,
    geo: StackGeometry,
    *,
    regular: bool,
    spacing: float | None = None,
    pad_value: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tilt-correct and equalise a sorted stack ``[n, rows, cols]``; returns (stack, RAS affine).

    The output grid is orthogonal (row, col, normal) with the first slice's pixel grid, widened
    by whole pixels to cover every slice, and slices at :func:`equalised_positions`.
    """
    from scipy.ndimage import map_coordinates

    n, rows, cols = stack.shape
    fill = float(stack.min()) if pad_value is None else float(pad_value)
    u, v = geo.offsets[:, 0], geo.offsets[:, 1]
    eps = 1e-6
    c0, c1 = math.floor(u.min() + eps), math.ceil(u.max() - eps)
    r0, r1 = math.floor(v.min() + eps), math.ceil(v.max() - eps)
    out_rows, out_cols = rows + (r1 - r0), cols + (c1 - c0)

    # Shift every slice in plane onto the common grid (bilinear; outside the slice: fill).
    if geo.tilted:
        rr, cc = np.meshgrid(np.arange(out_rows) + r0, np.arange(out_cols) + c0, indexing="ij")
        aligned = np.empty((n, out_rows, out_cols), dtype=np.float32)
        for k in range(n):
            aligned[k] = map_coordinates(
                stack[k].astype(np.float32), [rr - v[k], cc - u[k]], order=1, mode="constant", cval=fill
            )
    else:
        aligned = stack.astype(np.float32, copy=False)
        r0 = c0 = 0

    # Interpolate linearly along the normal onto equal steps.
    if regular and spacing is None:
        targets = np.linspace(0.0, float(geo.w[-1]), n) if n > 1 else geo.w
    else:
        targets = equalised_positions(geo.w, spacing)
    hi = np.clip(np.searchsorted(geo.w, targets - 1e-6), 0, n - 1)
    lo = np.clip(hi - 1, 0, n - 1)
    span = geo.w[hi] - geo.w[lo]
    frac = np.where(span > 0, (targets - geo.w[lo]) / np.where(span > 0, span, 1.0), 0.0)
    frac = np.clip(frac, 0.0, 1.0).astype(np.float32)
    out = np.empty((len(targets), *aligned.shape[1:]), dtype=np.float32)
    for j, (a, b, f) in enumerate(zip(lo, hi, frac, strict=True)):
        out[j] = aligned[a] if f == 0 else aligned[a] * (1 - f) + aligned[b] * f

    step = float(targets[1] - targets[0]) if len(targets) > 1 else geo.step()
    dr, dc = geo.spacing_rc
    origin = geo.origin + c0 * dc * geo.row + r0 * dr * geo.col
    return out, LPS_TO_RAS @ lps_affine(geo, geo.normal * step, origin)


def stack_to_volume(stack: np.ndarray) -> np.ndarray:
    """``[k, rows, cols]`` (DICOM frames) -> ``[i, j, k]`` (column, row, slice) as the affine expects."""
    return np.ascontiguousarray(np.transpose(stack, (2, 1, 0)))


# ---------------------------------------------------------------------------------------------
# Planes of a volume, for 2D datasets
# ---------------------------------------------------------------------------------------------
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # spatial axis of an RAS array normal to the plane


def ras_view(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute ``array`` [C, X, Y, Z] to the closest RAS axes (no resampling); returns (array, affine)."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(affine)
    spatial = array.shape[1:]
    out = np.stack([nio.apply_orientation(ch, ornt) for ch in array]) if array.shape[0] else array
    new_affine = affine @ nio.inv_ornt_aff(ornt, spatial)
    return out, new_affine


def plane_slice(array: np.ndarray, plane: str, k: int) -> np.ndarray:
    """Slice ``k`` of an RAS array [C, X, Y, Z] as a display-ready image [C, H, W].

    Radiological convention: axial and coronal images show the patient's right on the image
    left; rows run anterior->posterior (axial) or superior->inferior (coronal, sagittal);
    sagittal columns run anterior->posterior.
    """
    if plane == "axial":
        img = array[:, ::-1, ::-1, k]  # [C, X desc, Y desc]
    elif plane == "coronal":
        img = array[:, ::-1, k, ::-1]  # [C, X desc, Z desc]
    elif plane == "sagittal":
        img = array[:, k, ::-1, ::-1]  # [C, Y desc, Z desc]
    else:
        raise ValueError(f"unknown plane {plane!r}")
    return np.ascontiguousarray(np.transpose(img, (0, 2, 1)))
