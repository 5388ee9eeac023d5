"""Inputs -> work units: one unit per volume to preprocess (a DICOM series, a NIfTI file, a template).

An input is a DICOM tree, a NIfTI folder or file, a MedMNIST ``.npz`` (handled by
:mod:`imgsynth.data.medmnist`), or ``nilearn:mni152`` (the MNI152 T1 template shipped inside the
nilearn package, 1 mm, with its ``gm``, ``wm`` and ``brain`` maps; ``nilearn:mni152?resolution=2`` for
nilearn's 2 mm resampling).
A unit is a small JSON-able record: the work of one mini-batch item. Raw keys (PatientID, file
paths) live only in the unit records under ``OUT/.work`` while the run lasts; the dataset gets
pseudonyms assigned in :func:`assign_pseudonyms`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from imgsynth.batch import run_minibatches
from imgsynth.data.config import PreprocessConfig
from imgsynth.data.covariates import LabelTable, dicom_fields, dicom_keywords
from imgsynth.data.dicom import FileHeader, frames_to_json, group_series, scan_file
from imgsynth.data.nifti import is_nifti, strip_suffix
from imgsynth.data.volume import Volume
from imgsynth.errors import InputError, UsageError
from imgsynth.utils.log import get_logger, quiet_input_warnings

TEMPLATE_PREFIX = "nilearn:"
TEMPLATES = ("mni152",)
UnitKind = Literal["dicom", "nifti", "template"]

log = get_logger("data")


@dataclass
class Unit:
    """One volume to preprocess."""

    uid: str  # stable hash of what the unit is (resume key; never written to the dataset)
    kind: UnitKind
    label: str  # where it came from, for errors.jsonl
    keys: dict[str, str] = field(default_factory=dict)  # raw keys: PatientID, ..., file, subject, series
    fields: dict[str, str] = field(default_factory=dict)  # raw condition values by source
    frames: list[dict[str, Any]] = field(default_factory=list)  # dicom
    path: str = ""  # nifti file or template spec
    masks: dict[str, str] = field(default_factory=dict)  # nifti: mask channel -> file
    error: str | None = None  # known unusable before loading
    subject: str = ""  # pseudonym
    series: str = ""  # pseudonym prefix of the unit's items

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(**data)


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:20]


def is_template(spec: str) -> bool:
    return spec.startswith(TEMPLATE_PREFIX)


def parse_template(spec: str) -> tuple[str, int]:
    """'nilearn:mni152[?resolution=N]' -> ('mni152', N)."""
    name, _, query = spec[len(TEMPLATE_PREFIX) :].partition("?")
    if name not in TEMPLATES:
        raise UsageError(f"unknown template '{spec}' (available: {', '.join(TEMPLATE_PREFIX + t for t in TEMPLATES)})")
    resolution = 1  # nilearn's default: the files as shipped, no resampling by nilearn
    if query:
        m = re.fullmatch(r"resolution=(\d+)", query)
        if not m:
            raise UsageError(f"template option '{query}' not understood (use ?resolution=1 or 2)")
        resolution = int(m.group(1))
    return name, resolution


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------
def _scan_batch(paths: list[str], keywords: tuple[str, ...]) -> list[FileHeader | None]:
    with quiet_input_warnings():
        return [scan_file(p, keywords) for p in paths]


def _walk(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _mask_suffixes(cfg: PreprocessConfig) -> list[str]:
    return sorted({c for spec in cfg.masks.values() for c in spec.channels}, key=len, reverse=True)


def discover(inputs: list[str], cfg: PreprocessConfig, *, workers: int = 1) -> tuple[list[Unit], int]:
    """Units for every volume found in ``inputs`` (plus units that carry an error); also the count
    of files ignored as neither DICOM nor NIfTI."""
    units: list[Unit] = []
    dicom_files: list[tuple[Path, Path]] = []  # (file, input root)
    ignored = 0
    suffixes = _mask_suffixes(cfg)
    for spec in inputs:
        if is_template(spec):
            name, res = parse_template(spec)
            units.append(
                Unit(uid=_hash("template", name, res), kind="template", label=spec, path=spec,
                     keys={"file": name, "subject": name, "series": f"{name}@{res}"}, fields={"modality": "MR"})
            )
            continue
        root = Path(spec).expanduser()
        if not root.exists():
            raise UsageError(f"input not found: {spec}")
        files = [root] if root.is_file() else _walk(root)
        base = root.parent if root.is_file() else root
        for f in files:
            if is_nifti(f):
                stem = strip_suffix(f.name)
                if any(stem.endswith(s) and (f.parent / (stem[: -len(s)] + f.name[len(stem):])).exists() for s in suffixes):
                    continue  # a mask channel file beside its image
                units.append(_nifti_unit(f, base, cfg))
            elif f.suffix.lower() == ".npz":
                if root.is_file():
                    raise UsageError(f"{f}: a MedMNIST .npz cannot be merged with DICOM/NIfTI inputs; preprocess it on its own")
                ignored += 1  # inside a folder, like any other file that is neither DICOM nor NIfTI
                log.info("%s: a .npz inside a folder is not read (give a MedMNIST .npz as an input of its own)", f)
            else:
                dicom_files.append((f, base))
    if dicom_files:
        keywords = tuple(dicom_keywords(cfg.conditions))
        paths = [str(f) for f, _ in dicom_files]
        heads = run_minibatches(
            partial(_scan_batch, keywords=keywords), paths, workers=workers, batch_size=256, description="reading headers"
        )
        base_of = {str(f): b for f, b in dicom_files}
        found = [h for h in heads if h is not None]
        ignored += len(heads) - len(found)
        for group in group_series(found):
            first = group.files[0]
            rel = os.path.relpath(first, base_of[first].parent)
            where = os.path.dirname(rel)
            series_no = group.fields.get("SeriesNumber", "")
            label = f"{where} (series {series_no or '?'}{', ' + group.part if group.part else ''}, {len(group.files)} file(s))"
            keys = {k: group.fields.get(k, "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber")}
            keys["subject"] = keys["PatientID"] or keys["StudyInstanceUID"] or keys["SeriesInstanceUID"]
            keys["series"] = f"{keys['SeriesInstanceUID'] or first}|{group.part}"
            uid = _hash("dicom", *sorted((f.path, f.index) for f in group.frames), group.part, *group.skipped_files)
            units.append(
                Unit(uid=uid, kind="dicom", label=label, keys=keys, fields=dicom_fields(group.fields, cfg.conditions),
                     frames=frames_to_json(group.frames), error=group.error)
            )
    return units, ignored


def _nifti_unit(path: Path, base: Path, cfg: PreprocessConfig) -> Unit:
    rel = path.relative_to(base).as_posix()
    stem = strip_suffix(path.name)
    file_key = strip_suffix(rel)
    label = path.relative_to(base.parent).as_posix()  # from the input folder's name on
    subject, error = file_key, None
    if cfg.nifti.subject_pattern:
        m = re.search(cfg.nifti.subject_pattern, rel)
        if m is None:
            error = "path does not match nifti.subject_pattern"
        else:
            subject = m.group(1) if m.groups() else m.group(0)
    masks: dict[str, str] = {}
    ext = path.name[len(stem) :]
    for spec in cfg.masks.values():
        for channel in spec.channels:
            found = [p for e in (ext, ".nii.gz", ".nii") if (p := path.parent / f"{stem}{channel}{e}").exists()]
            if found:
                masks[channel] = str(found[0])
            elif error is None:
                error = f"no mask file for channel '{channel}' (expected {stem}{channel}{ext} beside the image)"
    return Unit(
        uid=_hash("nifti", path.resolve(), cfg.nifti.volume), kind="nifti", label=label, path=str(path),
        keys={"file": file_key, "subject": subject, "series": f"{file_key}|{cfg.nifti.volume}"}, fields={"modality": cfg.nifti.modality.upper()},
        masks=masks, error=error,
    )


# ---------------------------------------------------------------------------------------------
# Labels and pseudonyms
# ---------------------------------------------------------------------------------------------
def join_labels(units: list[Unit], cfg: PreprocessConfig) -> None:
    """Add ``csv:<column>`` values to every unit from the labels CSV (a unit without a row gets an error)."""
    if cfg.labels_csv is None:
        return
    table = LabelTable(cfg.labels_csv)
    table.check_columns(cfg.conditions)
    for unit in units:
        if unit.error is not None:
            continue
        values = table.lookup(unit.keys)
        if values is None:
            unit.error = f"no row in the labels CSV matches its {cfg.labels_csv.match}"
        else:
            unit.fields.update(values)


def stable_order(units: list[Unit]) -> list[Unit]:
    """Units ordered by their raw (subject, series) keys: independent of the pseudonym key and of
    where the inputs lie, so seeded splits come out the same in every run."""
    return sorted(units, key=lambda u: (u.keys.get("subject", ""), u.keys.get("series", ""), u.uid))


def assign_pseudonyms(units: list[Unit], key: bytes) -> None:
    """Number subjects ``sub-0001``... in the order of a keyed hash of their raw key, and series
    within a subject ``-s01``..., so numbers reveal nothing about the raw identifiers."""

    def keyed(text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    subjects = sorted({u.keys.get("subject", u.uid) or u.uid for u in units}, key=keyed)
    width = max(4, len(str(len(subjects))))
    number = {s: f"sub-{i + 1:0{width}d}" for i, s in enumerate(subjects)}
    by_subject: dict[str, list[Unit]] = {}
    for u in units:
        by_subject.setdefault(u.keys.get("subject", u.uid) or u.uid, []).append(u)
    for raw, members in by_subject.items():
        members.sort(key=lambda u: keyed(u.uid))
        swidth = max(2, len(str(len(members))))
        for j, u in enumerate(members):
            u.subject = number[raw]
            u.series = f"{number[raw]}-s{j + 1:0{swidth}d}"


# ---------------------------------------------------------------------------------------------
# Built-in template
# ---------------------------------------------------------------------------------------------
def load_template(spec: str, channels: list[str]) -> Volume:
    """The nilearn MNI152 T1 template (values 0..1) and the requested maps among ``gm``, ``wm`` and
    ``brain``: files inside the nilearn package (resampled by nilearn when resolution is not 1);
    nothing is downloaded."""
    import numpy as np
    from nilearn import datasets

    name, resolution = parse_template(spec)
    maps = {
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
        "brain": datasets.load_mni152_brain_mask,
    }
    img = datasets.load_mni152_template(resolution=resolution)
    vol = Volume(image=np.asarray(img.get_fdata(), dtype=np.float32), affine=np.asarray(img.affine), modality="MR")
    for channel in channels:
        if channel not in maps:
            raise InputError(f"{TEMPLATE_PREFIX}{name} offers the maps {', '.join(maps)}, not '{channel}'")
        m = maps[channel](resolution=resolution)
        if m.shape != img.shape or not np.allclose(m.affine, img.affine):
            raise InputError(f"{TEMPLATE_PREFIX}{name} map '{channel}' is not on the template grid")
        vol.masks[channel] = np.asarray(m.get_fdata(), dtype=np.float32)
    return vol
