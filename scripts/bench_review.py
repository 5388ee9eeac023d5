"""Benchmark of the review stage: export, DICOM writing, package size, scoring, browser rendering.

Each figure is a ratio measured side by side in this run:
  * export: seconds per case of `review export` vs a bare `np.save` of the same arrays;
  * DICOM: `write_series` vs the minimal pydicom `dcmwrite` of the same slices;
  * size: bytes of a case file vs the raw 16-bit pixels;
  * scoring: `review score` (bootstrap 2000) seconds;
  * browser (when chromium is installed): time to decode + draw one case vs a 60 Hz frame.

    python scripts/bench_review.py [--cases 40] [--readers 3] [--size3d 96]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsynth.contracts import (  # noqa: E402
    AnswerRow,
    DatasetInfo,
    Intensity,
    read_key,
    save_item,
    write_answers,
    write_dataset,
)
from imgsynth.export.dicom import write_series  # noqa: E402
from imgsynth.review import export_review, score_review  # noqa: E402
from imgsynth.review.config import ReviewExportConfig, ReviewScoreConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


def dataset(root: Path, images: np.ndarray, split: str, intensity: Intensity, spacing: list[float]) -> Path:
    info = DatasetInfo(spatial_dims=images.ndim - 1, shape=[1, *images.shape[1:]], spacing=spacing,
                       intensity=intensity)
    rows = []
    for i, img in enumerate(images):
        rows.append({"id": f"{i:05d}", "path": save_item(root, f"items/{i:05d}.npy", img[None]), "split": split,
                     "subject": f"s{i}"})
    write_dataset(root, info, rows)
    return root


def timed(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_2d(tmp: Path, n: int, readers: int) -> None:
    mm = Intensity(kind="minmax", low=0.0, high=255.0)
    if SHARED.is_file():
        raw = np.load(SHARED)["test_images"][: 2 * n].astype(np.float32)
        source = "PneumoniaMNIST test split (28x28)"
    else:
        raw = np.random.default_rng(0).integers(0, 256, (2 * n, 28, 28)).astype(np.float32)
        source = "random 28x28 (shared data absent)"
    real = dataset(tmp / "r2", mm.to_model(raw[:n]), "test", mm, [1.0, 1.0])
    synth = dataset(tmp / "s2", mm.to_model(raw[n:]), "synthetic", mm, [1.0, 1.0])
    cfg = ReviewExportConfig(n_real=n // 2, n_synthetic=n // 2, readers=readers, seed=0)
    t_export = timed(lambda: export_review(real, synth, tmp / "out2d", cfg))
    arrays = [np.load(p) for p in sorted((real / "items").glob("*.npy"))[: n // 2]] * 2
    t_save = timed(lambda: [np.save(tmp / f"copy{i}.npy", a) for _ in range(readers) for i, a in enumerate(arrays)])
    print(f"[2D {source}] export {n} cases x {readers} readers: {t_export:.2f} s "
          f"({1e3 * t_export / (n * readers):.2f} ms per case-reader); bare np.save of the same: {t_save:.3f} s; "
          f"ratio {t_export / max(t_save, 1e-9):.1f}x")
    return tmp / "out2d"


def bench_3d(tmp: Path, size: int) -> Path:
    ct = Intensity(kind="ct_window", low=-1000.0, high=1000.0, unit="HU")
    rng = np.random.default_rng(1)
    vols = np.clip(rng.normal(0, 0.3, (4, size, size, size)), -1, 1).astype(np.float32)
    real = dataset(tmp / "r3", vols[:2], "test", ct, [0.8, 0.8, 1.5])
    synth = dataset(tmp / "s3", vols[2:], "synthetic", ct, [0.8, 0.8, 1.5])
    cfg = ReviewExportConfig(n_real=2, n_synthetic=2, readers=1, seed=0)
    t_pkg = timed(lambda: export_review(real, synth, tmp / "out3d", cfg))
    cfg_dicom = ReviewExportConfig(n_real=2, n_synthetic=2, readers=1, seed=0, dicom=True)
    t_both = timed(lambda: export_review(real, synth, tmp / "out3d-dicom", cfg_dicom))
    case = next((tmp / "out3d" / "readers" / "R01" / "cases").glob("*.js"))
    print(f"[3D {size}^3 CT] package size per case {case.stat().st_size / 1e6:.2f} MB = "
          f"{case.stat().st_size / (2 * size**3):.3f}x the raw int16 pixels (base64, uncompressed: equal sizes)")
    print(f"[3D {size}^3 CT] export 4 cases: {t_pkg:.2f} s; with --dicom {t_both:.2f} s "
          f"(DICOM adds {100 * (t_both - t_pkg) / max(t_pkg, 1e-9):.0f}%)")

    # write_series vs the minimal pydicom write of the same slices.
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    vol = np.rint(vols[0] * 1000).astype(np.float32)
    t_ours = timed(lambda: write_series(vol, out_dir=tmp / "ours", spacing=(0.8, 0.8, 1.5), affine_or_orientation="RAS",
                                        modality="CT", unit="HU", synthetic=True, provenance={"seed": 1}))

    def minimal() -> None:
        (tmp / "min").mkdir()
        for k in range(vol.shape[0]):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ds.Rows, ds.Columns = vol.shape[1:]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = vol[k].astype("<i2").tobytes()
            pydicom.dcmwrite(tmp / "min" / f"{k}.dcm", ds, enforce_file_format=True)

    t_min = timed(minimal)
    print(f"[DICOM {size} slices] write_series {t_ours:.2f} s vs minimal pydicom write {t_min:.2f} s: "
          f"ratio {t_ours / max(t_min, 1e-9):.2f}x (full CT IOD, geometry, markers, atomic rename)")
    return tmp / "out3d"


def bench_score(tmp: Path, out2d: Path) -> None:
    key = read_key(out2d / "key.csv")
    rng = np.random.default_rng(0)
    files = []
    for reader in sorted({k.reader for k in key}):
        rows = [AnswerRow(reader=reader, case=k.case, answer=("synthetic" if rng.random() < 0.5 else "real"),
                          confidence=int(rng.integers(1, 6)), quality=int(rng.integers(1, 6)), seconds=10.0)
                for k in key if k.reader == reader]
        files.append(write_answers(tmp / f"a-{reader}.csv", rows))
    t = timed(lambda: score_review(out2d / "key.csv", files, tmp / "scores", ReviewScoreConfig(bootstrap=2000)))
    print(f"[score] {len(key)} answers, {len(files)} readers, bootstrap 2000: {t:.2f} s")


def bench_browser(out3d: Path, out2d: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        print("[browser] chromium not installed: skipped")
        return
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        for name, folder in (("2D", out2d), ("3D", out3d)):
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto((folder / "readers" / "R01" / "index.html").as_uri())
            page.wait_for_function("() => window.imgsynthReady === true && document.getElementById('loading').hidden")
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                page.click("#case-list li:nth-child(2) button")
                page.wait_for_function("() => document.getElementById('loading').hidden")
                page.click("#case-list li:nth-child(3) button")
                page.wait_for_function("() => document.getElementById('loading').hidden")
                times.append((time.perf_counter() - t0) / 2)
            wl = page.evaluate("""() => { const b = document.querySelectorAll('#presets button');
                const t0 = performance.now(); for (let i = 0; i < 20; i++) b[i % b.length].click();
                return (performance.now() - t0) / 20; }""")
            ms = 1e3 * min(times)
            print(f"[browser {name}] open a case (load + decode + draw) {ms:.1f} ms = {ms / 16.7:.2f} frames at 60 Hz; "
                  f"window change {wl:.2f} ms = {wl / 16.7:.3f} frames")
            page.close()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--size3d", type=int, default=96)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        out2d = bench_2d(tmp, args.cases, args.readers)
        out3d = bench_3d(tmp, args.size3d)
        bench_score(tmp, out2d)
        bench_browser(out3d, out2d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
