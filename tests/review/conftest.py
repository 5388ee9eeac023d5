"""Small real and synthetic dataset folders written through imgsynth.contracts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import Condition, Dataset, DatasetInfo, Intensity, save_item, write_dataset

LABELS = ["normal", "pneumonia"]


def make_dataset(
    root: Path,
    images: np.ndarray,
    *,
    split: str | list[str],
    intensity: Intensity,
    spacing: list[float] | None = None,
    orientation: str = "RAS",
    categories: list[str] | None = None,
    labels: list[str] | None = None,
    subjects: list[str] | None = None,
) -> Dataset:
    """A dataset folder of ``images`` ``[N, *spatial]`` (already in model scale / stored units)."""
    n = images.shape[0]
    dims = images.ndim - 1
    categories = categories or LABELS
    info = DatasetInfo(
        spatial_dims=dims,
        shape=[1, *images.shape[1:]],
        spacing=spacing or [1.0] * dims,
        orientation=orientation,
        intensity=intensity,
        conditions=[Condition(name="label", type="categorical", categories=categories)],
    )
    splits = [split] * n if isinstance(split, str) else split
    rows = []
    for i in range(n):
        rel = save_item(root, f"items/{i:05d}.npy", images[i][None].astype(np.float32))
        rows.append({
            "id": f"{i:05d}", "path": rel, "split": splits[i],
            "subject": subjects[i] if subjects else f"s{i:05d}",
            "label": labels[i] if labels else categories[i % len(categories)],
        })
    return write_dataset(root, info, rows)


def blobs_2d(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random images in [-1, 1] (a stand-in for generated samples)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cx, cy, s = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)) + 0.05 * rng.normal(size=(size, size))
        out[i] = np.clip(2 * img - 1, -1, 1)
    return out


def minmax_intensity() -> Intensity:
    return Intensity(kind="minmax", low=0.0, high=255.0, unit="", params={"source": "uint8"})


def ct_intensity() -> Intensity:
    return Intensity(kind="ct_window", low=-160.0, high=240.0, unit="HU", params={"center": 40, "width": 400})


@pytest.fixture()
def pair_2d(tmp_path: Path) -> tuple[Path, Path]:
    """Generated 2D real (test split) and synthetic datasets, 16x16."""
    rng = np.random.default_rng(0)
    real = make_dataset(tmp_path / "real", blobs_2d(12, 16, rng), split=["test"] * 8 + ["train"] * 4,
                        intensity=minmax_intensity(), spacing=[0.5, 0.5])
    synth = make_dataset(tmp_path / "synth", blobs_2d(10, 16, rng), split="synthetic",
                         intensity=minmax_intensity(), spacing=[0.5, 0.5])
    return real.root, synth.root


@pytest.fixture()
def pair_3d(tmp_path: Path) -> tuple[Path, Path]:
    """Generated 3D CT-like volumes in HU (model scale), [6, 10, 12] RAS voxels of 0.8 x 0.9 x 2.5 mm."""
    rng = np.random.default_rng(1)

    def vols(n: int) -> np.ndarray:
        return np.clip(rng.normal(0.0, 0.4, (n, 6, 10, 12)), -1, 1).astype(np.float32)

    real = make_dataset(tmp_path / "real3d", vols(5), split="test", intensity=ct_intensity(), spacing=[0.8, 0.9, 2.5])
    synth = make_dataset(tmp_path / "synth3d", vols(5), split="synthetic", intensity=ct_intensity(),
                         spacing=[0.8, 0.9, 2.5])
    return real.root, synth.root
