"""A loaded volume in physical units with its RAS affine, and the checks every input passes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from imgsynth.errors import InputError


@dataclass
class Volume:
    """One 3D image ``[X, Y, Z]`` in physical units, its RAS affine and aligned mask channels."""

    image: np.ndarray
    affine: np.ndarray
    modality: str = ""
    unit: str = ""
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # channel name -> [X, Y, Z]
    notes: list[str] = field(default_factory=list)  # geometry corrections applied on loading


def short_message(exc: BaseException, limit: int = 160) -> str:
    """One line of at most ``limit`` characters from an exception, for errors.jsonl."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def check_volume(vol: Volume) -> None:
    """Refuse volumes no model should see: non-finite values, constant images, misaligned masks."""
    img = vol.image
    if img.ndim != 3 or min(img.shape) < 1:
        raise InputError(f"expected a 3D image, got shape {list(img.shape)}")
    bad = int(img.size - np.count_nonzero(np.isfinite(img)))
    if bad:
        raise InputError(f"{bad} non-finite voxel value(s) (NaN or inf)")
    lo, hi = float(img.min()), float(img.max())
    if lo == hi:
        raise InputError(f"empty volume: every voxel is {lo:g}")
    if not np.all(np.isfinite(vol.affine)) or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-9:
        raise InputError("degenerate voxel-to-world affine (zero or non-finite voxel size)")
    for name, mask in vol.masks.items():
        if mask.shape != img.shape:
            raise InputError(f"mask '{name}' has shape {list(mask.shape)}, image has {list(img.shape)}")
        if not np.all(np.isfinite(mask)):
            raise InputError(f"mask '{name}' has non-finite values")
