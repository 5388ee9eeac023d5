"""Resume: a run interrupted after each stage's first checkpoint and restarted ends bit-for-bit (1e-6)
where an uninterrupted run ends: weights, EMA, optimizer state, step counts, logged losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgsynth.contracts import Dataset, RunFolder
from imgsynth.training import checkpoint as ckpt_module
from imgsynth.training.run import train

from .conftest import ACCUM_OVERRIDES, assert_same_state, final_state, tiny_config


class Interrupt(Exception):
    pass


def _stop_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    original = ckpt_module.CheckpointStore.save

    def save(self, accelerator, state, **kwargs):  # noqa: ANN001, ANN202
        path = original(self, accelerator, state, **kwargs)
        if self.root.name == stage:
            raise Interrupt(f"stopped after {path.name}")
        return path

    monkeypatch.setattr(ckpt_module.CheckpointStore, "save", save)


def test_interrupted_and_resumed_equals_straight(tiny_dataset: Dataset, straight_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(*ACCUM_OVERRIDES)

    resumed = tmp_path / "resumed"
    with monkeypatch.context() as m:
        _stop_after_first_checkpoint(m, "autoencoder")
        with pytest.raises(Interrupt, match="step-000000002"):
            train(tiny_dataset.root, resumed, config)
    assert (resumed / "checkpoints" / "autoencoder" / "latest").read_text().strip() == "step-000000002"
    assert RunFolder(resumed).model_info().stages["autoencoder"].status == "running"
    with monkeypatch.context() as m:
        _stop_after_first_checkpoint(m, "diffusion")
        with pytest.raises(Interrupt, match="step-000000002"):
            train(tiny_dataset.root, resumed, config)
    train(tiny_dataset.root, resumed, config)

    assert_same_state(final_state(straight_run), final_state(resumed))

    # The resumed run landed on step 3 (not on a micro-batch count), so steps 3 and 4 were logged
    # once, with the same losses as the straight run.
    def train_records(run: Path) -> dict[tuple[str, int], float]:
        recs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("loss") is not None]
        keys = [(r["stage"], r["step"]) for r in recs]
        assert len(keys) == len(set(keys)), keys
        return {(r["stage"], r["step"]): r["loss"] for r in recs}

    ra, rb = train_records(straight_run), train_records(resumed)
    assert sorted(rb) == sorted(ra) == [(s, i) for s in ("autoencoder", "diffusion") for i in (1, 2, 3, 4)]
    for k in ra:
        assert rb[k] == pytest.approx(ra[k], abs=1e-6), k
    state = json.loads((resumed / "checkpoints" / "diffusion" / "step-000000004" / "state.json").read_text())
    assert state["loop"] == {**state["loop"], "step": 4, "nimg": 32}
    for run in (straight_run, resumed):  # validation ran and named its best checkpoint
        assert (run / "checkpoints" / "diffusion" / "best").is_file()
        assert any("val/loss" in r for r in RunFolder(run).metrics("diffusion"))
    done = RunFolder(resumed).model_info()
    assert all(s.status == "complete" and s.step == 4 for s in done.stages.values())


def test_extending_a_finished_run_continues_it(tiny_dataset: Dataset, tmp_path: Path) -> None:
    """Raising the budget of a complete run trains on from its last checkpoint, as one longer run would."""
    run = tmp_path / "run"
    train(tiny_dataset.root, run, tiny_config(steps=2))
    train(tiny_dataset.root, run, tiny_config(steps=2))  # same budget: nothing to do
    before = (run / "metrics.jsonl").read_text().count("\n")
    bigger = tiny_config("stages.diffusion.kimg=0.032", steps=2)
    train(tiny_dataset.root, run, bigger)
    info = RunFolder(run).model_info()
    assert info.stages["autoencoder"].step == 2 and info.stages["diffusion"].step == 4
    assert info.stages["diffusion"].budget_kimg == 0.032
    assert (run / "metrics.jsonl").read_text().count("\n") > before
    # A longer autoencoder after the diffusion stage trained on its latents is refused, naming the field.
    from imgsynth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stages\.autoencoder\.kimg"):
        train(tiny_dataset.root, run, tiny_config("stages.autoencoder.kimg=0.032", "stages.diffusion.kimg=0.032", steps=2))
