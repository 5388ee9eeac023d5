"""NIfTI in and out: coded sform/qform honoured, 4D volumes picked explicitly, no header text copied.

Reading keeps only voxels and the voxel-to-world transform: header text fields (``descrip``,
``aux_file``, ``intent_name``, ``db_name``) and the file name can hold identities, so nothing of
them reaches the dataset. Writing builds a fresh header (sform and qform code 1, "scanner"),
gzip without a file name or time stamp.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from imgsynth.data.config import NiftiOptions
from imgsynth.data.volume import Volume, short_message
from imgsynth.errors import InputError
from imgsynth.utils.io import atomic_write_bytes

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_suffix(name: str) -> str:
    low = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def coded_affine(img: object, prefer: str = "sform") -> tuple[np.ndarray, str]:
    """The voxel-to-world transform the header declares valid (sform/qform code > 0), and which."""
    header = img.header  # type: ignore[attr-defined]
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    order = [("sform", sform, s_code), ("qform", qform, q_code)]
    if prefer == "qform":
        order.reverse()
    for name, affine, code in order:
        if affine is not None and code and int(code) > 0:
            return np.asarray(affine, dtype=np.float64), name
    raise InputError("no coded orientation (sform_code and qform_code are 0): voxel-to-world transform unknown")


def read_array(path: str | Path, opts: NiftiOptions, *, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """(data [X, Y, Z] float32 with scl_slope/inter applied, RAS affine) of one NIfTI file."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as exc:  # nibabel raises many types for broken files
        reason = short_message(Exception(str(exc).replace(str(path), Path(path).name)), 120)
        raise InputError(f"unreadable NIfTI {kind} ({reason})") from None
    affine, _ = coded_affine(img, opts.prefer)
    try:
        if len(shape) == 4 and shape[3] > 1:
            if opts.volume is None:
                raise InputError(f"4D {kind} with {shape[3]} volumes: choose one with nifti.volume (0-based)")
            if opts.volume >= shape[3]:
                raise InputError(f"nifti.volume={opts.volume} but the {kind} has {shape[3]} volumes")
            data = np.asarray(img.dataobj[..., opts.volume], dtype=np.float32)
        elif len(shape) in (2, 3, 4):
            data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3] if len(shape) > 2 else (*shape, 1))
        else:
            raise InputError(f"{len(shape)}D {kind} is not supported (expected 3D, or 4D with nifti.volume)")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"unreadable NIfTI voxel data ({short_message(exc, 120)})") from None
    return data, affine


def load_nifti(path: str | Path, opts: NiftiOptions, masks: dict[str, str | Path] | None = None) -> Volume:
    """Load an image (and its mask channel files) as a :class:`Volume` in the image's grid."""
    image, affine = read_array(path, opts)
    vol = Volume(image=image, affine=affine, modality=opts.modality.upper(), unit="HU" if opts.modality.upper() == "CT" else "")
    for channel, mpath in (masks or {}).items():
        data, maffine = read_array(mpath, opts, kind=f"mask '{channel}'")
        if data.shape != image.shape or not np.allclose(maffine, affine, atol=1e-3):
            raise InputError(f"mask '{channel}' is not on the image's voxel grid (shape or affine differs)")
        vol.masks[channel] = data
    return vol


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A fresh ``.nii.gz`` (no header text, deterministic gzip) holding ``data`` [X, Y, Z(, C)]."""
    import nibabel as nib

    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)) and arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= -32768 and hi <= 32767:
            arr = arr.astype(np.int16)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    gram = cols.T @ cols
    if np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-6 * float(np.max(np.abs(gram)))):
        img.set_qform(affine, code=1)
    else:  # a sheared grid (gantry tilt kept as shear): the qform cannot hold it, only the sform
        img.set_qform(None, code=0)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def save_nifti(root: str | Path, relpath: str, data: np.ndarray, affine: np.ndarray) -> str:
    """Write ``root/relpath`` (.nii.gz) atomically; returns ``relpath``."""
    atomic_write_bytes(Path(root) / relpath, nifti_bytes(data, affine))
    return relpath
