"""Per-item outputs of a sample set: the ``.npy`` item (model scale), a PNG preview and a NIfTI
in physical units (the dataset's intensity mapping inverted, voxel size and orientation from its
``spacing`` and ``orientation``). Both carry provenance: PNG text chunks, NIfTI header fields.

Array axes are NIfTI voxel axes (as ``imgsynth.contracts.load_item`` reads them): ``[C, *spatial]``
-> data ``[*spatial]`` for one channel, ``[*spatial, C]`` otherwise; 2D items are written as a
one-slice volume ``[H, W, 1]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.contracts import DatasetInfo, save_item
from imgsynth.training.preview import middle_slice, save_png, to_uint8
from imgsynth.utils.io import atomic_path


def write_npy(root: Path, item_id: str, image: np.ndarray) -> str:
    return save_item(root, f"items/{item_id}.npy", image.astype(np.float32))


def write_png(root: Path, item_id: str, image: np.ndarray, text: Mapping[str, str] | None = None) -> str:
    """8-bit preview: the image (2D) or its middle slice (3D), first channel or RGB; ``text`` goes
    into PNG text chunks (``tEXt``, or ``iTXt`` for non-Latin-1 values)."""
    plane = middle_slice(image)
    arr = to_uint8(plane)
    arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]
    rel = f"png/{item_id}.png"
    if not text:
        save_png(arr, root / rel)
        return rel
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, str(value))
    with atomic_path(root / rel) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG", pnginfo=info)
    return rel


def nifti_affine(info: DatasetInfo) -> np.ndarray:
    """Voxel -> RAS mm: array axes along the dataset's ``orientation`` codes, steps of its ``spacing``
    (2D items are one-slice volumes ``[H, W, 1]``: a third code, or R A S, gives the slice normal)."""
    from imgsynth.export.dicom import affine_from_orientation

    spacing = list(info.spacing or [1.0] * info.spatial_dims)
    if info.spatial_dims == 2:
        spacing = [*spacing, 1.0]
    codes = info.orientation if info.orientation and len(info.orientation) == 3 else None
    if codes is None:
        return np.diag([*spacing, 1.0]).astype(np.float64)
    return np.asarray(affine_from_orientation(codes, spacing), dtype=np.float64)


def write_nifti(root: Path, item_id: str, image: np.ndarray, info: DatasetInfo,
                provenance: Mapping[str, Any] | None = None) -> str:
    import nibabel as nib

    physical = info.intensity.to_physical(image)  # [C, *spatial]
    data = physical[0] if physical.shape[0] == 1 else np.moveaxis(physical, 0, -1)
    if info.spatial_dims == 2:
        data = data[:, :, None] if physical.shape[0] == 1 else data[:, :, None, :]
    img = nib.Nifti1Image(data.astype(np.float32), nifti_affine(info))
    img.set_qform(img.affine, code="aligned")
    img.set_sform(img.affine, code="aligned")
    img.header.set_xyzt_units("mm")
    prov = dict(provenance or {})
    unit = f"; unit {info.intensity.unit}" if info.intensity.unit else ""
    if prov:
        ckpt = str(prov.get("checkpoint_sha256", ""))[:16]
        text = f"SYNTHETIC imgsynth; seed {prov.get('seed', '')}; ckpt {ckpt}{unit}"
        img.header["intent_name"] = b"SYNTHETIC"
        img.header["aux_file"] = f"ckpt {ckpt}"[:23].encode()
        blob = json.dumps({"synthetic": True, **prov}, sort_keys=True, default=str).encode()
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", blob))
    else:
        text = f"synthetic{unit}"
    img.header["descrip"] = text[:79].encode()
    rel = f"nifti/{item_id}.nii.gz"
    path = root / rel
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp.with_name(tmp.name + ".nii.gz")))
        tmp.with_name(tmp.name + ".nii.gz").replace(tmp)
    return rel
