"""``imgsynth train``: a dataset folder in, a run folder out, every stage of the family in order.

``train(...)`` is the Python API; it runs in each process that accelerate starts (or in the
only one). It checks the config against the dataset before anything trains, lays out the run
folder (main process only), then runs each stage that is not complete through the shared loop,
resuming a stage from its latest complete checkpoint. Raising a stage's ``kimg`` budget and
running again extends it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imgsynth import provenance
from imgsynth.config import config_hash, config_to_dict, config_to_yaml
from imgsynth.contracts import Dataset, ModelInfo, RunFolder, StageStatus
from imgsynth.errors import ConfigError, UsageError
from imgsynth.training.config import TrainConfig
from imgsynth.training.data import _mix, make_train_loader, make_val_loader
from imgsynth.utils.io import is_within
from imgsynth.utils.log import get_logger

log = get_logger("training")


@dataclass
class TrainResult:
    run: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def model_hash(config: TrainConfig) -> str:
    """Hash of what a run folder's weights depend on (model, data, seed), not budgets or loop settings."""
    data = config_to_dict(config)
    blob = {k: data[k] for k in ("model", "data", "seed")}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def make_accelerator(config: TrainConfig) -> Any:
    """An ``Accelerator`` for this config (CPU when asked or when no GPU is present)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # One process: start from a clean accelerate state (a notebook may train twice with other settings).
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    cpu = config.loop.cpu or not torch.cuda.is_available()
    precision = config.loop.mixed_precision
    if cpu and precision == "fp16":
        raise ConfigError("'loop.mixed_precision'=fp16 needs a GPU; use bf16 or no on CPU")
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": precision}
    if config.loop.compile:
        kwargs["dynamo_backend"] = "inductor"
    return Accelerator(**kwargs)


def plan(config: TrainConfig, dataset: Dataset, processes: int = 1) -> list[dict[str, Any]]:
    """What each stage will do (for --dry-run and logs): batches, accumulation, steps."""
    from imgsynth.training.task import get_family

    family = get_family(config.model.family)
    out = []
    for name in family.stages(config):
        s = config.stage(name)
        batch_gpu, accum = s.accumulation(processes, where=f"stages.{name}")
        out.append({"stage": name, "kimg": s.kimg, "batch": s.batch, "batch_gpu": batch_gpu, "accumulation": accum,
                    "steps": math.ceil(s.kimg * 1000 / s.batch), "processes": processes,
                    "train_items": dataset.info.splits.get(config.data.train_split, 0)})
    return out


def _check_run_folder(run: RunFolder, config: TrainConfig, dataset_dir: Path) -> None:
    if is_within(run.root, dataset_dir):
        raise UsageError(f"run folder {run.root} must not lie inside the dataset folder {dataset_dir}")
    if run.model_path.exists():
        info = run.model_info()
        saved = info.extra.get("model_hash")
        if info.family != config.model.family or (saved is not None and saved != model_hash(config)):
            raise ConfigError(
                f"run folder {run.root} was trained with a different model/data/seed config; "
                "only stage budgets and loop settings may change between runs (use a new RUN_DIR)"
            )
    elif run.root.exists() and any(run.root.iterdir()):
        raise UsageError(f"{run.root} exists and is not a run folder (no model.json); choose an empty or new RUN_DIR")


def train(
    dataset_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    *,
    argv: list[str] | None = None,
    accelerator: Any = None,
) -> TrainResult:
    """Train every stage of ``config.model.family`` on ``dataset_dir`` into ``run_dir``."""
    from imgsynth.data.loading import item_dataset
    from imgsynth.training.loop import training_loop
    from imgsynth.training.metrics import MetricsSink, NullSink
    from imgsynth.training.task import StageRequest, get_family

    dataset_dir, run = Path(dataset_dir), RunFolder(Path(run_dir))
    dataset = Dataset.read(dataset_dir)
    family = get_family(config.model.family)
    family.check(config, dataset.info)
    _check_run_folder(run, config, dataset_dir)
    accelerator = accelerator or make_accelerator(config)
    rank, processes, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    if not main:
        logging.getLogger("imgsynth").setLevel(logging.WARNING)  # one process reports
    stages = family.stages(config)
    for name in stages:
        config.stage(name).accumulation(processes, where=f"stages.{name}")

    # Metrics sink first (a missing optional dependency fails before anything is written), then
    # lay out the run folder (main process); everyone waits for it.
    sink = (MetricsSink(run, mlflow=config.logging.mlflow, experiment=config.logging.experiment,
                        tracking_uri=config.logging.tracking_uri) if main else NullSink())
    if main:
        model = ModelInfo(family=config.model.family, spatial_dims=config.model.spatial_dims,
                          stages={s: StageStatus(budget_kimg=config.stage(s).kimg) for s in stages},
                          config_hash=config_hash(config), extra={"model_hash": model_hash(config)})
        run.create(config_yaml=config_to_yaml(config), dataset=dataset.info, model=model,
                   provenance={**provenance.collect(argv), "dataset": str(dataset_dir.resolve()), "processes": processes})
        info = run.model_info()
        info.config_hash = config_hash(config)
        run.write_model_info(info)
    accelerator.wait_for_everyone()
    result = TrainResult(run=run.root)
    try:
        for index, name in enumerate(stages):
            s = config.stage(name)
            status = run.model_info().stages.get(name, StageStatus())
            total_steps = math.ceil(s.kimg * 1000 / s.batch)
            if status.status == "complete" and status.step >= total_steps:
                result.stages[name] = {"status": "complete", "kimg": status.kimg, "skipped": True}
                continue
            later = [n for n in stages[index + 1 :] if run.model_info().stages.get(n, StageStatus()).step > 0]
            if later:
                raise ConfigError(
                    f"'stages.{name}.kimg'={s.kimg} asks for more {name} training, but stage '{later[0]}' was already "
                    f"trained on its results; keep the {name} budget at {status.kimg:g} or use a new RUN_DIR"
                )

            # Build the stage: networks from the config's seed (identical on every process).
            torch.manual_seed(config.seed)
            setup = family.build_stage(StageRequest(config=config, stage=name, dataset=dataset, run=run, device=accelerator.device))
            updates = setup.task.model_info()
            if main and updates:
                info = run.model_info()
                for key, value in updates.items():
                    if key in ModelInfo.model_fields:
                        setattr(info, key, value)
                    else:
                        info.extra[key] = value
                run.write_model_info(info)
            _sync_batchnorm(setup.nets, processes, accelerator)
            torch.manual_seed(_mix(config.seed, rank, "rank"))  # seeding per (seed, rank)

            # Data: the training stream and this process's share of the validation split.
            conds = None if config.data.conditions is None else list(config.data.conditions)
            train_items = item_dataset(dataset, config.data.train_split, conditions=conds, cache=config.data.cache,
                                       cache_dir=run.root / ".cache" if config.data.cache == "disk" else None,
                                       max_items=config.data.max_items)
            batch_gpu, _ = s.accumulation(processes, where=f"stages.{name}")
            workers = config.loop.num_workers
            loader = make_train_loader(train_items, seed=config.seed, batch=s.batch, batch_gpu=batch_gpu, rank=rank,
                                       processes=processes, num_workers=workers, pin_memory=accelerator.device.type == "cuda")
            val_loader = None
            vsplit = config.data.val_split
            if config.loop.val_kimg is not None and vsplit and dataset.info.splits.get(vsplit, 0) >= processes:
                val_items = item_dataset(dataset, vsplit, conditions=conds, cache=config.data.cache,
                                         cache_dir=run.root / ".cache" if config.data.cache == "disk" else None,
                                         max_items=config.loop.val_items)
                val_loader = make_val_loader(val_items, batch=config.loop.val_batch, rank=rank, processes=processes,
                                             num_workers=0)
            log.info("stage %s: %s", name, plan(config, dataset, processes)[index])

            state = training_loop(task=setup.task, nets=setup.nets, train_loader=loader, val_loader=val_loader,
                                  accelerator=accelerator, run=run, stage=s, loop=config.loop, seed=config.seed,
                                  sink=sink, meta={"config_hash": config_hash(config)})
            result.stages[name] = {"status": "complete", "kimg": state.kimg, "step": state.step, "best_val": state.best_val}
            accelerator.free_memory()
    finally:
        sink.close()
    return result


def _sync_batchnorm(nets: dict[str, torch.nn.Module], processes: int, accelerator: Any) -> None:
    """Batch norm under DDP becomes SyncBatchNorm (CUDA only), so statistics span the global batch."""
    if processes <= 1:
        return
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for n in nets.values() for m in n.modules())
    if not has_bn:
        return
    if accelerator.device.type != "cuda":
        raise ConfigError(
            "batch norm under multi-process CPU training cannot synchronise (SyncBatchNorm needs CUDA); "
            "set 'model.discriminator.norm' to group or instance"
        )
    for name in list(nets):
        nets[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(nets[name])



def dry_run(dataset_dir: str | Path, config: TrainConfig, processes: int = 1) -> str:
    """The resolved config, the checks against the dataset and the per-stage plan, as text."""
    from imgsynth.training.task import get_family

    dataset = Dataset.read(dataset_dir)
    get_family(config.model.family).check(config, dataset.info)
    lines = [config_to_yaml(config).rstrip(), "# plan"]
    for row in plan(config, dataset, processes):
        lines.append("# " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return "\n".join(lines)
