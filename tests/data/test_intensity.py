"""Intensity mapping: recorded in dataset.json, inverts to the original HU within 0.5 HU."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from imgsynth.contracts import Dataset, Intensity
from imgsynth.data.pipeline import preprocess

from .synth import write_series
from .test_geometry import one
from .test_pipeline import write_nifti

DICOMDIR_TESTS = Path(pydicom.data.get_testdata_file("DICOMDIR")).parent


def ras(vol_image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(vol_image, affine)).dataobj)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ct_window_inverts_to_original_hu(tmp_path: Path, dtype: str) -> None:
    # Real CT (pydicom's CT_small, RescaleIntercept -1024) as a 6-slice series, and real enhanced CT.
    syn = write_series(tmp_path / "in" / "a", n=6)
    shutil.copy(pydicom.data.get_testdata_file("eCT_Supplemental.dcm"), tmp_path / "in" / "ect.dcm")
    window = ["intensity.kind=ct_window", "intensity.low=-1000", "intensity.high=1000", f"dtype={dtype}"]
    ds = Dataset.read(preprocess([tmp_path / "in"], tmp_path / "out", overrides=window).out_dir)
    info = ds.info.intensity
    assert (info.kind, info.low, info.high, info.unit) == ("ct_window", -1000, 1000, "HU")
    assert info.params == {"center": 0.0, "width": 2000.0}
    ect = (tmp_path / "ect")
    ect.mkdir()
    shutil.copy(tmp_path / "in" / "ect.dcm", ect)
    references = [ras(syn.volume, syn.affine), ras(one(ect).image, one(ect).affine)]
    items = sorted((ds.load(r)[0] for r in ds.rows), key=lambda a: a.shape)
    references.sort(key=lambda a: a.shape)
    for item, hu in zip(items, references, strict=True):
        assert item.dtype == np.dtype(dtype) and item.shape == hu.shape
        back = info.to_physical(item)
        inside = (hu > -1000) & (hu < 1000)
        assert inside.mean() > 0.3
        assert np.abs(back[inside] - hu[inside]).max() <= 0.5
        np.testing.assert_array_equal(item[hu <= -1000], -1.0)  # clipped below the window


def test_percentile_per_volume_records_every_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vols = [rng.gamma(2.0, 50.0 * (n + 1), size=(12, 11, 10)).astype(np.float32) for n in range(2)]
    for n, v in enumerate(vols):
        write_nifti(tmp_path / "in" / f"v{n}.nii.gz", v)
    ds = Dataset.read(preprocess([tmp_path / "in"], tmp_path / "out", overrides=["spatial.orientation=null"]).out_dir)
    info = ds.info.intensity
    assert info.kind == "percentile" and info.params["scope"] == "volume" and info.params["percentiles"] == [0.5, 99.5]
    per_series = info.params["per_series"]
    assert len(per_series) == 2
    expected = sorted(tuple(np.percentile(v, [0.5, 99.5])) for v in vols)
    got = sorted(tuple(v) for v in per_series.values())
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-5)
    assert info.low == pytest.approx(np.mean([e[0] for e in expected]), rel=1e-5)
    for row in ds.rows:
        lo, hi = per_series[row["id"]]
        own = Intensity(kind="percentile", low=lo, high=hi)
        back = own.to_physical(ds.load(row)[0])
        src = next(v for v in vols if np.allclose(np.percentile(v, [0.5, 99.5]), [lo, hi], rtol=1e-5))
        inside = (src > lo) & (src < hi)
        np.testing.assert_allclose(back[inside], src[inside], rtol=1e-4, atol=1e-3)


def test_dataset_scope_fits_one_mapping_over_all_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vols = [rng.normal(100 * (n + 1), 10, size=(10, 10, 10)).astype(np.float32) for n in range(3)]
    for n, v in enumerate(vols):
        write_nifti(tmp_path / "in" / f"v{n}.nii.gz", v)
    result = preprocess([tmp_path / "in"], tmp_path / "p", overrides=["intensity.kind=percentile", "intensity.scope=dataset", "intensity.percentiles=[1, 99]"])
    info = result.dataset.info.intensity
    assert info.params == {"scope": "dataset", "percentiles": [1.0, 99.0]}
    assert (info.low, info.high) == pytest.approx(tuple(np.percentile(np.concatenate([v.ravel() for v in vols]), [1, 99])), rel=1e-5)
    mm = preprocess([tmp_path / "in"], tmp_path / "m", overrides=["intensity.kind=minmax", "intensity.scope=dataset"])
    assert (mm.dataset.info.intensity.low, mm.dataset.info.intensity.high) == pytest.approx(
        (min(v.min() for v in vols), max(v.max() for v in vols))
    )


def test_monai_scaling_is_the_contract_mapping() -> None:
    import torch
    from monai.transforms import ScaleIntensityRange

    x = np.linspace(-1500, 2500, 4001, dtype=np.float32)
    mapping = Intensity(kind="ct_window", low=-1000, high=1000)
    monai = ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=-1, b_max=1, clip=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(monai, mapping.to_model(x), atol=1e-6)


def test_minmax_per_volume_maps_min_and_max(tmp_path: Path) -> None:
    v = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    write_nifti(tmp_path / "in" / "a.nii.gz", v)
    ds = preprocess([tmp_path / "in"], tmp_path / "o", overrides=["intensity.kind=minmax"]).dataset
    assert (ds.info.intensity.low, ds.info.intensity.high) == (0.0, 999.0)
    arr = ds.load(ds.rows[0])[0]
    assert arr.min() == -1 and arr.max() == 1
