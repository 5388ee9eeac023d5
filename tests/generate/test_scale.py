"""Generation at scale: image i depends only on (seed, i, condition); resume after a kill; extend a set;
conditions CSV; checkpoint folders; the sampler names of the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import Dataset
from imgsynth.errors import UsageError
from imgsynth.generate import generate, item_seed
from imgsynth.utils.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def _arrays(ds: Dataset) -> dict[str, np.ndarray]:
    return {r["id"]: np.load(ds.item_path(r)) for r in ds.rows}


def _same(a: Dataset, b: Dataset, atol: float = 1e-5) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        np.testing.assert_allclose(xa[k], xb[k], atol=atol, err_msg=k)


@pytest.fixture(scope="module")
def reference(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """6 samples, ddpm sampler (random at every step), in one batch."""
    out = tmp_path_factory.mktemp("ref") / "s"
    return generate(tiny_run, out, n=6, sampler="ddpm", steps=8, seed=3, batch_size=6, formats=["png"])


def test_batch_size_changes_nothing(tiny_run: Path, reference: Dataset, tmp_path: Path) -> None:
    for bs in (1, 4):
        other = generate(tiny_run, tmp_path / f"b{bs}", n=6, sampler="ddpm", steps=8, seed=3, batch_size=bs,
                         formats=["png"])
        _same(reference, other)
        assert [r["seed"] for r in other.rows] == [str(item_seed(3, i)) for i in range(6)]


def test_resume_after_kill(tiny_run: Path, reference: Dataset, tmp_path: Path) -> None:
    """SIGKILL a CLI run mid-way; the same command finishes the set: same images, earlier files untouched."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "imgsynth", "generate", str(tiny_run), str(out), "--n", "6", "--sampler", "ddpm",
           "--steps", "8", "--seed", "3", "--batch-size", "1", "--format", "png"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / ".generate" / "done-000.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(journal)) < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    before = {r["id"]: r for r in read_jsonl(journal)}
    assert 2 <= len(before) < 6 and not (out / "manifest.csv").exists()
    stamps = {i: (out / r["row"]["path"]).stat().st_mtime_ns for i, r in before.items()}

    resumed = generate(tiny_run, out, n=6, sampler="ddpm", steps=8, seed=3, batch_size=4, formats=["png"])
    _same(reference, resumed)
    assert [r["id"] for r in resumed.rows] == [f"synthetic-{i:06d}" for i in range(6)]  # every sample, once
    for i, stamp in stamps.items():  # done before the kill: not made again
        assert (out / before[i]["row"]["path"]).stat().st_mtime_ns == stamp
    assert not list((out / ".generate").glob("done-*.jsonl"))  # the manifest now records them


