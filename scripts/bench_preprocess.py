"""Benchmark of ``imgsynth preprocess`` against a hand-written MONAI chain, and of the loader cache.

    python scripts/bench_preprocess.py [--volumes 8] [--source PATH.nii.gz] [--size 128]

1. Pipeline overhead: the same N NIfTI volumes go through (a) ``imgsynth.data.preprocess`` (plan,
   checks, MONAI chain, items, manifest) and (b) the equivalent hand-written MONAI chain
   (LoadImaged -> Orientationd -> Spacingd -> ScaleIntensityRangePercentilesd -> CropForegroundd
   -> ResizeWithPadOrCropd -> np.save), each in its own fresh process, alternating, best of
   ``--repeats``. Reported: volumes/s, peak RSS of the process (after imports, and total).
   Target: overhead <= 10%.
2. Loader cache: epochs over the produced dataset through ``item_dataset`` + ``make_loader``:
   first epoch (reading items) vs the second (MONAI CacheDataset in memory; PersistentDataset
   on disk). Target: >= 10x.

Data: a real T1 brain MRI (``../shared/data/volumes/chris_t1.nii.gz``, MRIcron's sample image,
BSD-2-Clause; Rorden & Brett 2000) when present, else nilearn's MNI152 template; the N inputs
are that volume shifted by a few voxels each, so no two are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "volumes" / "chris_t1.nii.gz"
SPACING, PERCENTILES, THRESHOLD = 1.5, (0.5, 99.5), -0.8


def make_inputs(folder: Path, n: int, source: Path | None) -> str:
    import nibabel as nib
    import numpy as np

    if source is not None and source.is_file():
        img, name = nib.load(str(source)), source.name
    else:
        from nilearn import datasets

        img, name = datasets.load_mni152_template(), "nilearn MNI152 T1 1 mm"
    data = np.asarray(img.dataobj, dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        shifted = np.roll(data, shift=(k % 3, k // 3 % 3, k % 2), axis=(0, 1, 2))
        nib.save(nib.Nifti1Image(shifted, img.affine), str(folder / f"vol{k:02d}.nii.gz"))
    return f"{name} {list(data.shape)}, {n} shifted copies"


def run_ours(inputs: Path, out: Path, size: int) -> None:
    from imgsynth.data.pipeline import preprocess

    overrides = [
        f"spatial.spacing=[{SPACING}, {SPACING}, {SPACING}]",
        "spatial.crop_foreground=true",
        f"spatial.foreground_threshold={THRESHOLD}",
        f"spatial.size=[{size}, {size}, {size}]",
        "intensity.kind=percentile",
        f"intensity.percentiles=[{PERCENTILES[0]}, {PERCENTILES[1]}]",
    ]
    preprocess([inputs], out, overrides=overrides, workers=1)


def run_monai(inputs: Path, out: Path, size: int) -> None:
    import numpy as np
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityRangePercentilesd,
        Spacingd,
    )

    chain = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            ScaleIntensityRangePercentilesd(
                keys="image", lower=PERCENTILES[0], upper=PERCENTILES[1], b_min=-1.0, b_max=1.0, clip=True
            ),
            Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys="image", pixdim=(SPACING,) * 3, mode="bilinear", dtype=np.float32),
            CropForegroundd(keys="image", source_key="image", select_fn=lambda x: x > THRESHOLD, allow_smaller=True),
            ResizeWithPadOrCropd(keys="image", spatial_size=(size,) * 3, value=-1.0),
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(inputs.glob("*.nii.gz")):
        arr = chain({"image": str(path)})["image"]
        np.save(out / f"{path.name[:-7]}.npy", np.asarray(arr.numpy(), dtype=np.float32))


def child(which: str, inputs: str, out: str, size: int) -> None:
    """Run one side in this (fresh) process and print timing and peak memory as JSON."""
    import monai  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import imgsynth.data.pipeline  # noqa: F401  (both sides pay the same imports)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    (run_ours if which == "ours" else run_monai)(Path(inputs), Path(out), size)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "base_mb": base}))


def spawn(which: str, inputs: Path, out: Path, size: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(
        [sys.executable, __file__, "--child", which, str(inputs), str(out), str(size)],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def same_output(ours: Path, monai: Path) -> float:
    """Largest difference between each of our items and its closest hand-chain output."""
    import numpy as np

    theirs = [np.load(p)[0] for p in sorted(monai.glob("*.npy"))]
    worst = 0.0
    for path in sorted(ours.rglob("items/**/*.npy")):
        a = np.load(path)[0]
        worst = max(worst, min(float(np.abs(a - b).max()) for b in theirs if b.shape == a.shape))
    return worst


def loader_epochs(dataset_dir: Path, cache_dir: Path, batch_size: int) -> dict[str, float]:
    from imgsynth.data.loading import item_dataset, make_loader

    def epoch(loader) -> float:  # noqa: ANN001
        start = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - start

    out = {}
    start = time.perf_counter()
    mem = item_dataset(dataset_dir, None, cache="memory")  # CacheDataset reads every item here
    loader = make_loader(mem, batch_size=batch_size, seed=0, drop_last=False)
    out["memory_first"] = time.perf_counter() - start + epoch(loader)
    out["memory_second"] = min(epoch(loader) for _ in range(3))
    disk = item_dataset(dataset_dir, None, cache="disk", cache_dir=cache_dir)
    disk_loader = make_loader(disk, batch_size=batch_size, seed=0, drop_last=False)
    out["disk_first"] = epoch(disk_loader)
    out["disk_second"] = min(epoch(disk_loader) for _ in range(3))
    nocache = make_loader(item_dataset(dataset_dir, None, cache="none"), batch_size=batch_size, seed=0, drop_last=False)
    out["none"] = min(epoch(nocache) for _ in range(3))
    out["items"] = len(mem)
    return out


def print_epochs(title: str, ep: dict[str, float]) -> None:
    print(f"\nloader, {title}:")
    print(f"  no cache (every epoch)   {ep['none']:.3f} s")
    print(f"  memory cache 1st / 2nd   {ep['memory_first']:.3f} s / {ep['memory_second']:.3f} s"
          f"  -> {ep['memory_first'] / ep['memory_second']:.1f}x (target >= 10x)")
    print(f"  disk cache   1st / 2nd   {ep['disk_first']:.3f} s / {ep['disk_second']:.3f} s"
          f"  -> {ep['disk_first'] / ep['disk_second']:.1f}x")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--source", type=Path, default=SHARED)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        what = make_inputs(tmp_path / "in", args.volumes, args.source)
        print(f"data: {what}; chain: RAS, {SPACING} mm, percentiles {PERCENTILES}, crop, pad {args.size}^3")
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "monai": []}
        for r in range(args.repeats):
            for which in ("monai", "ours") if r % 2 else ("ours", "monai"):
                runs[which].append(spawn(which, tmp_path / "in", tmp_path / f"{which}{r}", args.size))
        best = {k: min(v, key=lambda x: x["seconds"]) for k, v in runs.items()}
        print(f"\n{'':24s}{'volumes/s':>12s}{'seconds':>10s}{'peak RSS MB':>14s}{'after imports':>15s}")
        for k, label in (("monai", "hand-written MONAI"), ("ours", "imgsynth preprocess")):
            b = best[k]
            print(f"{label:24s}{args.volumes / b['seconds']:12.2f}{b['seconds']:10.2f}{b['peak_mb']:14.0f}{b['base_mb']:15.0f}")
        overhead = best["ours"]["seconds"] / best["monai"]["seconds"] - 1
        mem_extra = (best["ours"]["peak_mb"] - best["ours"]["base_mb"]) / max(1.0, best["monai"]["peak_mb"] - best["monai"]["base_mb"]) - 1
        print(f"time overhead of imgsynth vs MONAI chain: {overhead * 100:+.1f}% (target <= +10%)")
        print(f"same work: max |imgsynth - MONAI| over the items = {same_output(tmp_path / 'ours0', tmp_path / 'monai0'):.2e}")
        print(f"working-memory overhead (peak - after imports): {mem_extra * 100:+.1f}%")

        ep = loader_epochs(tmp_path / "ours0", tmp_path / "cache3d", batch_size=2)
        print_epochs(f"{ep['items']:.0f} volumes of {args.size}^3 (above), batch 2", ep)

        from imgsynth.data.pipeline import preprocess

        start = time.perf_counter()
        preprocess(["nilearn:mni152"], tmp_path / "mni", "preprocess_mni152_slices")
        mni_s = time.perf_counter() - start
        ep = loader_epochs(tmp_path / "mni", tmp_path / "cache2d", batch_size=16)
        print_epochs(f"{ep['items']:.0f} MNI152 slices of 64x64 + 2-channel mask (made in {mni_s:.1f} s), batch 16", ep)


if __name__ == "__main__":
    main()
