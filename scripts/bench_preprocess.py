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


def evict(dataset_dir: Path) -> None:
    """Drop the dataset folder's files from the OS page cache (as on first contact from another machine)."""
    for path in dataset_dir.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def loader_child(dataset_dir: str, cache: str, page_cache: str, batch_size: int, cache_dir: str) -> None:
    """In this fresh process, as a training run does: open the dataset folder, run two epochs.

    Epoch 1 counts everything from first contact (building the dataset, which for the memory cache
    reads every item) to the end of the first pass; epoch 2 is the next pass of the same loader.
    Both are one pass each, timed the same way.
    """
    from imgsynth.data.loading import item_dataset, make_loader

    if page_cache == "cold":
        evict(Path(dataset_dir))

    def epoch(loader) -> int:  # noqa: ANN001
        return sum(1 for _ in loader)

    start = time.perf_counter()
    ds = item_dataset(dataset_dir, None, cache=cache, cache_dir=cache_dir if cache == "disk" else None)  # type: ignore[arg-type]
    loader = make_loader(ds, batch_size=batch_size, seed=0, drop_last=False)
    epoch(loader)
    first = time.perf_counter() - start
    start = time.perf_counter()
    epoch(loader)
    second = time.perf_counter() - start
    print(json.dumps({"first": first, "second": second, "items": len(ds)}))


def loader_epochs(dataset_dir: Path, work: Path, batch_size: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    """First and second epoch of each cache, each repeat in a fresh process; page cache warm and cold."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out: dict[str, dict[str, list[float]]] = {}
    for r in range(repeats):
        for cache, page_cache in (("memory", "warm"), ("memory", "cold"), ("disk", "warm"), ("none", "warm")):
            cache_dir = work / f"{cache}-{page_cache}-{r}"
            res = subprocess.run(
                [sys.executable, __file__, "--loader-child", str(dataset_dir), cache, page_cache, str(batch_size),
                 str(cache_dir)],
                check=True, capture_output=True, text=True, env=env,
            )
            got = json.loads(res.stdout.strip().splitlines()[-1])
            row = out.setdefault(f"{cache}-{page_cache}", {"first": [], "second": [], "items": []})
            for k in row:
                row[k].append(got[k])
    return out


def print_epochs(title: str, ep: dict[str, dict[str, list[float]]]) -> None:
    import statistics

    def span(v: list[float]) -> str:
        med = statistics.median(v)
        return f"{med:.3f} s" if len(v) == 1 else f"{med:.3f} s [{min(v):.3f}-{max(v):.3f}]"

    print(f"\nloader, {title}; median [min-max] over {len(ep['none-warm']['first'])} fresh processes:")
    print(f"  no cache (1st / 2nd)              {span(ep['none-warm']['first'])} / {span(ep['none-warm']['second'])}")
    for key, label, target in (
        ("memory-warm", "memory cache, files in page cache", "  (target >= 10x)"),
        ("memory-cold", "memory cache, files not in RAM  ", "  (target >= 10x)"),
        ("disk-warm", "disk cache                       ", ""),
    ):
        first, second = ep[key]["first"], ep[key]["second"]
        ratios = [a / b for a, b in zip(first, second, strict=True)]
        print(f"  {label} 1st / 2nd   {span(first)} / {span(second)}  -> "
              f"{statistics.median(ratios):.1f}x [{min(ratios):.1f}-{max(ratios):.1f}]{target}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--loader-child":
        loader_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--loader-repeats", type=int, default=5)
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

        ep = loader_epochs(tmp_path / "ours0", tmp_path / "cache3d", 2, args.loader_repeats)
        print_epochs(f"{ep['none-warm']['items'][0]:.0f} volumes of {args.size}^3 (above), batch 2", ep)

        from imgsynth.data.pipeline import preprocess

        start = time.perf_counter()
        preprocess(["nilearn:mni152"], tmp_path / "mni", "preprocess_mni152_slices")
        mni_s = time.perf_counter() - start
        ep = loader_epochs(tmp_path / "mni", tmp_path / "cache2d", 16, args.loader_repeats)
        print_epochs(f"{ep['none-warm']['items'][0]:.0f} MNI152 slices of 64x64 + 2-channel mask (made in {mni_s:.1f} s), batch 16", ep)


if __name__ == "__main__":
    main()
