"""The training loop shared by every model family (one stage at a time).

It is handed the networks, the task (loss object, see ``task.py``) and the data loaders, and
does what every family needs: DDP through accelerate, autocast with fp32 weights, gradient
accumulation and clipping, warm-up/cosine learning rate, EMA, progress counted in images,
validation, preview grids, checkpoints and resume. Only the main process writes files.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from imgsynth.contracts import RunFolder, StageStatus
from imgsynth.training.checkpoint import CheckpointStore, LoopState
from imgsynth.training.config import LoopConfig, StageConfig
from imgsynth.training.ema import EMA
from imgsynth.training.metrics import NullSink, Running
from imgsynth.training.preview import image_grid, save_png
from imgsynth.training.schedule import lr_factor
from imgsynth.training.task import KeyedRandom, Phase, StepContext, Task
from imgsynth.utils.io import atomic_path
from imgsynth.utils.log import get_logger, progress

log = get_logger("training")
VAL_PHASE = Phase(name="val", optimizer="", trains=())


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def crossed(before: int, after: int, every_kimg: float | None) -> bool:
    """True when the image count passed a multiple of ``every_kimg`` thousand images."""
    if every_kimg is None:
        return False
    every = every_kimg * 1000.0
    return math.floor(after / every) > math.floor(before / every)


def training_loop(
    *,
    task: Task,
    nets: dict[str, nn.Module],
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    accelerator: Accelerator,
    run: RunFolder,
    stage: StageConfig,
    loop: LoopConfig,
    seed: int,
    sink: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> LoopState:
    """Train ``task.stage`` until ``stage.kimg`` thousand images, resuming from its latest checkpoint."""
    sink = sink or NullSink()
    device, main = accelerator.device, accelerator.is_main_process
    _, accum = stage.accumulation(accelerator.num_processes, where=f"stages.{task.stage}")
    store = CheckpointStore(run.checkpoints_dir / task.stage, keep=loop.keep_checkpoints)
    meta = {"stage": task.stage, "batch": stage.batch, **(meta or {})}

    # Prepare networks, optimizers and EMA (weights stay fp32; autocast does the rest).
    task.setup(accelerator)
    for net in nets.values():
        net.to(device).train()
    optimizers = task.make_optimizers(nets)
    prepared = accelerator.prepare(*nets.values(), *optimizers.values())
    wrapped = dict(zip(nets, prepared[: len(nets)], strict=True))
    optimizers = dict(zip(optimizers, prepared[len(nets) :], strict=True))
    raw = {name: accelerator.unwrap_model(m) for name, m in wrapped.items()}
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
    ema = EMA({n: raw[n] for n in task.ema_targets()}, halflife_kimg=stage.ema_halflife_kimg, rampup=stage.ema_rampup)
    hooks = _unwrapped_state_hooks(accelerator)

    # Resume from the latest complete checkpoint.
    state = LoopState()
    if main:
        store.remove_partial()
    accelerator.wait_for_everyone()
    latest = store.latest()
    if latest is not None:
        state, ema_state, task_state, _ = store.load(accelerator, latest)
        ema.load_state_dict(ema_state)
        task.load_state_dict(task_state)
        log.info("%s: resumed from %s (%.1f kimg)", task.stage, latest.name, state.kimg)
    total_steps = math.ceil(stage.kimg * 1000 / stage.batch)
    phases = task.phases()
    running = Running()
    _set_status(run, task.stage, state, stage.kimg, "running", main)

    # Main loop: one optimizer step per iteration.
    train_loader.sampler.start_nimg = state.nimg  # type: ignore[attr-defined]
    data = iter(train_loader)
    tick = time.perf_counter()
    steps = progress(range(state.step, total_steps), total=total_steps - state.step, description=task.stage,
                     enabled=main and loop.progress)
    ctx: StepContext | None = None
    trainable: tuple[str, ...] | None = None
    params = {p.name: [q for n in p.trains for q in raw[n].parameters()] for p in phases}
    for _ in steps:
        micro = [to_device(next(data), device) for _ in range(accum)]
        kimg = state.kimg
        factor = lr_factor(kimg, total_kimg=stage.kimg, warmup_kimg=stage.lr_warmup_kimg, kind=stage.lr_schedule, lr_min=stage.lr_min)
        for phase in phases:
            if not phase.due(state.step, kimg):
                continue
            opt = optimizers[phase.optimizer]
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
            if trainable != phase.trains:  # switch gradients only when the phase trains other networks
                for name, net in raw.items():
                    net.requires_grad_(name in phase.trains)
                trainable = phase.trains
            view = {n: wrapped[n] if n in phase.trains else raw[n] for n in nets}

            # Accumulate gradients over the micro-batches (sync only on the last).
            for i, batch in enumerate(micro):
                ctx = StepContext(step=state.step, kimg=kimg, micro=i, accum=accum, phase=phase,
                                  rng=KeyedRandom(seed, batch["key"], device), device=device,
                                  reduce_mean=lambda t: accelerator.reduce(t, reduction="mean"))
                with contextlib.ExitStack() as stack:
                    if i < accum - 1:
                        for n in phase.trains:
                            stack.enter_context(accelerator.no_sync(wrapped[n]))
                    with accelerator.autocast():
                        loss, logs = task.loss(view, batch, ctx)
                    accelerator.backward(loss / accum)
                running.add({f"{phase.name}/{k}": v for k, v in logs.items()})

            # Clip and step.
            if stage.grad_clip is not None:
                if accelerator.scaler is not None:
                    accelerator.unscale_gradients(optimizer=opt)
                norm = torch.nn.utils.clip_grad_norm_([q for q in params[phase.name] if q.grad is not None], stage.grad_clip)
                running.add({f"{phase.name}/grad_norm": norm})
            opt.step()
            opt.zero_grad(set_to_none=True)

        # Count images and update EMA.
        before = state.nimg
        state.step += 1
        state.nimg += stage.batch
        if ema:
            running.add({"ema_beta": ema.update(raw, batch=stage.batch, nimg=state.nimg)})
        if ctx is not None:
            running.add(task.end_step(ctx))
        running.add({"lr": max(g["lr"] for o in optimizers.values() for g in o.param_groups)})
        last = state.step >= total_steps

        # Log, validate, preview and checkpoint at their kimg intervals (and at the end).
        if crossed(before, state.nimg, loop.log_kimg) or last:
            now = time.perf_counter()
            _log(sink, accelerator, task.stage, state, running.means(), now - tick, primary=f"{phases[0].name}/loss")
            tick = now
        improved = False
        if val_loader is not None and (crossed(before, state.nimg, loop.val_kimg) or last):
            improved = _validate(task, ema, raw, val_loader, accelerator, sink, state, seed)
        if main and (crossed(before, state.nimg, loop.sample_kimg) or last):
            _preview(task, ema, raw, run, loop.sample_count, seed, state)
        if crossed(before, state.nimg, loop.checkpoint_kimg) or last or improved:
            path = store.save(accelerator, state, ema=ema.state_dict(), task_state=task.state_dict(), meta=meta)
            if main:
                _save_weights(run, task, raw, ema, state)
                if improved:
                    store.mark_best(path)
                _set_status(run, task.stage, state, stage.kimg, "complete" if last else "running", main)

    for handle in hooks:
        handle.remove()
    if state.step >= total_steps:
        _set_status(run, task.stage, state, stage.kimg, "complete", main)
    accelerator.wait_for_everyone()
    return state


def _unwrapped_state_hooks(accelerator: Accelerator) -> list[Any]:
    """Save and load model state without DDP's ``module.`` prefix (resume on another process count)."""

    def on_save(models: list[nn.Module], weights: list[dict], output_dir: str) -> None:
        for i, m in enumerate(models):
            weights[i] = accelerator.unwrap_model(m).state_dict()

    def on_load(models: list[nn.Module], input_dir: str) -> None:
        for i, m in enumerate(models):
            models[i] = accelerator.unwrap_model(m)

    return [accelerator.register_save_state_pre_hook(on_save), accelerator.register_load_state_pre_hook(on_load)]