def test_extend_a_set_and_refuse_other_settings(tiny_run: Path, reference: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "grow"
    small = generate(tiny_run, out, n=2, sampler="ddpm", steps=8, seed=3, formats=["png"])
    stamp = (out / small.rows[0]["path"]).stat().st_mtime_ns
    grown = generate(tiny_run, out, n=6, sampler="ddpm", steps=8, seed=3, formats=["png"])
    _same(reference, grown)
    assert (out / small.rows[0]["path"]).stat().st_mtime_ns == stamp
    with pytest.raises(UsageError, match="generated with seed=3, this run asks for 4"):
        generate(tiny_run, out, n=6, sampler="ddpm", steps=8, seed=4, formats=["png"])
    with pytest.raises(UsageError, match="with steps=8"):
        generate(tiny_run, out, n=6, sampler="ddpm", steps=9, seed=3, formats=["png"])
    with pytest.raises(UsageError, match="already holds 6 samples"):
        generate(tiny_run, out, n=3, sampler="ddpm", steps=8, seed=3, formats=["png"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not a sample set"):
        generate(tiny_run, tmp_path / "other", n=1)


def test_conditions_csv(tiny_run: Path, tmp_path: Path) -> None:
    csv = tmp_path / "requests.csv"
    csv.write_text("count,seed,label,age\n2,17,left,30\n1,,right,\n3,5,right,70\n", encoding="utf-8")
    kw = {"sampler": "ddim", "steps": 3, "formats": ()}
    ds = generate(tiny_run, tmp_path / "csv", conditions_csv=csv, seed=9, batch_size=4, **kw)
    got = [(r["label"], r["age"], int(r["seed"])) for r in ds.rows]
    assert [g[0] for g in got] == ["left", "left", "right", "right", "right", "right"]
    assert [float(g[1]) for g in got[:2]] == [30.0, 30.0] and [float(g[1]) for g in got[3:]] == [70.0] * 3
    assert 0 <= float(got[2][1]) <= 100  # empty cell: drawn
    assert [g[2] for g in got] == [item_seed(17, 0), item_seed(17, 1), item_seed(9, 2), *[item_seed(5, j) for j in range(3)]]
    # A row with a seed reproduces on its own: the same as --n 3 --seed 5 with its conditions.
    alone = generate(tiny_run, tmp_path / "alone", n=3, conditions=["label=right", "age=70"], seed=5, **kw)
    for j, row in enumerate(alone.rows):
        np.testing.assert_allclose(np.load(ds.item_path(ds.rows[3 + j])), np.load(alone.item_path(row)), atol=1e-5)
    bad = tmp_path / "bad.csv"
    for text, message in [("count,colour\n1,red\n", "column 'colour' is neither"),
                          ("count,label\nx,left\n", "count 'x' is not a whole number"),
                          ("count,label\n1,middle\n", "'middle' is not a category")]:
        bad.write_text(text)
        with pytest.raises(UsageError, match=message):
            generate(tiny_run, tmp_path / "never", conditions_csv=bad, **kw)


def test_checkpoint_folder_samples_like_the_run(tiny_run: Path, tmp_path: Path) -> None:
    """The last diffusion checkpoint holds the same EMA weights as weights/diffusion-ema.safetensors."""
    kw = {"n": 2, "steps": 2, "seed": 1, "formats": ()}
    from_run = generate(tiny_run, tmp_path / "run", **kw)
    ckpts = tiny_run / "checkpoints" / "diffusion"
    latest = ckpts / (ckpts / "latest").read_text().strip()
    for source in (latest, ckpts):
        from_ckpt = generate(source, tmp_path / f"ckpt-{source.name}", **kw)
        _same(from_run, from_ckpt)
        assert from_ckpt.info.generator["checkpoint"]["path"] == f"checkpoints/diffusion/{latest.name}/ema.safetensors"
    ae = tiny_run / "checkpoints" / "autoencoder"
    with pytest.raises(UsageError, match="'autoencoder' checkpoint cannot be sampled on its own"):
        generate(ae, tmp_path / "ae", **kw)


def test_sampler_names_and_bf16(tiny_run: Path, tmp_path: Path) -> None:
    kw = {"n": 2, "steps": 3, "seed": 2, "formats": ()}
    a = generate(tiny_run, tmp_path / "alias", sampler="dpmpp", **kw)
    b = generate(tiny_run, tmp_path / "name", sampler="dpm++", **kw)
    _same(a, b)
    assert a.info.generator["sampler"] == "dpm++" and a.info.generator["precision"] == "fp32"
    half = generate(tiny_run, tmp_path / "bf16", sampler="dpmpp", precision="bf16", **kw)
    assert half.info.generator["precision"] == "bf16"
    _same(a, half, atol=0.15)  # bf16 autocast: close to fp32, not equal
    with pytest.raises(UsageError, match="--sampler 'rflow' is not available for this model \\(choose from dpmpp, ddim, ddpm\\)"):
        generate(tiny_run, tmp_path / "flow", sampler="rflow", **kw)
    with pytest.raises(UsageError, match="--truncation does not apply to a ldm model"):
        generate(tiny_run, tmp_path / "trunc", options={"truncation": 0.5}, **kw)
