"""Run by ``accelerate launch`` in the DDP test: trains the tiny config and records, per rank, the
world size, the types ``accelerator.prepare`` returned and the final weights of each stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
torch.set_num_threads(1)

from safetensors.torch import save_file  # noqa: E402

from imgsynth.training import loop as loop_module  # noqa: E402
from imgsynth.training.run import make_accelerator, train  # noqa: E402
from tests.training.conftest import ACCUM_OVERRIDES, tiny_config  # noqa: E402


def main(dataset: str, run_dir: str, out: str) -> None:
    config = tiny_config(*ACCUM_OVERRIDES)  # global batch 8: 4 per process here, no accumulation
    acc = make_accelerator(config)
    record = {"world": acc.num_processes, "rank": acc.process_index, "prepared": []}
    prepare = acc.prepare

    def recording_prepare(*args):  # noqa: ANN202
        out_objs = prepare(*args)
        record["prepared"] += [type(o).__name__ for o in out_objs if isinstance(o, torch.nn.Module)]
        return out_objs

    acc.prepare = recording_prepare
    original_loop = loop_module.training_loop

    def recording_loop(**kwargs):  # noqa: ANN202
        state = original_loop(**kwargs)
        weights = {f"{n}.{k}": v.detach().cpu().contiguous() for n, m in kwargs["nets"].items() for k, v in m.state_dict().items()}
        save_file(weights, f"{out}/rank{acc.process_index}-{kwargs['task'].stage}.safetensors")
        return state

    loop_module.training_loop = recording_loop
    train(dataset, run_dir, config, accelerator=acc)
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(*sys.argv[1:4])
