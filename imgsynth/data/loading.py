"""Torch datasets and loaders over a dataset folder (the reading side of the dataset contract).

Each item becomes ``{"image": FloatTensor[C, *spatial], "cond": {name: tensor}, "index": int}``:
categorical conditions as a ``long`` class index, continuous ones scaled from their declared
``range`` to [-1, 1] as a ``float`` scalar, masks as ``float`` arrays ``[channels, *spatial]``.
Loaded arrays are cached (MONAI ``CacheDataset`` in memory or ``PersistentDataset`` on disk);
random augmentations run after the cache, so they differ per epoch while loading happens once
(:class:`TrainAugment`, or any callable: it is never cached). A memory cache also makes the
process keep freed batch memory for reuse (:func:`imgsynth.utils.memory.reuse_freed_memory`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import CacheDataset, PersistentDataset
from monai.data import Dataset as MonaiDataset
from monai.data.utils import worker_init_fn
from monai.transforms import Compose, MapTransform, Randomizable
from monai.transforms.traits import RandomizableTrait

from imgsynth.contracts import Condition, Dataset, DatasetInfo, load_item
from imgsynth.errors import ContractError
from imgsynth.utils.memory import reuse_freed_memory

CacheKind = Literal["memory", "disk", "none"]


class ConditionEncoder:
    """Maps manifest condition values to tensors and back (one instance per dataset schema)."""

    def __init__(self, info: DatasetInfo, names: Sequence[str] | None = None) -> None:
        wanted = list(info.condition_names if names is None else names)
        self.conditions: list[Condition] = [info.condition(n) for n in wanted]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.conditions]

    def encode_value(self, cond: Condition, value: str | float) -> torch.Tensor:
        if cond.type == "categorical":
            categories = cond.categories or []
            if str(value) not in categories:
                raise ContractError(f"'{value}' is not a category of '{cond.name}' ({', '.join(categories)})")
            return torch.tensor(categories.index(str(value)), dtype=torch.long)
        if cond.type == "continuous":
            lo, hi = cond.range or (0.0, 1.0)
            return torch.tensor(2.0 * (float(value) - lo) / (hi - lo) - 1.0, dtype=torch.float32)
        raise ContractError(f"mask condition '{cond.name}' is encoded from its array, not a value")

    def decode_value(self, cond: Condition, tensor: torch.Tensor) -> str | float:
        if cond.type == "categorical":
            return (cond.categories or [])[int(tensor)]
        lo, hi = cond.range or (0.0, 1.0)
        return float((float(tensor) + 1.0) * 0.5 * (hi - lo) + lo)


class LoadItemd(MapTransform):
    """Load ``image`` (and mask conditions) from a dataset folder; encode the other conditions."""

    def __init__(self, root: Path, encoder: ConditionEncoder) -> None:
        super().__init__(keys=["image"])
        self.root = Path(root)
        self.encoder = encoder

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, Any]:
        row = data["row"]
        image = torch.from_numpy(np.asarray(load_item(self.root / row["path"]), dtype=np.float32))
        cond: dict[str, torch.Tensor] = {}
        for c in self.encoder.conditions:
            if c.type == "mask":
                cond[c.name] = torch.from_numpy(np.asarray(load_item(self.root / row[c.name]), dtype=np.float32))
            else:
                cond[c.name] = self.encoder.encode_value(c, c.parse(row[c.name]))
        return {"image": image, "cond": cond, "index": int(data["index"])}


class TrainAugment(Randomizable):
    """Train-time augmentation of an item: the same random flips / 90-degree turns for the image
    and its mask conditions, and a random intensity scale/shift of the image (model scale).

    ``flip_axes`` are spatial axes (0 = first spatial axis); ``rot90`` turns the last two axes
    by k x 90 degrees (square images only). Seeded with ``seed``; in DataLoader workers
    :func:`make_loader` reseeds each worker from the loader's generator.
    """

    def __init__(
        self,
        *,
        flip_axes: Sequence[int] = (),
        rot90: bool = False,
        scale: float = 0.0,
        shift: float = 0.0,
        prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.flip_axes, self.rot90, self.scale, self.shift, self.prob = tuple(flip_axes), rot90, scale, shift, prob
        self.seed = int(seed)
        self.set_random_state(self.seed)
        self._flips: list[int] = []
        self._k = 0
        self._gain, self._offset = 1.0, 0.0

    def randomize(self, data: Any = None) -> None:
        self._flips = [a for a in self.flip_axes if self.R.rand() < self.prob]
        self._k = int(self.R.randint(0, 4)) if self.rot90 and self.R.rand() < self.prob else 0
        self._gain = 1.0 + float(self.R.uniform(-self.scale, self.scale)) if self.scale else 1.0
        self._offset = float(self.R.uniform(-self.shift, self.shift)) if self.shift else 0.0

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:  # [C, *spatial]
        if self._flips:
            x = torch.flip(x, dims=[a + 1 for a in self._flips])
        if self._k:
            x = torch.rot90(x, self._k, dims=(x.ndim - 2, x.ndim - 1))
        return x

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        self.randomize()
        image = item["image"]
        out = dict(item)
        out["image"] = self._spatial(image) * self._gain + self._offset
        out["cond"] = {
            k: self._spatial(v) if v.ndim == image.ndim else v for k, v in item["cond"].items()
        }
        return out


class _Uncached(RandomizableTrait):
    """Marks a user callable as random, so MONAI's caches stop before it."""

    def __init__(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.fn = fn

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.fn(item)


def item_dataset(
    dataset: Dataset | str | Path,
    split: str | Sequence[str] | None = "train",
    *,
    conditions: Sequence[str] | None = None,
    augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    cache: CacheKind = "memory",
    cache_dir: str | Path | None = None,
    max_items: int | None = None,
) -> torch.utils.data.Dataset:
    """A map-style dataset over the items of ``split`` (all items when None), in manifest order."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset.read(dataset)
    splits = None if split is None else ({split} if isinstance(split, str) else set(split))
    rows = [r for r in ds.rows if splits is None or r["split"] in splits]
    if max_items is not None:
        rows = rows[:max_items]
    if not rows:
        raise ContractError(f"no items in split {sorted(splits) if splits else 'any'}", path=ds.root / "manifest.csv")
    encoder = ConditionEncoder(ds.info, conditions)
    data = [{"row": row, "index": i} for i, row in enumerate(rows)]
    load = LoadItemd(ds.root, encoder)
    if augment is not None and not isinstance(augment, RandomizableTrait):
        augment = _Uncached(augment)
    transform = Compose([load, augment]) if augment is not None else Compose([load])
    if isinstance(augment, TrainAugment):
        augment.set_random_state(augment.seed)  # Compose reseeds its members from MONAI's global seed
    if cache == "memory":
        reuse_freed_memory()  # each new batch reuses the last one's memory: no fresh pages to fault in
        return CacheDataset(data, transform=transform, progress=False, num_workers=0)
    if cache == "disk":
        if cache_dir is None:
            raise ContractError("cache 'disk' needs a cache_dir")
        return PersistentDataset(data, transform=transform, cache_dir=cache_dir)
    return MonaiDataset(data, transform=transform)


def make_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A DataLoader whose order depends only on ``seed`` (and the epoch, via accelerate's sampler)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init_fn if num_workers > 0 else None,
    )
