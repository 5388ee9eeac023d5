"""StyleGAN2 on the shared loop: 2-process DDP, resume equivalence, a short run on real chest X-rays."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgsynth.config import load_config
from imgsynth.contracts import Dataset, RunFolder
from imgsynth.errors import UsageError
from imgsynth.training.checkpoint import CheckpointStore
from imgsynth.training.cli import launch_command
from imgsynth.training.run import train
from imgsynth.training.task import get_family

REPO = Path(__file__).resolve().parents[2]
BATCH = 8
# A few-thousand-parameter StyleGAN2 on 16x16 blobs. ADA aims at r_t = -0.9, so p rises by 16 / 40 = 0.4
# at every adjustment (every 2 steps of 8 images): visibly non-zero state to save and restore.
TINY = [
    "seed=5",
    "model.generator.z_dim=16", "model.generator.w_dim=16", "model.generator.mapping_layers=2",
    "model.generator.channel_base=128", "model.generator.channel_max=16",
    "model.discriminator.channel_base=128", "model.discriminator.channel_max=16", "model.discriminator.mapping_layers=1",
    "model.loss.r1_interval=2", "model.loss.pl_interval=2",
    "model.augment.speed_kimg=0.04", "model.augment.interval=2", "model.augment.target=-0.9",
    f"stages.stylegan2.batch={BATCH}", "stages.stylegan2.ema_halflife_kimg=0.02",
    "loop.sample_kimg=null", "loop.progress=false", f"loop.log_kimg={BATCH / 1000}",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded BLAS: tiny convolutions run faster and timings stay stable on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _overrides(steps: int, *extra: str) -> list[str]:
    return [*TINY, f"stages.stylegan2.kimg={steps * BATCH / 1000}", f"loop.checkpoint_kimg={steps * BATCH / 1000}", *extra]


def _config(steps: int, *extra: str):
    return load_config("stylegan2_2d_tiny", _overrides(steps, *extra))


@pytest.mark.ddp
def test_two_process_ddp_keeps_ranks_identical(tiny_dataset: Dataset, tmp_path: Path) -> None:
    """2 processes x 4 images end with identical weights on both ranks, equal to 1 process x 2 micro-batches."""
    out, run = tmp_path / "out", tmp_path / "run"
    cmd, env = launch_command([], 2, cpu=True)
    module_at = cmd.index("-m", cmd.index("--multi_gpu"))
    cmd = [*cmd[:module_at], str(REPO / "tests" / "training" / "stylegan2_ddp_worker.py"), str(tiny_dataset.root),
           str(run), str(out)]
    for item in _overrides(4):
        cmd += ["--set", item]
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world_size"] == 2 and r["distributed"] == 2
        # Every phase trained a DDP-wrapped network (the frozen one is passed unwrapped).
        assert r["wrapped"] == {p: ["DistributedDataParallel"] for p in ("G_main", "G_reg", "D_main", "D_reg")}
    assert ranks[0]["hashes"] == ranks[1]["hashes"]  # identical weights and buffers after 4 steps
    assert ranks[0]["p"] == ranks[1]["p"] == pytest.approx(0.8)  # ADA statistics all-reduced: same p everywhere
    assert ranks[0]["pl_mean"] == ranks[1]["pl_mean"] > 0
    saved = load_file(str(RunFolder(run).weights_path("stylegan2")))
    assert {k.split(".")[0] for k in saved} == {"G", "D"}
    assert RunFolder(run).model_info().stages["stylegan2"].step == 4
    # The same global batches in one process (micro-batches of 4 with accumulation): the same result.
    straight = tmp_path / "straight"
    train(tiny_dataset.root, straight, _config(4, "stages.stylegan2.batch_gpu=4"))
    a, b = _final_state(straight), _final_state(run)
    assert a.keys() == b.keys() and "task/ada.pipe.p" in a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=2e-5, msg=key)


def _task_state(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "stylegan2" / f"step-{step:09d}" / "task.safetensors"))


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    """Weights, EMA weights, Adam moments of G and D, and the task state (ADA, path length) at the end."""
    out: dict[str, torch.Tensor] = {}
    for ema in (False, True):
        path = RunFolder(run).weights_path("stylegan2", ema=ema)
        out.update({f"{path.name}/{k}": v for k, v in load_file(str(path)).items()})
    latest = run / "checkpoints" / "stylegan2" / (run / "checkpoints" / "stylegan2" / "latest").read_text().strip()
    for opt_file in sorted(latest.glob("optimizer*.bin")):
        for idx, s in torch.load(opt_file, weights_only=True)["state"].items():
            out.update({f"{opt_file.name}/{idx}/{key}": s[key] for key in ("exp_avg", "exp_avg_sq")})
    out.update({f"task/{k}": v for k, v in load_file(str(latest / "task.safetensors")).items()})
    return out


class Interrupt(Exception):
    pass


def test_interrupted_and_resumed_equals_straight(tiny_dataset: Dataset, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the step-3 checkpoint (mid ADA interval, with gradient accumulation) and restarted,
    a run ends where an uninterrupted one does: weights, EMA, Adam moments, p, logged losses."""
    config = _config(6, "stages.stylegan2.batch_gpu=4", f"loop.checkpoint_kimg={3 * BATCH / 1000}")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_dataset.root, straight, config)
    original = CheckpointStore.save

    def save_then_crash(self, accelerator, state, **kwargs):  # noqa: ANN001, ANN202
        path = original(self, accelerator, state, **kwargs)
        raise Interrupt(path.name)

    with monkeypatch.context() as m:
        m.setattr(CheckpointStore, "save", save_then_crash)
        with pytest.raises(Interrupt, match="step-000000003"):
            train(tiny_dataset.root, resumed, config)
    mid = _task_state(resumed, 3)
    assert float(mid["ada.pipe.p"]) == pytest.approx(0.4)  # one adjustment made (after step 2) ...
    assert float(mid["ada.stats"][1]) == BATCH  # ... and step 3's statistics pending
    train(tiny_dataset.root, resumed, config)

    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys() and any("exp_avg" in k for k in a) and "task/ada.pipe.p" in a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)
    assert float(b["task/ada.pipe.p"]) == pytest.approx(1.0)  # 0 -> 0.4 -> 0.8 -> 1 (clamped), never reset

    def records(run: Path) -> dict[int, dict]:
        recs = RunFolder(run).metrics("stylegan2")
        assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]  # the progress counter continued
        return {r["step"]: r for r in recs}

    ra, rb = records(straight), records(resumed)
    for step, rec in ra.items():
        for key in ("G_main/loss", "D_main/loss", "augment/p"):
            assert rb[step][key] == pytest.approx(rec[key], abs=1e-6), (step, key)
    assert RunFolder(resumed).model_info().stages["stylegan2"].step == 6


