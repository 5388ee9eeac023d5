from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgsynth.contracts import Dataset
from imgsynth.data.loading import ConditionEncoder, item_dataset, make_loader
from imgsynth.data.medmnist import fit_to_size, import_medmnist


@pytest.fixture(scope="module")
def chest(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("chest")
    return import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", out, max_per_split=20)


def test_medmnist_import_keeps_splits_labels_and_pixels(chest: Dataset, shared_data: Path) -> None:
    raw = np.load(shared_data / "medmnist" / "pneumoniamnist.npz")
    ds = Dataset.read(chest.root)
    assert ds.info.shape == [1, 32, 32] and ds.info.splits == {"train": 20, "val": 20, "test": 20}
    first_test = next(r for r in ds.rows if r["split"] == "test")
    arr = ds.load(first_test)
    # Centre padding by 2 pixels; the mapping back to uint8 values is exact.
    np.testing.assert_allclose(ds.info.intensity.to_physical(arr[0, 2:30, 2:30]), raw["test_images"][0], atol=1e-3)
    assert (arr[0, :2] == -1).all()
    assert first_test["label"] == ["normal", "pneumonia"][int(raw["test_labels"][0, 0])]


def test_loader_encodes_conditions_and_is_deterministic(chest: Dataset) -> None:
    ds = item_dataset(chest, "train")
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["cond"]["label"].dtype == torch.long
    order = [b["index"].tolist() for b in make_loader(ds, batch_size=4, seed=3)]
    again = [b["index"].tolist() for b in make_loader(ds, batch_size=4, seed=3)]
    other = [b["index"].tolist() for b in make_loader(ds, batch_size=4, seed=4)]
    assert order == again and order != other


def test_condition_encoder_round_trip(chest: Dataset) -> None:
    enc = ConditionEncoder(chest.info)
    cond = chest.info.condition("label")
    assert enc.decode_value(cond, enc.encode_value(cond, "pneumonia")) == "pneumonia"


def test_fit_to_size_pads_or_resizes() -> None:
    img = np.arange(28 * 28, dtype=np.float32).reshape(28, 28)
    out = fit_to_size(img, 32)
    assert out.shape == (32, 32) and (out[2:30, 2:30] == img).all()
    assert fit_to_size(np.ones((64, 64, 64), np.float32), 32).shape == (32, 32, 32)
