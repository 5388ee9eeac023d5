"""Per-item outputs of a sample set: the ``.npy`` item (model scale), a PNG preview and a NIfTI
in physical units (the dataset's intensity mapping inverted, voxel size from its spacing).

Array axes are NIfTI voxel axes (as ``imgsynth.contracts.load_item`` reads them): ``[C, *spatial]``
-> data ``[*spatial]`` for one channel, ``[*spatial, C]`` otherwise; 2D items are written as a
one-slice volume ``[H, W, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgsynth.contracts import DatasetInfo, save_item
from imgsynth.training.preview import middle_slice, save_png, to_uint8
from imgsynth.utils.io import atomic_path


def write_npy(root: Path, item_id: str, image: np.ndarray) -> str:
    return save_item(root, f"items/{item_id}.npy", image.astype(np.float32))


def write_png(root: Path, item_id: str, image: np.ndarray) -> str:
    """8-bit preview: the image (2D) or its middle slice (3D), first channel or RGB."""
    plane = middle_slice(image)
    arr = to_uint8(plane)
    arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]
    rel = f"png/{item_id}.png"
    save_png(arr, root / rel)
    return rel


def nifti_affine(info: DatasetInfo) -> np.ndarray:
    spacing = list(info.spacing or [1.0] * info.spatial_dims)
    if info.spatial_dims == 2:
        spacing = [*spacing, 1.0]
    return np.diag([*spacing, 1.0]).astype(np.float64)


def write_nifti(root: Path, item_id: str, image: np.ndarray, info: DatasetInfo) -> str:
    import nibabel as nib

    physical = info.intensity.to_physical(image)  # [C, *spatial]
    data = physical[0] if physical.shape[0] == 1 else np.moveaxis(physical, 0, -1)
    if info.spatial_dims == 2:
        data = data[:, :, None] if physical.shape[0] == 1 else data[:, :, None, :]
    img = nib.Nifti1Image(data.astype(np.float32), nifti_affine(info))
    img.header.set_xyzt_units("mm")
    if info.intensity.unit:
        img.header["descrip"] = f"synthetic; unit {info.intensity.unit}"[:79].encode()
    else:
        img.header["descrip"] = b"synthetic"
    rel = f"nifti/{item_id}.nii.gz"
    path = root / rel
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp.with_name(tmp.name + ".nii.gz")))
        tmp.with_name(tmp.name + ".nii.gz").replace(tmp)
    return rel