def _pixel_diversity(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across images."""
    return float(images.std(dim=0).mean())


@pytest.mark.slow
def test_short_run_on_chest_xrays(shared_data: Path, tmp_path: Path) -> None:
    from imgsynth.data.medmnist import import_medmnist

    ds = import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", tmp_path / "ds", max_per_split=96)
    steps = 48
    run = tmp_path / "run"
    train(ds.root, run, load_config("stylegan2_2d_tiny", [
        "seed=1", "model.generator.channel_max=16", "model.discriminator.channel_max=16",
        "model.augment.speed_kimg=0.1", "model.augment.interval=2", f"stages.stylegan2.batch={BATCH}",
        f"stages.stylegan2.kimg={steps * BATCH / 1000}", f"loop.checkpoint_kimg={steps * BATCH / 1000}",
        "loop.sample_kimg=0.2", "loop.progress=false", f"loop.log_kimg={BATCH / 1000}",
    ]))
    records = RunFolder(run).metrics("stylegan2")
    assert len(records) == steps
    losses = [v for r in records for k, v in r.items() if k.endswith("/loss")]
    assert len(losses) == 2 * steps + steps // 4 + steps // 16  # G/D main every step, lazy G_reg / D_reg
    assert all(math.isfinite(v) for v in losses)
    # ADA: every adjustment moves p by the images seen, in the direction of r_t - target (or stays at 0).
    updates = [(r["augment/rt"], r["augment/p"]) for r in records if "augment/rt" in r]
    assert len(updates) == steps // 2
    p_prev, moved = 0.0, 0
    for rt, p in updates:
        step = 2 * BATCH / 100.0
        expected = min(max(p_prev + math.copysign(step, rt - 0.6), 0.0), 1.0)
        assert p == pytest.approx(expected, abs=1e-6), (rt, p_prev, p)
        moved += p != p_prev
        p_prev = p
    assert moved >= 3
    assert list((run / "samples").glob("stylegan2-*.png"))
    # Samples differ from one another, measurably more than a collapsed generator's.
    gen = get_family("stylegan2").load_generator(RunFolder(run), torch.device("cpu"))
    cond = {"label": torch.tensor([0, 1] * 8)}
    images = gen.sample(cond, seeds=range(16))
    assert images.shape == (16, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
    collapsed = gen.sample(cond, seeds=range(16), truncation=0.0)  # every class on its mean w
    torch.testing.assert_close(collapsed[0], collapsed[2])
    per_class = [_pixel_diversity(images[k::2]) for k in (0, 1)]
    assert min(per_class) > 0.05 and max(_pixel_diversity(collapsed[k::2]) for k in (0, 1)) < 1e-5
    assert gen.checkpoint["path"] == "weights/stylegan2-ema.safetensors"
    with pytest.raises(UsageError, match="--guidance applies to diffusion models"):
        gen.sample(cond, seeds=range(16), guidance=3.0)

    # The same `imgsynth generate` as for diffusion runs, with --truncation; the sample set is a dataset.
    from imgsynth.cli import main
    from imgsynth.generate.api import generate

    out = tmp_path / "samples"
    assert main(["generate", str(run), str(out), "--n", "6", "--truncation", "0.7", "--formats", "png",
                 "--device", "cpu", "--batch-size", "4"]) == 0
    samples = Dataset.read(out)
    assert [r["label"] for r in samples.rows] == ["normal", "pneumonia"] * 3 and samples.info.shape == [1, 32, 32]
    block = samples.info.generator
    assert block["family"] == "stylegan2" and block["sampler"] == "direct" and block["options"] == {"truncation": 0.7}
    first = samples.load(samples.rows[0])
    again = gen.sample({"label": torch.tensor([0])}, seeds=[int(samples.rows[0]["seed"])], truncation=0.7)[0]
    torch.testing.assert_close(torch.from_numpy(first), again)  # image i depends on its seed alone
    assert main(["generate", str(run), str(tmp_path / "bad"), "--n", "2", "--guidance", "2", "--device", "cpu"]) == 2
    assert main(["generate", str(run), str(tmp_path / "bad"), "--n", "2", "--steps", "5", "--device", "cpu"]) == 2
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UsageError, match=r"--psi does not apply to a stylegan2 model \(its options: truncation\)"):
        generate(run, tmp_path / "bad", n=2, options={"psi": 0.5}, device="cpu")

