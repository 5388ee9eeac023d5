"""What ``CHECKPOINT`` names: a run folder (its latest EMA weights) or one checkpoint of it.

``imgsynth generate CHECKPOINT ...`` accepts

* a **run folder** (``model.json`` inside): the weights of every stage, ``weights/<stage>-ema.safetensors``;
* a **checkpoint folder** ``RUN/checkpoints/<stage>/step-NNNNNNNNN`` (its ``ema.safetensors``), or
  ``RUN/checkpoints/<stage>`` (its ``latest``);
* a **weights file** ``RUN/weights/<stage>[-ema].safetensors``.

A checkpoint replaces the weights of its own stage, which must be the stage the family samples
with (the last one: ``diffusion`` for an LDM, ``stylegan2``); earlier stages come from the run
folder (an LDM's diffusion stage was trained on the run's final autoencoder). The result is a
:class:`RunView`: a run folder whose ``weights_path(stage, ema=True)`` points at the chosen file,
so every family's ``load_generator`` works on it unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from imgsynth.contracts import RunFolder
from imgsynth.errors import ContractError, UsageError

_STEP = re.compile(r"^step-\d{9}$")


@dataclass
class RunView(RunFolder):
    """A run folder with some stages' EMA weights taken from elsewhere (a checkpoint)."""

    weights: dict[str, Path] = field(default_factory=dict)
    label: str = ""  # what CHECKPOINT named, for messages and provenance

    def weights_path(self, stage: str, *, ema: bool = False) -> Path:
        if stage in self.weights:
            return self.weights[stage]
        return super().weights_path(stage, ema=ema)


def _run_root(path: Path, levels: int, what: str) -> Path:
    root = path.parents[levels - 1] if len(path.parents) >= levels else path
    if not (root / "model.json").is_file():
        raise UsageError(f"{path}: looks like a {what} but {root} is not a run folder (no model.json)")
    return root


def _sampling_stage(run: RunFolder) -> str:
    """The stage a family samples with: the last of its stages."""
    import yaml

    from imgsynth.config import config_from_dict
    from imgsynth.training.task import get_family

    config = config_from_dict(yaml.safe_load(run.config_path.read_text(encoding="utf-8")), source=run.config_path)
    return get_family(run.model_info().family).stages(config)[-1]  # type: ignore[arg-type]


def resolve_checkpoint(checkpoint: str | Path) -> RunView:
    """The run (and the weights) that ``checkpoint`` names; see the module docstring."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise ContractError("run folder not found", path=path)
    if path.is_dir() and (path / "model.json").is_file():
        run = RunFolder.read(path)
        return RunView(run.root.resolve(), label=str(path))
    if path.is_dir() and (path / "latest").is_file() and path.parent.name == "checkpoints":
        latest = path / (path / "latest").read_text(encoding="utf-8").strip()
        if not (latest / "state.json").is_file():
            raise ContractError("'latest' names no complete checkpoint", path=path / "latest")
        path = latest
    if path.is_dir() and _STEP.match(path.name) and path.parent.parent.name == "checkpoints":
        stage, file = path.parent.name, path / "ema.safetensors"
        if not (path / "state.json").is_file() or not file.is_file():
            raise ContractError("incomplete checkpoint (state.json or ema.safetensors missing)", path=path)
        root = _run_root(path, 3, "checkpoint folder")
    elif path.is_file() and path.suffix == ".safetensors" and path.parent.name == "weights":
        stage, file = path.stem.removesuffix("-ema"), path
        root = _run_root(path, 2, "weights file")
    else:
        raise UsageError(
            f"{path}: CHECKPOINT must be a run folder, RUN/checkpoints/<stage>[/step-N] or RUN/weights/<stage>-ema.safetensors"
        )
    run = RunFolder.read(root)
    wanted = _sampling_stage(run)
    if stage != wanted:
        raise UsageError(
            f"{path}: a '{stage}' checkpoint cannot be sampled on its own; give a '{wanted}' checkpoint or the run folder"
        )
    return RunView(run.root.resolve(), weights={stage: file.resolve()}, label=str(path))