def _log(sink: Any, accelerator: Accelerator, stage: str, state: LoopState, means: dict[str, float], seconds: float,
         *, primary: str) -> None:
    """Average the running means over processes and write one record (``loss``: the first phase's loss)."""
    names = sorted(means)
    if accelerator.num_processes > 1 and names:
        vec = accelerator.reduce(torch.tensor([means[k] for k in names], device=accelerator.device), reduction="mean")
        means = dict(zip(names, vec.tolist(), strict=True))
    record = {"stage": stage, "kimg": round(state.kimg, 3), "step": state.step, "loss": means.get(primary), **means,
              "seconds": round(seconds, 3)}
    sink.log(record)


@torch.no_grad()
def _validate(task: Task, ema: EMA, raw: dict[str, nn.Module], loader: DataLoader, accelerator: Accelerator,
              sink: Any, state: LoopState, seed: int) -> bool:
    """Mean validation losses over all processes' shares; True when ``val/loss`` improved."""
    device = accelerator.device
    view = {n: ema.nets.get(n, m) for n, m in raw.items()}
    for m in raw.values():
        m.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for batch in loader:
        batch = to_device(batch, device)
        ctx = StepContext(step=state.step, kimg=state.kimg, micro=0, accum=1, phase=VAL_PHASE,
                          rng=KeyedRandom(seed, batch["key"], device), device=device)
        with accelerator.autocast():
            losses = task.val_loss(view, batch, ctx)
        for k, v in losses.items():
            sums[k] = sums.get(k, torch.zeros((), device=device)) + v.float().sum()
        count += len(batch["key"])
    for m in raw.values():
        m.train()
    names = sorted(sums)
    if not names:
        return False
    totals = accelerator.reduce(torch.stack([sums[k] for k in names] + [torch.tensor(float(count), device=device)]), "sum")
    values = {f"val/{k}": float(v) / max(float(totals[-1]), 1.0) for k, v in zip(names, totals[:-1], strict=True)}
    sink.log({"stage": task.stage, "kimg": round(state.kimg, 3), "step": state.step, **values})
    score = values.get("val/loss", values[f"val/{names[0]}"])
    if state.best_val is None or score < state.best_val:
        state.best_val, state.best_step = score, state.step
        return True
    return False


