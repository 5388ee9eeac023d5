"""Reading the real and synthetic dataset folders into image sets (the reading side of the contract).

From ``--real``: the train split is the memorization reference and the held-out split (test, else
val) the real comparison set; a missing split is reported and what exists is used. From
``--synthetic``: every item, whatever its split. Synthetic items are brought to the real
dataset's model scale when the two intensity mappings differ (through physical units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsynth.contracts import Dataset, DatasetInfo
from imgsynth.errors import ContractError, UsageError
from imgsynth.evaluation.config import DataSection
from imgsynth.utils.log import get_logger, progress

log = get_logger("evaluation")


@dataclass
class ImageSet:
    """Images ``[N, C, *spatial]`` (float32, the real dataset's model scale) with ids and conditions."""

    name: str
    images: np.ndarray
    ids: list[str]
    conditions: dict[str, list[str]]
    source: str
    splits: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray | Sequence[int], name: str | None = None) -> ImageSet:
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(
            name=name or self.name,
            images=self.images[idx],
            ids=[self.ids[i] for i in idx],
            conditions={k: [v[i] for i in idx] for k, v in self.conditions.items()},
            source=self.source,
            splits=self.splits,
        )


@dataclass
class Inputs:
    info: DatasetInfo
    synthetic_info: DatasetInfo
    real_train: ImageSet
    real_test: ImageSet
    synthetic: ImageSet
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    nonfinite_synthetic: int = 0

    @property
    def spatial_dims(self) -> int:
        return self.info.spatial_dims


def _pick(rows: list[dict[str, str]], cap: int | None, rng: np.random.Generator) -> list[dict[str, str]]:
    if cap is None or len(rows) <= cap:
        return rows
    keep = np.sort(rng.choice(len(rows), size=cap, replace=False))
    return [rows[i] for i in keep]


def _load_rows(
    ds: Dataset,
    rows: list[dict[str, str]],
    name: str,
    skipped: list[dict[str, str]],
    convert: DatasetInfo | None = None,
) -> ImageSet:
    arrays, ids = [], []
    conds: dict[str, list[str]] = {c.name: [] for c in ds.info.conditions if c.type != "mask"}
    expected = tuple(ds.info.shape)
    for row in progress(rows, total=len(rows), description=f"reading {name}"):
        try:
            arr = np.asarray(ds.load(row), dtype=np.float32)
            if arr.shape != expected:
                raise ContractError(f"item shape {arr.shape} differs from dataset.json shape {list(expected)}")
        except ContractError as exc:
            skipped.append({"set": name, "id": row["id"], "reason": str(exc)})
            continue
        if convert is not None:
            arr = convert.intensity.to_model(ds.info.intensity.to_physical(arr))
        arrays.append(arr)
        ids.append(row["id"])
        for key in conds:
            conds[key].append(row[key])
    if not arrays:
        raise ContractError(f"no readable items for the {name} set", path=ds.root / "manifest.csv")
    return ImageSet(
        name=name,
        images=np.stack(arrays),
        ids=ids,
        conditions=conds,
        source=str(ds.root),
        splits=sorted({r["split"] for r in rows}),
    )


