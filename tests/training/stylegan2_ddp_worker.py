"""One process of the 2-process CPU DDP test (run by ``accelerate launch``; not collected by pytest).

    accelerate launch --multi_gpu --num_processes 2 tests/training/stylegan2_ddp_worker.py DATASET RUN OUT_DIR [--set ...]

Trains through ``imgsynth.training.run.train`` and writes ``OUT_DIR/rank<r>.json``: world size,
the class of the networks each phase trained (DDP-wrapped or not), a hash of every weight and
buffer of G and D after training, and ADA's p.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from imgsynth.config import load_config  # noqa: E402
from imgsynth.training.run import make_accelerator, train  # noqa: E402
from imgsynth.training.stylegan2 import StyleGAN2Task  # noqa: E402


def state_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    dataset, run, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    overrides = [a for a in sys.argv[4:] if a != "--set"]
    config = load_config(REPO / "configs" / "stylegan2_2d_tiny.yaml", overrides)
    accelerator = make_accelerator(config)
    seen: dict[str, set[str]] = {}
    nets_ref: dict[str, torch.nn.Module] = {}
    tasks: list[StyleGAN2Task] = []
    original = StyleGAN2Task.loss

    def spy(self, nets, batch, ctx):  # noqa: ANN001, ANN202
        for name in ctx.phase.trains:
            seen.setdefault(ctx.phase.name, set()).add(type(nets[name]).__name__)
        for name, net in nets.items():
            nets_ref[name] = accelerator.unwrap_model(net)
        if not tasks:
            tasks.append(self)
        return original(self, nets, batch, ctx)

    StyleGAN2Task.loss = spy  # type: ignore[method-assign]
    train(dataset, run, config, accelerator=accelerator)
    task = tasks[0]
    record = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "distributed": torch.distributed.is_initialized() and torch.distributed.get_world_size(),
        "wrapped": {k: sorted(v) for k, v in seen.items()},
        "hashes": {name: state_hash(net) for name, net in nets_ref.items()},
        "p": float(task.augment.p) if task.augment is not None else None,
        "pl_mean": float(task.pl_mean),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
