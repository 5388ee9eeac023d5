"""Mask conditions from a dataset folder or a conditions CSV; StyleGAN2 runs through the same path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from imgsynth.contracts import Dataset
from imgsynth.errors import UsageError
from imgsynth.generate import generate
from tests.generate.conftest import assert_dciodvfy_clean


def test_masks_from_a_dataset_folder(mask_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, real = mask_run
    source = Dataset.read(real)
    out = generate(run, tmp_path / "s", n=14, masks_from=real, steps=2, seed=1, batch_size=8, formats=["png", "dicom"])
    back = Dataset.read(out.root)  # mask files copied into the set: it stands alone
    assert back.info.conditions[0].type == "mask" and len(back.rows) == 14
    for i, row in enumerate(back.rows):
        want = np.load(source.root / source.rows[i % len(source.rows)]["tissue"])  # row i mod R
        np.testing.assert_array_equal(np.load(back.root / row["tissue"]), want)
        assert row["tissue"].startswith("masks/")
    # No unit: Secondary Capture, a valid IOD too.
    sc = pydicom.dcmread(back.root / back.rows[0]["dicom"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.ConversionType == "SYN"
    assert_dciodvfy_clean(back.root / back.rows[0]["dicom"])
    distinct = {np.load(source.root / r["tissue"]).tobytes() for r in source.rows}
    assert len({r["tissue"] for r in back.rows}) == len(distinct)  # one copy per distinct mask
    # The same masks named in a conditions CSV (paths relative to the CSV) give the same images.
    csv = tmp_path / "req.csv"
    csv.write_text("tissue\n" + "\n".join(f"{Path(real).name}/{r['tissue']}" for r in source.rows[:3]) + "\n")
    (tmp_path / Path(real).name).symlink_to(real)
    via_csv = generate(run, tmp_path / "csv", conditions_csv=csv, n=3, steps=2, seed=1, formats=())
    for a, b in zip(via_csv.rows, back.rows[:3], strict=True):
        np.testing.assert_allclose(np.load(via_csv.item_path(a)), np.load(back.item_path(b)), atol=1e-5)
    # Another mask changes the image.
    other = generate(run, tmp_path / "one", n=1, conditions=[f"tissue={real / source.rows[5]['tissue']}"], steps=2,
                     seed=1, formats=())
    assert not np.allclose(np.load(other.item_path(other.rows[0])), np.load(back.item_path(back.rows[0])), atol=1e-4)


def test_mask_errors(mask_run: tuple[Path, Path], tiny_run: Path, tmp_path: Path) -> None:
    run, real = mask_run
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 8, 8), np.float32))
    with pytest.raises(UsageError, match=r"mask for 'tissue' has shape \(1, 8, 8\), the model needs \(1, 16, 16\)"):
        generate(run, tmp_path / "a", n=1, conditions=[f"tissue={wrong}"])
    with pytest.raises(UsageError, match="condition 'tissue' is a mask"):
        generate(run, tmp_path / "b", n=1)
    with pytest.raises(UsageError, match="--masks-from: this model takes no mask condition"):
        generate(tiny_run, tmp_path / "c", n=1, masks_from=real)


def test_stylegan2_truncation_through_generate(stylegan2_run: Path, tmp_path: Path) -> None:
    kw = {"n": 4, "conditions": ["label=left", "age=50"], "seed": 3, "formats": ["png", "nifti", "dicom"]}
    default = generate(stylegan2_run, tmp_path / "default", **kw)
    g = default.info.generator
    assert g["family"] == "stylegan2" and g["sampler"] == "direct" and g["options"] == {"truncation": 0.7}
    # psi = 0: every w is the (class) average w, so every image of one condition is the same image.
    flat = generate(stylegan2_run, tmp_path / "psi0", options={"truncation": 0.0}, **kw)
    images = [np.load(flat.item_path(r)) for r in flat.rows]
    for img in images[1:]:
        np.testing.assert_allclose(img, images[0], atol=1e-5)
    assert not np.allclose(np.load(default.item_path(default.rows[0])), np.load(default.item_path(default.rows[1])))
    assert flat.info.generator["options"] == {"truncation": 0.0}
    text = Image.open(flat.root / flat.rows[0]["png"]).text
    assert '"truncation": 0.0' in text["Comment"] and '"family": "stylegan2"' in text["Comment"]
    # Two processes or batch sizes change nothing here either; diffusion-only settings are refused.
    again = generate(stylegan2_run, tmp_path / "b1", batch_size=1, **kw)
    for a, b in zip(default.rows, again.rows, strict=True):
        np.testing.assert_allclose(np.load(default.item_path(a)), np.load(again.item_path(b)), atol=1e-5)
    with pytest.raises(UsageError, match="--steps does not apply to a stylegan2 model"):
        generate(stylegan2_run, tmp_path / "x", steps=10, **kw)
    with pytest.raises(UsageError, match="--sampler 'ddim' is not available"):
        generate(stylegan2_run, tmp_path / "y", sampler="ddim", **kw)
