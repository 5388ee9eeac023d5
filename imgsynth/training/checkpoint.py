"""Checkpoints of one training stage: write completely or not at all, resume from the last complete one.

Layout under ``<run>/checkpoints/<stage>/``::

    step-000001200/          one complete checkpoint
        model*.safetensors, optimizer*.bin, random_states_<rank>.pkl   (accelerate save_state)
        ema.safetensors      EMA weights
        task.safetensors     the task's tensor state (may be empty)
        state.json           loop counters, task's JSON state, config hash (written last)
    latest                   name of the newest complete checkpoint (written after the rename)
    best                     name of the checkpoint with the best validation loss (kept from pruning)

A checkpoint is written to ``.tmp-step-*`` and renamed only once every file is in place, so a
process killed mid-write leaves a ``.tmp-*`` folder that the next run removes; ``latest`` is
updated after the rename. Nothing here unpickles code: weights are safetensors, and the
optimizer and RNG files are read by accelerate with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from imgsynth.errors import ContractError
from imgsynth.utils.io import atomic_write_json, atomic_write_text

STATE_VERSION = 1
_NAME = re.compile(r"^step-(\d{9})$")


@dataclass
class LoopState:
    """Counters of the loop, saved in ``state.json``."""

    step: int = 0  # optimizer steps taken
    nimg: int = 0  # images seen (step * batch)
    best_val: float | None = None
    best_step: int | None = None

    @property
    def kimg(self) -> float:
        return self.nimg / 1000.0


def split_state(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Task state -> (tensors for safetensors, the rest for JSON)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    json.dumps(plain)  # fail early on values JSON cannot hold
    return tensors, plain


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of one stage (see module docstring); only the main process writes."""

    def __init__(self, root: Path, *, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    # -- reading -------------------------------------------------------------------------------
    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
        return sorted(found, key=lambda p: p.name)

    def _pointer(self, name: str) -> Path | None:
        path = self.root / name
        if not path.is_file():
            return None
        target = self.root / path.read_text(encoding="utf-8").strip()
        return target if _NAME.match(target.name) and (target / "state.json").is_file() else None

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``latest`` if it is complete, else the newest complete one."""
        found = self.complete()
        pointed = self._pointer("latest")
        if pointed is not None and (not found or pointed.name >= found[-1].name):
            return pointed
        return found[-1] if found else None

    def best(self) -> Path | None:
        return self._pointer("best")

    @staticmethod
    def read_state(path: Path) -> dict[str, Any]:
        try:
            data = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ContractError(f"unreadable checkpoint state ({exc})", path=path / "state.json") from None
        if data.get("version") != STATE_VERSION:
            raise ContractError(f"checkpoint state version {data.get('version')!r} is not {STATE_VERSION}", path=path)
        return data

    # -- writing -------------------------------------------------------------------------------
    def remove_partial(self) -> None:
        """Delete leftovers of checkpoints that were being written when a process died."""
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-") and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)

    def save(
        self,
        accelerator: Any,
        state: LoopState,
        *,
        ema: Mapping[str, torch.Tensor],
        task_state: Mapping[str, Any],
        meta: Mapping[str, Any],
    ) -> Path:
        """Write a checkpoint of the current step on every process; returns its final path."""
        name = f"step-{state.step:09d}"
        final, tmp = self.root / name, self.root / f".tmp-{name}"
        main = accelerator.is_main_process
        if main:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # models + optimizers on main, RNG state per process
        accelerator.wait_for_everyone()
        if main:
            tensors, plain = split_state(task_state)
            save_file(dict(ema), str(tmp / "ema.safetensors"))
            save_file(tensors, str(tmp / "task.safetensors"))
            record = {"version": STATE_VERSION, "loop": asdict(state), "task": plain, **meta}
            atomic_write_json(tmp / "state.json", record)
            _fsync_dir(tmp)
            if final.exists():  # a rerun of the same step (e.g. extended budget): replace
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            atomic_write_text(self.root / "latest", name + "\n")
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def mark_best(self, path: Path) -> None:
        atomic_write_text(self.root / "best", path.name + "\n")

    def prune(self) -> None:
        """Keep the newest ``keep`` complete checkpoints (and the best one)."""
        best = self.best()
        found = self.complete()
        for old in found[: max(0, len(found) - self.keep)]:
            if best is None or old.name != best.name:
                shutil.rmtree(old, ignore_errors=True)

    # -- loading -------------------------------------------------------------------------------
    def load(self, accelerator: Any, path: Path) -> tuple[LoopState, dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """Restore models/optimizers/RNG through accelerate; return (loop state, EMA, task state, record)."""
        record = self.read_state(path)
        accelerator.load_state(str(path))
        ema = load_file(str(path / "ema.safetensors"))
        task_state: dict[str, Any] = dict(record.get("task", {}))
        task_state.update(load_file(str(path / "task.safetensors")))
        return LoopState(**record["loop"]), ema, task_state, record
