"""Checkpoint store: complete-or-nothing writes, the latest/best pointers, pruning, round trip."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from imgsynth.training.checkpoint import CheckpointStore, LoopState


def _prepared() -> tuple[Accelerator, torch.nn.Module, torch.optim.Optimizer]:
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net, opt = acc.prepare(net, opt)
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    return acc, net, opt


def test_round_trip_pointers_and_pruning(tmp_path: Path) -> None:
    acc, net, opt = _prepared()
    store = CheckpointStore(tmp_path / "ckpt", keep=2)
    ema = {"net.weight": torch.full((3, 4), 2.0)}
    paths = []
    for step in (1, 2, 3):
        paths.append(store.save(acc, LoopState(step=step, nimg=step * 8), ema=ema,
                                task_state={"p": 0.25, "pl_mean": torch.tensor([1.5])}, meta={"stage": "s"}))
        if step == 1:
            store.mark_best(paths[0])
    assert store.latest() == paths[-1]
    # keep=2 keeps the newest two plus the best one (step 1); a fourth save prunes step 2.
    assert [p.name for p in store.complete()] == ["step-000000001", "step-000000002", "step-000000003"]
    paths.append(store.save(acc, LoopState(step=4, nimg=32), ema=ema, task_state={"p": 0.25, "pl_mean": torch.tensor([1.5])},
                            meta={"stage": "s"}))
    assert [p.name for p in store.complete()] == ["step-000000001", "step-000000003", "step-000000004"]
    assert (tmp_path / "ckpt" / "best").read_text().strip() == "step-000000001"

    weights = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    state, ema_back, task_state, record = store.load(acc, store.latest())
    assert state.step == 4 and state.nimg == 32 and record["stage"] == "s"
    assert task_state["p"] == 0.25 and torch.equal(task_state["pl_mean"], torch.tensor([1.5]))
    torch.testing.assert_close(ema_back["net.weight"], ema["net.weight"])
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, weights[k])


def test_partial_checkpoint_is_ignored_and_removed(tmp_path: Path) -> None:
    acc, _, _ = _prepared()
    store = CheckpointStore(tmp_path / "ckpt", keep=3)
    good = store.save(acc, LoopState(step=1, nimg=8), ema={}, task_state={}, meta={})
    # A process killed mid-write leaves a .tmp- folder, and one killed between rename and pointer
    # update leaves a complete folder that 'latest' does not name yet.
    partial = tmp_path / "ckpt" / ".tmp-step-000000002"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert store.latest() == good
    incomplete = tmp_path / "ckpt" / "step-000000003"  # no state.json: never renamed into place by us
    incomplete.mkdir()
    assert store.latest() == good
    store.remove_partial()
    assert not partial.exists()
