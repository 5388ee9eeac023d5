"""The demo dataset: nilearn's MNI152 template -> 64x64 slices of three planes (configs/preprocess_mni152_slices.yaml)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest

from imgsynth.cli import main
from imgsynth.contracts import Dataset


@pytest.fixture(scope="module")
def mni(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Run through the CLI with every network connection refused (the template ships with nilearn)."""
    from nilearn import datasets

    for loader in (datasets.load_mni152_template, datasets.load_mni152_gm_template, datasets.load_mni152_wm_template):
        inner = getattr(loader, "__wrapped__", loader)
        for fn in (loader, inner):
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()  # really read the files in this test

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    try:
        out = tmp_path_factory.mktemp("mni") / "ds"
        assert main(["preprocess", "nilearn:mni152", str(out), "--config", "preprocess_mni152_slices"]) == 0
    finally:
        mp.undo()
    return Dataset.read(out)


def test_schema_shape_and_conditions(mni: Dataset) -> None:
    info = mni.info
    assert info.spatial_dims == 2 and info.shape == [1, 64, 64] and info.spacing == [3.0, 3.0]
    assert [(c.name, c.type) for c in info.conditions] == [("plane", "categorical"), ("position", "continuous"), ("tissue", "mask")]
    assert info.condition("plane").categories == ["axial", "coronal", "sagittal"]
    assert info.condition("tissue").channels == 2 and info.condition("position").range == (0.0, 1.0)
    assert (info.intensity.kind, info.intensity.low, info.intensity.high) == ("minmax", 0.0, 1.0)
    assert {r["plane"] for r in mni.rows} == {"axial", "coronal", "sagittal"}
    assert len(mni.rows) > 90 and all(v > 0 for v in info.splits.values()) and set(info.splits) == {"train", "val", "test"}


def test_items_masks_and_positions(mni: Dataset) -> None:
    for plane in ("axial", "coronal", "sagittal"):
        rows = sorted((r for r in mni.rows if r["plane"] == plane), key=lambda r: float(r["position"]))
        pos = [float(r["position"]) for r in rows]
        assert 0 <= pos[0] < pos[-1] <= 1 and len(set(pos)) == len(pos)
        mid = rows[len(rows) // 2]
        img, tissue = mni.load(mid)[0], mni.load_mask(mid, "tissue")
        assert img.shape == (64, 64) and tissue.shape == (2, 64, 64) and img.min() >= -1 and img.max() <= 1
        assert tissue.min() >= 0 and tissue.max() <= 1.0 + 1e-5
        brain = img > -0.9
        assert (img > -0.9).mean() >= 0.05  # the empty-slice filter kept it
        # The maps are aligned with the image: GM+WM covers the brain, WM is the brightest tissue.
        assert (tissue.sum(0)[brain] > 0.5).mean() > 0.8
        assert np.corrcoef(img[brain], tissue[1][brain])[0, 1] > 0.5


def test_block_splits_keep_test_slices_away_from_training_slices(mni: Dataset) -> None:
    gap = 2
    for plane in ("axial", "coronal", "sagittal"):
        ks = {s: [int(re.search(r"(\d+)$", r["id"]).group(1)) for r in mni.rows if r["plane"] == plane and r["split"] == s] for s in ("train", "val", "test")}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            if ks[a] and ks[b]:
                assert min(abs(x - y) for x in ks[a] for y in ks[b]) > gap, (plane, a, b)


def test_template_maps_other_than_gm_wm_brain_are_refused(tmp_path: Path) -> None:
    from imgsynth.data.pipeline import preprocess
    from imgsynth.errors import InputError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: preprocess\nmasks: {m: {channels: [csf]}}\nconditions: [{name: m, source: 'mask:m'}]\n")
    with pytest.raises(InputError, match="offers the maps gm, wm, brain, not 'csf'"):
        preprocess(["nilearn:mni152"], tmp_path / "o", cfg)