@torch.no_grad()
def _preview(task: Task, ema: EMA, raw: dict[str, nn.Module], run: RunFolder, n: int, seed: int, state: LoopState) -> None:
    view = {name: ema.nets.get(name, m) for name, m in raw.items()}
    images = task.preview(view, n, seed)
    if images is not None:
        save_png(image_grid(images), run.samples_dir / f"{task.stage}-{state.nimg // 1000:06d}kimg.png")


def _save_weights(run: RunFolder, task: Task, raw: dict[str, nn.Module], ema: EMA, state: LoopState) -> None:
    """``weights/<stage>.safetensors`` (trained networks) and ``-ema`` (EMA copies), with metadata."""
    meta = {"stage": task.stage, "step": str(state.step), "kimg": f"{state.kimg:.3f}", **task.metadata()}
    live = {f"{n}.{k}": v.detach().cpu().contiguous() for n, m in raw.items() for k, v in m.state_dict().items()}
    for path, tensors in ((run.weights_path(task.stage), live),
                          (run.weights_path(task.stage, ema=True), {k: v.cpu().contiguous() for k, v in ema.state_dict().items()})):
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)


def _set_status(run: RunFolder, stage: str, state: LoopState, budget: float, status: str, main: bool) -> None:
    if not main or not run.model_path.exists():
        return
    info = run.model_info()
    info.stages[stage] = StageStatus(status=status, kimg=state.kimg, step=state.step, budget_kimg=budget)  # type: ignore[arg-type]
    run.write_model_info(info)
