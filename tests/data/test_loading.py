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


@pytest.fixture(scope="module")
def slices_with_masks(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """A 2D dataset with a mask and a continuous condition, made by ``preprocess`` from NIfTI."""
    import nibabel as nib

    from imgsynth.data.pipeline import preprocess

    root = tmp_path_factory.mktemp("maskin")
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 100, size=(16, 16, 12)).astype(np.float32)
    seg = (img > 50).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "a.nii.gz"))
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(root / "a_seg.nii.gz"))
    cfg = root.parent / "cfg.yaml"
    cfg.write_text(
        "kind: preprocess\nspatial_dims: 2\nintensity: {kind: minmax, low: 0, high: 100}\n"
        "masks: {seg: {channels: [_seg]}}\n"
        "conditions: [{name: pos, source: position}, {name: seg, source: 'mask:seg'}]\n"
        "split: {by: block, block: 3, gap: 0, train: 0.5, val: 0.25, test: 0.25}\n"
    )
    return preprocess([root], tmp_path_factory.mktemp("maskout") / "ds", cfg).dataset


def test_loader_gives_masks_and_scaled_continuous_conditions(slices_with_masks: Dataset) -> None:
    ds = item_dataset(slices_with_masks, None, cache="none")
    item = ds[0]
    row = slices_with_masks.rows[0]
    assert item["image"].shape == (1, 16, 16) and item["cond"]["seg"].shape == (1, 16, 16)
    np.testing.assert_array_equal(item["cond"]["seg"].numpy(), slices_with_masks.load_mask(row, "seg"))
    assert item["cond"]["pos"].dtype == torch.float32
    assert float(item["cond"]["pos"]) == pytest.approx(2 * float(row["pos"]) - 1)  # range [0, 1] -> [-1, 1]
    # The mask is the thresholded image, so it stays aligned with it.
    np.testing.assert_array_equal(item["cond"]["seg"].numpy() > 0.5, item["image"].numpy() > 0)


def _batches(ds: torch.utils.data.Dataset, batch_size: int) -> list[dict]:
    from imgsynth.data.loading import make_loader

    return list(make_loader(ds, batch_size=batch_size, seed=7, drop_last=False))


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
        torch.testing.assert_close(x["index"], y["index"], rtol=0, atol=0)
        assert x["cond"].keys() == y["cond"].keys()
        for k in x["cond"]:
            torch.testing.assert_close(x["cond"][k], y["cond"][k], rtol=0, atol=0)


def test_caches_give_exactly_the_uncached_batches(slices_with_masks: Dataset, tmp_path: Path) -> None:
    none = item_dataset(slices_with_masks, "train", cache="none")
    mem = item_dataset(slices_with_masks, "train", cache="memory")
    disk = item_dataset(slices_with_masks, "train", cache="disk", cache_dir=tmp_path / "cache")
    for i in range(len(mem)):
        torch.testing.assert_close(mem[i]["image"], disk[i]["image"], rtol=0, atol=0)
    assert any((tmp_path / "cache").iterdir())
    reference = _batches(none, 4)
    for ds in (mem, disk):
        for _epoch in range(2):  # the first epoch fills the disk cache; the second reads it back
            _assert_same_batches(_batches(ds, 4), reference)


def test_three_d_caches_give_exactly_the_uncached_batches(tmp_path: Path) -> None:
    import nibabel as nib

    from imgsynth.data.pipeline import preprocess

    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        vol = rng.normal(size=(12, 10, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "in" / f"v{i}.nii.gz"))
    out = preprocess([tmp_path / "in"], tmp_path / "out").out_dir
    reference = _batches(item_dataset(out, None, cache="none"), 2)
    assert reference[0]["image"].shape[1:] == (1, 12, 10, 8)
    for ds in (item_dataset(out, None, cache="memory"), item_dataset(out, None, cache="disk", cache_dir=tmp_path / "c")):
        for _epoch in range(2):
            _assert_same_batches(_batches(ds, 2), reference)


def test_train_augment_is_seeded_not_cached_and_moves_masks_with_images(slices_with_masks: Dataset) -> None:
    from imgsynth.data.loading import TrainAugment

    def epochs(seed: int) -> list[torch.Tensor]:
        ds = item_dataset(slices_with_masks, "train", augment=TrainAugment(flip_axes=(0, 1), rot90=True, scale=0.1, seed=seed))
        return [torch.stack([ds[i]["image"] for i in range(len(ds))]) for _ in range(2)]

    a, b = epochs(1), epochs(1)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], a[1])  # a new draw every epoch: the cache stops before it
    ds = item_dataset(slices_with_masks, "train", augment=TrainAugment(flip_axes=(0, 1), rot90=True, seed=3))
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(item["cond"]["seg"].numpy() > 0.5, item["image"].numpy() > 0)


def test_three_d_items_load(tmp_path: Path) -> None:
    import nibabel as nib

    from imgsynth.data.pipeline import preprocess

    (tmp_path / "in").mkdir()
    vol = np.random.default_rng(2).normal(size=(8, 9, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "in" / "v.nii.gz"))
    ds = item_dataset(preprocess([tmp_path / "in"], tmp_path / "out").out_dir, None)
    assert ds[0]["image"].shape == (1, 8, 9, 10) and ds[0]["cond"] == {}


def test_memory_cache_makes_the_process_reuse_freed_batches(chest: Dataset) -> None:
    import platform
    import resource

    from imgsynth.utils import memory

    item_dataset(chest, "train", cache="memory")
    if platform.libc_ver()[0] != "glibc":
        assert memory.reuse_freed_memory() is False
        return
    assert memory.reuse_freed_memory() is True  # set once, by the memory cache
    # A freed 16 MiB block is reused by the next one of its size: fresh pages are faulted in at most
    # once more (4096 faults a block), not for each of the 8 blocks (32768).
    for _ in range(2):
        torch.empty(4 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.empty(4 << 20).fill_(1.0)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 2 * 4096