def resolve_real_splits(
    ds: Dataset, held_out: Sequence[str], rng: np.random.Generator
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """(reference rows, held-out rows, notes): train and test, or a clearly reported fallback."""
    notes: list[str] = []
    train = ds.split("train")
    test: list[dict[str, str]] = []
    used = ""
    for name in held_out:
        test = ds.split(name)
        if test:
            used = name
            break
    if test and used != "test":
        notes.append(f"the real dataset has no 'test' split; the '{used}' split ({len(test)} items) is the held-out real set")
    if not train:
        others = [r for r in ds.rows if r["split"] not in ("train", used, "synthetic")]
        if others:
            train = others
            notes.append(
                f"the real dataset has no 'train' split; splits {sorted({r['split'] for r in others})} are the memorization reference"
            )
    if not train and not test:
        raise ContractError("the real dataset has no train, val or test items", path=ds.root / "manifest.csv")
    if not train or not test:
        pool = train or test
        if len(pool) < 4:
            raise ContractError(
                f"the real dataset has only {len(pool)} items in one split; need train and held-out items",
                path=ds.root / "manifest.csv",
            )
        order = rng.permutation(len(pool))
        half = len(pool) // 2
        which = "train" if train else used
        train, test = [pool[i] for i in sorted(order[:half])], [pool[i] for i in sorted(order[half:])]
        notes.append(
            f"the real dataset has only a '{which}' split: it was halved at random (seeded): "
            f"{len(train)} items are the memorization reference, {len(test)} the held-out real set"
        )
    return train, test, notes


def load_inputs(real: str | Path, synthetic: str | Path, cfg: DataSection, seed: int = 0) -> Inputs:
    """Read both dataset folders, check they are comparable, and sample the configured caps."""
    real_ds = Dataset.read(real)
    syn_ds = Dataset.read(synthetic)
    ri, si = real_ds.info, syn_ds.info
    if ri.spatial_dims != si.spatial_dims:
        raise UsageError(f"--real is {ri.spatial_dims}D but --synthetic is {si.spatial_dims}D; compare like with like")
    if ri.shape != si.shape:
        raise UsageError(
            f"--real items have shape {ri.shape} but --synthetic items {si.shape}; "
            "resample one dataset (preprocess) to the other's shape first"
        )
    rng = np.random.default_rng(seed)
    train_rows, test_rows, notes = resolve_real_splits(real_ds, cfg.held_out_splits, rng)
    syn_rows = list(syn_ds.rows)
    if not syn_rows:
        raise ContractError("the synthetic dataset has no items", path=syn_ds.root / "manifest.csv")
    skipped: list[dict[str, str]] = []
    convert = None
    if si.intensity != ri.intensity:
        convert = ri
        notes.append(
            f"intensity mappings differ (real {ri.intensity.kind} [{ri.intensity.low}, {ri.intensity.high}], synthetic "
            f"{si.intensity.kind} [{si.intensity.low}, {si.intensity.high}]): synthetic items were mapped to the real scale"
        )
    real_train = _load_rows(real_ds, _pick(train_rows, cfg.max_real_train, rng), "real_train", skipped)
    real_test = _load_rows(real_ds, _pick(test_rows, cfg.max_real_test, rng), "real_test", skipped)
    syn = _load_rows(syn_ds, _pick(syn_rows, cfg.max_synthetic, rng), "synthetic", skipped, convert)
    for s in (real_train, real_test, syn):
        if len(s) < 4:
            raise UsageError(f"the {s.name.replace('_', ' ')} set has {len(s)} readable items; the metrics need at least 4")
    nonfinite = int((~np.isfinite(syn.images)).any(axis=tuple(range(1, syn.images.ndim))).sum())
    if nonfinite:
        notes.append(f"{nonfinite} synthetic items hold NaN/inf values; they were set to 0 for the metrics")
        syn.images = np.nan_to_num(syn.images, nan=0.0, posinf=0.0, neginf=0.0)
    for s in skipped:
        log.warning("skipped %s item %s: %s", s["set"], s["id"], s["reason"])
    return Inputs(ri, si, real_train, real_test, syn, notes, skipped, nonfinite)


def data_range(info: DatasetInfo, configured: float | None) -> tuple[float, str]:
    """The explicit data range for SSIM/PSNR: 2.0 in model scale, else the configured value."""
    if configured is not None:
        return float(configured), "configured similarity.data_range"
    if info.intensity.kind != "none":
        return 2.0, "model scale [-1, 1] of the dataset contract"
    raise UsageError(
        "the real dataset stores physical units (intensity kind 'none'); set similarity.data_range "
        "(e.g. --set similarity.data_range=4000 for HU in [-1000, 3000])"
    )
