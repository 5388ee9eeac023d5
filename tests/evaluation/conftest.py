"""Real data for the evaluation tests: PneumoniaMNIST and AdrenalMNIST3D dataset folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import Dataset, save_item, write_dataset
from imgsynth.data.medmnist import import_medmnist

# Tiny settings on top of the built-in quick config: every section runs, in seconds.
TINY = [
    "threads=1",
    "features.domain.width=8",
    "features.domain.levels=2",
    "features.domain.steps=12",
    "features.domain.batch_size=32",
    "distance.bootstrap=3",
    "distance.kid_subsets=5",
    "distance.kid_subset_size=20",
    "diversity.pairs=30",
    "downstream.seeds=1",
    "downstream.epochs=1",
    "downstream.bootstrap=50",
    "report.bootstrap=30",
]


def write_synthetic(out: Path, real: Dataset, images: Sequence[np.ndarray], labels: Sequence[str] | None,
                    ids: Sequence[str] | None = None) -> Dataset:
    """A sample set (dataset folder, split 'synthetic') holding ``images`` in the real dataset's scale."""
    rows = []
    for k, arr in enumerate(images):
        item_id = ids[k] if ids is not None else f"sample-{k:04d}"
        rel = save_item(out, f"items/sample-{k:04d}.npy", np.asarray(arr, dtype=np.float32))
        row = {"id": item_id, "path": rel, "split": "synthetic", "subject": f"synthetic-{k:04d}"}
        if labels is not None:
            row["label"] = labels[k]
        rows.append(row)
    info = real.info if labels is not None else real.info.model_copy(update={"conditions": []})
    return write_dataset(out, info, rows)


def stack(ds: Dataset, split: str) -> np.ndarray:
    return np.stack([ds.load(r) for r in ds.split(split)])


@pytest.fixture(scope="session")
def chest(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """PneumoniaMNIST, 32x32: 60 train / 60 val / 60 test images."""
    out = tmp_path_factory.mktemp("chest")
    return import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", out, max_per_split=60)


@pytest.fixture(scope="session")
def adrenal(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """AdrenalMNIST3D resized to 32^3: 16 volumes per split."""
    out = tmp_path_factory.mktemp("adrenal")
    return import_medmnist(shared_data / "volumes" / "adrenalmnist3d_64.npz", out, size=32, max_per_split=16)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny workloads: one intra-op thread avoids oversubscription on small (2-core) machines."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
