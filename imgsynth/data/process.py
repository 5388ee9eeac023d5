"""The worker side of ``preprocess``: one unit (a volume) in, its items and a result record out.

:func:`preprocess_minibatch` is the mini-batch entry (a list of unit records -> a list of result
records) that the local process pool and an Azure ML parallel job both run. It never raises for
a bad unit: the result says why it was skipped. Results are saved under ``OUT/.work/results`` so
an interrupted run resumes without redoing finished units.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.contracts import Intensity, save_item
from imgsynth.data.config import PreprocessConfig
from imgsynth.data.dicom import SeriesGroup, frames_from_json, load_series
from imgsynth.data.geometry import PLANE_AXIS, plane_slice, ras_view
from imgsynth.data.intensity import (
    fit_values,
    fitted_intensity,
    fixed_intensity,
    needs_fit,
    resolve_kind,
    unit_of,
    voxel_sample,
)
from imgsynth.data.nifti import load_nifti, save_nifti
from imgsynth.data.sources import Unit, load_template
from imgsynth.data.transforms import FOV, apply_chain
from imgsynth.data.volume import Volume, check_volume, short_message
from imgsynth.errors import ImgsynthError, InputError
from imgsynth.utils.io import atomic_write_json
from imgsynth.utils.log import quiet_input_warnings

WORK = ".work"


def work_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / WORK


def mask_channels(cfg: PreprocessConfig) -> list[str]:
    return [c for spec in cfg.masks.values() for c in spec.channels]


def load_unit(unit: Unit, cfg: PreprocessConfig) -> Volume:
    """The unit's volume in physical units (masks on the same grid), checked."""
    if unit.kind == "dicom":
        if cfg.masks:
            raise InputError("mask conditions need NIfTI or template inputs (DICOM series carry no aligned maps)")
        group = SeriesGroup(frames_from_json(unit.frames), {"Modality": unit.fields.get("modality", "")})
        vol = load_series(group, cfg.dicom)
    elif unit.kind == "nifti":
        vol = load_nifti(unit.path, cfg.nifti, unit.masks)
    else:
        vol = load_template(unit.path, mask_channels(cfg))
    check_volume(vol)
    return vol


def unit_intensity(vol: Volume, cfg: PreprocessConfig, dataset_intensity: Intensity | None) -> Intensity:
    kind = resolve_kind(cfg.intensity, vol.modality)
    unit = unit_of(cfg.intensity, vol.modality)
    if dataset_intensity is not None:
        return dataset_intensity
    if not needs_fit(cfg.intensity, kind):
        return fixed_intensity(cfg.intensity, kind, unit)
    low, high = fit_values(cfg.intensity, kind, vol.image)
    return fitted_intensity(cfg.intensity, kind, unit, low, high, "volume")


# ---------------------------------------------------------------------------------------------
# Writing items
# ---------------------------------------------------------------------------------------------
def _item_relpaths(cfg: PreprocessConfig, subject: str, item_id: str) -> tuple[str, dict[str, str]]:
    ext = ".nii.gz" if cfg.output == "nifti" else ".npy"
    image = f"items/{subject}/{item_id}{ext}"
    masks = {name: f"masks/{name}/{subject}/{item_id}{ext}" for name in cfg.masks}
    return image, masks


def _write(cfg: PreprocessConfig, out_dir: Path, rel: str, array: np.ndarray, affine: np.ndarray | None) -> None:
    if cfg.output == "nifti":
        assert affine is not None
        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)  # [X, Y, Z(, C)]
        save_nifti(out_dir, rel, data, affine)
    else:
        save_item(out_dir, rel, array.astype(cfg.dtype))


