"""``--format dicom``: each sample as DICOM a radiologist's viewer accepts, marked synthetic.

Built on :func:`imgsynth.export.dicom.write_series` (CT Image Storage for HU, MR Image Storage,
else Secondary Capture; ``ImageType DERIVED\\SECONDARY``; SYNTHETIC in SeriesDescription,
ImageComments and the patient; PatientIdentityRemoved; nothing copied from any real file).

Layout in the sample set (the manifest's ``dicom`` column holds the relative path):

* **2D**: one study per sample set; **one series per condition** (the categorical conditions:
  continuous values and masks vary per image and are written in ImageComments); each sample is one
  instance ``dicom/series-<key>/<id>.dcm`` with InstanceNumber ``index + 1``.
* **3D**: one study per condition; each sample volume is its own series ``dicom/study-<key>/<id>/``
  (one file per slice, positions from the training spacing and orientation).

Study, series and frame-of-reference UIDs are derived from the sample set's own random UID
(created once, kept in ``.generate/state.json``) and the condition, so every process and every
resumed run puts a sample in the same series; instance UIDs are fresh. All UIDs lie under
``uid_root`` when one is given (``2.25.<uuid>`` otherwise).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imgsynth.contracts import Condition, DatasetInfo
from imgsynth.errors import UsageError

_NAMESPACE = uuid.UUID("0c0b5a7e-51a8-4f45-9d8e-5f8f0f6b1d2c")


@dataclass(frozen=True)
class DicomSettings:
    """How a sample set is written as DICOM (the same in every process of a run)."""

    set_uid: str  # random, once per sample set
    created: str  # ISO time the set was started: Study/Series date and time of every file
    modality: Literal["auto", "CT", "MR", "SC"] = "auto"
    uid_root: str | None = None


def derived_uid(root: str | None, *parts: object) -> str:
    """A UID that depends only on ``parts``: ``2.25.<uuid5>`` or ``<root>.<digits>`` (<= 64 chars)."""
    number = uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in parts)).int
    if root is None:
        return f"2.25.{number}"
    root = root.rstrip(".")
    return f"{root}.{str(number)[: 63 - len(root)].lstrip('0') or '1'}"


def resolve_modality(info: DatasetInfo, requested: str = "auto") -> Literal["CT", "MR", "OT"]:
    """CT for Hounsfield units, MR for an MR-only training set, else Secondary Capture (OT)."""
    unit = (info.intensity.unit or "").upper()
    if requested == "CT" and unit != "HU":
        raise UsageError(f"--dicom-modality CT needs images in HU (this model's unit is '{info.intensity.unit or 'none'}')")
    if requested in ("CT", "MR"):
        return requested  # type: ignore[return-value]
    if requested == "SC":
        return "OT"
    if unit == "HU":
        return "CT"
    source = info.source.get("training_source", info.source) if isinstance(info.source, dict) else {}
    modalities = [str(m).upper() for m in (source.get("modalities") or []) if m]
    return "MR" if modalities == ["MR"] else "OT"


def check_dicom(info: DatasetInfo, modality: str = "auto") -> None:
    """Refuse up front what DICOM output cannot express."""
    if info.channels != 1:
        raise UsageError(f"--format dicom needs single-channel images (this model makes {info.channels} channels)")
    resolve_modality(info, modality)


def series_key(condition: Mapping[str, Any], conditions: Sequence[Condition]) -> tuple[str, str, int]:
    """(folder key, description, series number) of the categorical conditions of a sample."""
    cats = [c for c in conditions if c.type == "categorical"]
    text = " ".join(f"{c.name}={condition[c.name]}" for c in cats if c.name in condition)
    number, radix = 0, 1
    for c in reversed(cats):
        options = c.categories or []
        value = condition.get(c.name)
        number += (options.index(value) if value in options else 0) * radix
        radix *= max(1, len(options))
    key = hashlib.sha256(text.encode()).hexdigest()[:10]
    return key, text, number + 1


def _geometry(info: DatasetInfo, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The array ``write_series`` gets and its geometry keywords (training spacing and orientation)."""
    codes = info.orientation if info.orientation and len(info.orientation) == 3 else None
    spacing = list(info.spacing) if info.spacing else None
    if info.spatial_dims == 3:
        return image, {"affine_or_orientation": codes or "RAS", "spacing": spacing}
    if codes is not None:  # a slice of an oriented volume: [H, W] -> [H, W, 1] along the third axis code
        return image[:, :, None], {"affine_or_orientation": codes, "spacing": [*(spacing or [1.0, 1.0]), 1.0]}
    return image, {"spacing": spacing}


def write_dicom(
    root: Path,
    item_id: str,
    index: int,
    physical: np.ndarray,
    info: DatasetInfo,
    condition: Mapping[str, Any],
    conditions: Sequence[Condition],
    settings: DicomSettings,
    provenance: Mapping[str, Any],
    description: str,
) -> str:
    """Write one sample (``[1, *spatial]`` in physical units); returns the manifest's relative path."""
    from imgsynth.export.dicom import write_series

    modality = resolve_modality(info, settings.modality)
    key, text, number = series_key(condition, conditions)
    low, high = info.intensity.low, info.intensity.high
    common: dict[str, Any] = {
        "modality": modality,
        "unit": info.intensity.unit,
        "synthetic": True,
        "provenance": provenance,
        "uid_root": settings.uid_root,
        "window": ((low + high) / 2, high - low) if low is not None and high is not None else None,
        "value_range": (low, high) if modality != "CT" and low is not None and high is not None else None,
        "now": _dt.datetime.fromisoformat(settings.created),
        "overwrite": True,
    }
    volume, geometry = _geometry(info, physical[0])
    r, s = settings.uid_root, settings.set_uid
    if info.spatial_dims == 2:
        rel = f"dicom/series-{key}/{item_id}.dcm"
        final = root / rel
        staging = final.parent / f".{item_id}.partial"
        files = write_series(
            volume, out_dir=staging, **geometry, **common,
            series_description=f"{description} {text}".strip(), series_number=number,
            study_uid=derived_uid(r, s, "study"), series_uid=derived_uid(r, s, "series", key),
            frame_of_reference_uid=derived_uid(r, s, "frame", key), first_instance=index + 1,
        )
        os.replace(files[0], final)
        shutil.rmtree(staging, ignore_errors=True)
        return rel
    rel = f"dicom/study-{key}/{item_id}"
    write_series(
        volume, out_dir=root / rel, **geometry, **common,
        series_description=f"{description} {text}".strip(), series_number=index + 1,
        study_uid=derived_uid(r, s, "study", key), series_uid=derived_uid(r, s, "series", key, index),
        frame_of_reference_uid=derived_uid(r, s, "frame", key, index),
    )
    return rel