def emit_volume(
    arrays: dict[str, np.ndarray], affine: np.ndarray, unit: Unit, cfg: PreprocessConfig, out_dir: Path
) -> list[dict[str, Any]]:
    """3D: one item per unit."""
    image_rel, mask_rels = _item_relpaths(cfg, unit.subject, unit.series)
    _write(cfg, out_dir, image_rel, arrays["image"], affine)
    for name, rel in mask_rels.items():
        _write(cfg, out_dir, rel, arrays[f"mask:{name}"], affine)
    return [{"id": unit.series, "path": image_rel, "masks": mask_rels, "fields": {}, "shape": list(arrays["image"].shape)}]


def _slice_threshold(cfg: PreprocessConfig, intensity: Intensity, image: np.ndarray) -> float:
    if intensity.kind != "none":
        return cfg.slices.foreground_threshold
    if cfg.spatial.foreground_threshold is not None:
        return float(cfg.spatial.foreground_threshold)
    return float(image.min())


def emit_slices(
    arrays: dict[str, np.ndarray],
    affine: np.ndarray,
    unit: Unit,
    cfg: PreprocessConfig,
    intensity: Intensity,
    out_dir: Path,
) -> list[dict[str, Any]]:
    """2D: the kept slices of each configured plane, display-oriented (see geometry.plane_slice)."""
    keys = list(arrays)
    views = {}
    for key in keys:
        views[key], ras_affine = ras_view(arrays[key], affine)
    image, fov = views["image"], views.get(FOV)
    threshold = _slice_threshold(cfg, intensity, image)
    lo_pos, hi_pos = cfg.slices.range
    items: list[dict[str, Any]] = []
    for plane in cfg.slices.axes:
        axis = PLANE_AXIS[plane]
        n = image.shape[1 + axis]
        other = tuple(a for a in (1, 2, 3) if a != 1 + axis)
        inside = np.flatnonzero(fov[0].any(axis=tuple(a - 1 for a in other))) if fov is not None else np.arange(n)
        if inside.size == 0:
            continue
        first, last = int(inside[0]), int(inside[-1])
        for k in range(first, last + 1):
            pos = (k - first) / (last - first) if last > first else 0.5
            if pos < lo_pos - 1e-9 or pos > hi_pos + 1e-9 or (k - first) % cfg.slices.step:
                continue
            img = plane_slice(image, plane, k)
            if cfg.slices.min_foreground > 0 and float((img > threshold).mean()) < cfg.slices.min_foreground:
                continue
            centre = np.array([(s - 1) / 2 for s in image.shape[1:]] + [1.0])
            centre[axis] = k
            slice_mm = float((ras_affine @ centre)[axis])
            item_id = f"{unit.series}-{plane[:3]}{k:03d}"
            image_rel, mask_rels = _item_relpaths(cfg, unit.subject, item_id)
            _write(cfg, out_dir, image_rel, img, None)
            for name, rel in mask_rels.items():
                _write(cfg, out_dir, rel, plane_slice(views[f"mask:{name}"], plane, k), None)
            items.append({
                "id": item_id,
                "path": image_rel,
                "masks": mask_rels,
                "fields": {"plane": plane, "position": repr(round(pos, 6)), "slice_mm": repr(round(slice_mm, 4))},
                "plane": plane,
                "k": k,
                "shape": list(img.shape),
            })
    return items


def _grid_spacing(affine: np.ndarray, cfg: PreprocessConfig) -> list[list[float]]:
    """Voxel size of the output items: [X, Y, Z] for 3D, [rows, columns] per plane for 2D."""
    size = [round(float(v), 6) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    if cfg.spatial_dims == 3:
        return [size]
    rows_cols = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}
    return [[size[rows_cols[p][0]], size[rows_cols[p][1]]] for p in cfg.slices.axes]


def remove_items(out_dir: Path, items: list[dict[str, Any]]) -> None:
    """Delete the files of items (image and masks) that will not be in the dataset."""
    for item in items:
        for rel in [item["path"], *item.get("masks", {}).values()]:
            (out_dir / rel).unlink(missing_ok=True)


def process_unit(
    unit: Unit, cfg: PreprocessConfig, out_dir: Path, dataset_intensity: Intensity | None = None
) -> dict[str, Any]:
    """Load, transform and write one unit; returns its result record (``error`` set when skipped)."""
    result: dict[str, Any] = {"uid": unit.uid}
    if unit.error is not None:
        return {**result, "error": unit.error}
    items: list[dict[str, Any]] = []
    try:
        vol = load_unit(unit, cfg)
        intensity = unit_intensity(vol, cfg, dataset_intensity)
        arrays, affine = apply_chain(vol, cfg, intensity, with_fov=cfg.spatial_dims == 2)
        if cfg.spatial_dims == 3:
            items = emit_volume(arrays, affine, unit, cfg, out_dir)
        else:
            items = emit_slices(arrays, affine, unit, cfg, intensity, out_dir)
        if not items:
            raise InputError("no slice passed the slice range / empty-slice filter")
    except ImgsynthError as exc:
        remove_items(out_dir, items)
        return {**result, "error": str(exc)}
    except Exception as exc:  # keep the batch going; the reason names the failure
        remove_items(out_dir, items)
        return {**result, "error": f"internal error {type(exc).__name__}: {short_message(exc, 200)}"}
    return {
        **result,
        "items": items,
        "intensity": intensity.model_dump(mode="json"),
        "modality": vol.modality,
        "notes": vol.notes,
        "spacing": _grid_spacing(affine, cfg),
    }


def load_dataset_intensity(out_dir: str | Path) -> Intensity | None:
    """The dataset-wide mapping fitted by ``fit_intensity`` (``intensity.scope: dataset``), if any."""
    path = work_dir(out_dir) / "intensity.json"
    return Intensity.model_validate(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def preprocess_minibatch(
    units: list[dict[str, Any]], out_dir: str, config: dict[str, Any] | PreprocessConfig
) -> list[dict[str, Any]]:
    """Mini-batch entry: unit records (from ``plan_preprocess``) -> result records, resumably.

    Never raises for a bad unit: its result carries ``error``. Results are also saved under
    ``OUT/.work/results`` for ``finish_preprocess`` (and so finished units are not redone).
    """
    cfg = config if isinstance(config, PreprocessConfig) else PreprocessConfig.model_validate(config)
    out = Path(out_dir)
    dataset_intensity = load_dataset_intensity(out)
    results = []
    for record in units:
        unit = Unit.from_json(record)
        done = work_dir(out) / "results" / f"{unit.uid}.json"
        if done.is_file():
            results.append(json.loads(done.read_text(encoding="utf-8")))
            continue
        with quiet_input_warnings():
            result = process_unit(unit, cfg, out, dataset_intensity)
        atomic_write_json(done, result)
        results.append(result)
    return results


def stats_minibatch(
    units: list[dict[str, Any]], out_dir: str, config: dict[str, Any] | PreprocessConfig
) -> list[dict[str, Any]]:
    """Mini-batch entry of the first pass of a dataset-wide intensity fit (``intensity.scope:
    dataset``): a seeded voxel sample of every unit, saved under ``OUT/.work/stats``."""
    cfg = config if isinstance(config, PreprocessConfig) else PreprocessConfig.model_validate(config)
    out = []
    for record in units:
        unit = Unit.from_json(record)
        target = work_dir(out_dir) / "stats" / f"{unit.uid}.npy"
        if unit.error is not None:
            out.append({"uid": unit.uid, "error": unit.error})
            continue
        if not target.is_file():
            try:
                with quiet_input_warnings():
                    vol = load_unit(unit, cfg)
            except ImgsynthError as exc:
                out.append({"uid": unit.uid, "error": str(exc)})
                continue
            save_item(Path(out_dir), f"{WORK}/stats/{unit.uid}.npy", voxel_sample(vol.image, seed=int(unit.uid[:8], 16)))
        out.append({"uid": unit.uid, "sample": str(target)})
    return out
