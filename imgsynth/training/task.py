"""The contract between the shared training loop and a model family.

The loop (``imgsynth.training.loop.training_loop``) knows nothing about latent diffusion or
StyleGAN2. It is handed the networks, a :class:`Task` (the loss object) and a data loader, and
runs the task's :class:`Phase` list on every step, in the manner of stylegan2-ada's phases
(G main, G reg, D main, D reg) and EDM's ``loss_fn(net=...)``:

    for each optimizer step:
        for phase in task.phases() that are due:
            for each micro-batch:               # gradient accumulation
                loss = task.loss(nets_for(phase), batch, ctx)
                backward(loss / accum)
            clip, optimizer[phase.optimizer].step()
        update EMA of task.ema_targets(); task.end_step(ctx)

A model family (``ldm``, ``stylegan2``) is one :class:`ModelFamily` in one typed registry
(:func:`register_family` / :func:`get_family`): it names its stages in training order, builds
the networks and task of each stage, and loads an :class:`ImageGenerator` from a run folder
for ``imgsynth generate``. Nothing is looked up from class-name strings.

Randomness that touches samples (noise, timesteps, latents z, condition dropout) comes from
:class:`KeyedRandom`, keyed by each item's position in the training stream, so a run gives the
same result on 1 or N processes and after a resume.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

    from imgsynth.contracts import Dataset, DatasetInfo, RunFolder
    from imgsynth.training.config import TrainConfig

Batch = dict[str, Any]
"""One micro-batch as the loader yields it, moved to the device by the loop:
``image`` [B, C, *spatial] float in model scale, ``cond`` {name: tensor} (categorical ``long``
[B], continuous ``float`` [B] in [-1, 1], masks ``float`` [B, ch, *spatial]), ``key`` [B] long
(position of each item in the training stream) and ``index`` [B] long (item index)."""

StateValue = int | float | str | bool | list | dict | torch.Tensor | None


# =============================================================================================
# Phases and the per-step context
# =============================================================================================
@dataclass(frozen=True)
class Phase:
    """One optimizer update inside a training step.

    name: shown in logs, e.g. ``"G_main"``, ``"D_reg"``, ``"main"``.
    optimizer: key of :meth:`Task.make_optimizers`; the phase steps exactly this optimizer.
    trains: networks the phase updates. During the phase these are passed DDP-wrapped with
        gradients on; every other network is passed unwrapped with ``requires_grad`` off (so
        a frozen discriminator can sit inside a generator loss under DDP).
    interval: run on steps where ``step % interval == 0`` (lazy regularisation); the task
        multiplies its loss by ``interval`` itself where the method asks for it.
    start_kimg: the phase is skipped before this many thousand images (adversarial warm-up).
    """

    name: str
    optimizer: str
    trains: tuple[str, ...]
    interval: int = 1
    start_kimg: float = 0.0

    def due(self, step: int, kimg: float) -> bool:
        return step % self.interval == 0 and kimg >= self.start_kimg


def _signed64(c: int) -> int:
    return c - (1 << 64) if c >= (1 << 63) else c


_GOLDEN, _MIX1, _MIX2 = (_signed64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)  # logical shift of int64 bit patterns


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser (Steele et al. 2014) on int64 tensors, wrapping arithmetic: a bijective
    hash whose outputs are uniformly distributed bits."""
    z = x + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


class KeyedRandom:
    """Per-item random numbers that depend only on (seed, item key, salt).

    ``randn(shape, "noise")`` returns ``[B, *shape]`` where row b is a function of
    ``(seed, keys[b], "noise")`` alone: an item's noise does not depend on the batch size, the
    number of processes or the rank it lands on. Keys are stream positions while training and
    sample indices while generating. Numbers come from a counter-based hash (SplitMix64 of
    (seed, salt, key, element index)), computed on the device in a few vectorised operations;
    normals by the Box-Muller transform.
    """

    def __init__(self, seed: int, keys: torch.Tensor | Sequence[int], device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        if isinstance(keys, torch.Tensor):
            self.key_tensor = keys.to(self.device, torch.int64)
        else:
            self.key_tensor = torch.tensor([int(k) for k in keys], dtype=torch.int64, device=self.device)

    def __len__(self) -> int:
        return int(self.key_tensor.shape[0])

    @property
    def keys(self) -> list[int]:
        return [int(k) for k in self.key_tensor.tolist()]

    def _salt(self, salt: str) -> int:
        digest = hashlib.blake2b(f"{self.seed}:{salt}".encode(), digest_size=8).digest()
        return _signed64(int.from_bytes(digest, "little"))

    def bits(self, n: int, salt: str) -> torch.Tensor:
        """``[B, n]`` int64 of uniformly random bits."""
        base = splitmix64(self.key_tensor + self._salt(salt))  # [B]
        idx = splitmix64(torch.arange(n, dtype=torch.int64, device=self.device) * _GOLDEN)  # [n]
        return splitmix64(base[:, None] ^ idx[None, :])

    def uniform(self, n: int, salt: str) -> torch.Tensor:
        """``[B, n]`` float64 in (0, 1) from 53 random bits."""
        return (_shift_right(self.bits(n, salt), 11).double() + 0.5) / float(1 << 53)

    def randn(self, shape: Sequence[int], salt: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = math.prod(shape)
        u = self.uniform(2 * n, salt)
        r = torch.sqrt(-2.0 * torch.log(u[:, :n]))
        return (r * torch.cos(2.0 * math.pi * u[:, n:])).to(dtype).view(len(self), *shape)

    def rand(self, salt: str, shape: Sequence[int] = ()) -> torch.Tensor:
        return self.uniform(math.prod(shape), salt).float().view(len(self), *shape)

    def randint(self, high: int, salt: str) -> torch.Tensor:
        return (self.uniform(1, salt)[:, 0] * high).long().clamp_(max=high - 1)

    def generator(self, key: int, salt: str) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded by (seed, key, salt), for libraries that take one."""
        digest = hashlib.blake2b(f"{self.seed}:{key}:{salt}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


@dataclass
class StepContext:
    """What a task sees of the loop while computing one micro-batch's loss."""

    step: int  # index of the optimizer step being taken (0-based)
    kimg: float  # thousands of images seen before this step
    micro: int  # micro-batch index inside gradient accumulation
    accum: int  # number of micro-batches per step on this process
    phase: Phase
    rng: KeyedRandom  # keyed by the micro-batch's stream positions
    device: torch.device
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)  # mean over processes


# =============================================================================================
# The task (loss object) of one training stage
# =============================================================================================
class Task(ABC):
    """One training stage of one model family: phases, optimizers, loss, extra state, previews.

    The networks themselves are built by the family (:attr:`ModelFamily.build_stage`) and passed
    to the loop beside the task; the loop moves them to the device, wraps them for DDP and hands
    them back to :meth:`loss` as a mapping ``name -> module`` (see :class:`Phase` for which are
    wrapped). Trainable weights stay fp32; the loop runs :meth:`loss` under autocast.

    DDP only sees ``forward``: a network whose parts are called separately (StyleGAN2's mapping
    and synthesis networks) is registered as separate networks (``G_mapping``, ``G_synthesis``),
    trained by one optimizer over both and listed together in ``Phase.trains``. Every parameter
    of a trained network must take part in each of its forward passes (use ``torch.where``
    rather than indexing to drop conditions).
    """

    #: stage name, e.g. "autoencoder", "diffusion", "stylegan2"; used for weights/<stage>.safetensors
    stage: str

    @abstractmethod
    def phases(self) -> list[Phase]:
        """The phases of one step, in order."""

    @abstractmethod
    def make_optimizers(self, nets: Mapping[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name over ``nets`` (unwrapped, on device). Their ``lr`` is the base rate the
        loop scales by its warm-up/cosine factor each step."""

    @abstractmethod
    def loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of ``ctx.phase`` on one micro-batch (mean over its items) and numbers to log
        (floats or detached 0-d tensors; tensors are read only when a record is written, so
        logging costs no GPU synchronisation per step). A ``loss`` entry of the first phase
        becomes the record's ``loss``."""

    def ema_targets(self) -> list[str]:
        """Networks that get an EMA copy (used for previews, validation and generation)."""
        return []

    def setup(self, accelerator: Accelerator) -> None:  # noqa: B027 (optional hook)
        """Called once before training: move frozen helper networks to ``accelerator.device``."""

    def end_step(self, ctx: StepContext) -> dict[str, float]:
        """Called after every optimizer step on every process (e.g. adjust ADA's p); returns logs."""
        return {}

    def val_loss(self, nets: Mapping[str, nn.Module], batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Validation losses of one batch ([B] per item, the loop averages across batches and
        processes); ``nets`` are the EMA copies where there are any. Empty: no validation."""
        return {}

    def preview(self, nets: Mapping[str, nn.Module], n: int, seed: int) -> torch.Tensor | None:
        """``n`` images [n, C, *spatial] in model scale for the preview grid (EMA networks), or None."""
        return None

    def state_dict(self) -> dict[str, StateValue]:
        """Extra state to checkpoint (ADA's p, latent scale factor, ...): JSON values or tensors."""
        return {}

    def load_state_dict(self, state: Mapping[str, StateValue]) -> None:  # noqa: B027 (optional hook)
        """Restore :meth:`state_dict`."""

    def metadata(self) -> dict[str, str]:
        """Strings stored in the header of ``weights/<stage>[-ema].safetensors``."""
        return {}

    def model_info(self) -> dict[str, Any]:
        """Entries written to the run's ``model.json`` when the stage starts (e.g. the latent scale
        factor); keys that are not ``ModelInfo`` fields go to its ``extra``."""
        return {}


# =============================================================================================
# Generators: what `imgsynth generate` needs from any family
# =============================================================================================
class ImageGenerator(Protocol):
    """A trained model ready to sample (``ModelFamily.load_generator``).

    ``sample`` returns one image per seed, ``[B, C, *spatial]`` in model scale [-1, 1]; image b
    depends only on ``seeds[b]``, its condition and the sampler settings, never on the batch.
    Conditions are encoded as the loader encodes them (:class:`imgsynth.data.loading.ConditionEncoder`).
    """

    info: DatasetInfo  # schema of the training data: shape, conditions, intensity mapping
    condition_names: list[str]  # the conditions the model was trained on (a subset of info's)
    samplers: tuple[str, ...]  # names accepted by ``sample(sampler=...)``; the first is the default
    default_steps: int | None  # None: the model takes no steps setting (one forward pass)
    default_guidance: float | None  # None: the model takes no guidance setting
    checkpoint: dict[str, str]  # {"path": ..., "sha256": ...} of the weights sampled from
    # Optional: family-specific options ``sample`` takes as keywords, with their defaults
    # (StyleGAN2: {"truncation": 1.0}); a generator without this attribute takes none.
    options: Mapping[str, float]

    def sample(
        self,
        cond: Mapping[str, torch.Tensor],
        seeds: Sequence[int],
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        **options: float,
    ) -> torch.Tensor: ...


# =============================================================================================
# The family registry
# =============================================================================================
@dataclass
class StageSetup:
    """What a family builds for one stage: its task and networks (fp32, on CPU)."""

    task: Task
    nets: dict[str, nn.Module]


@dataclass
class StageRequest:
    """Inputs to :attr:`ModelFamily.build_stage`."""

    config: TrainConfig
    stage: str
    dataset: Dataset  # the training dataset folder (train split used for data statistics)
    run: RunFolder  # earlier stages' weights are read from here
    device: torch.device


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its stages in training order, their builder, its generator loader.

    ``check`` validates a config against a dataset before anything trains (raising
    :class:`~imgsynth.errors.ConfigError` naming the field); ``prepare_stage`` may update the run
    folder before a stage starts (e.g. compute the latent scale factor into ``model.json``).
    """

    name: str
    stages: Callable[[TrainConfig], list[str]]
    build_stage: Callable[[StageRequest], StageSetup]
    load_generator: Callable[[RunFolder, torch.device], ImageGenerator]
    check: Callable[[TrainConfig, DatasetInfo], None] = lambda config, info: None


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise RuntimeError(f"model family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> ModelFamily:
    """The registered family ``name`` (imports ``imgsynth.training.families`` once)."""
    import imgsynth.training.families  # noqa: F401  (registers every family)

    if name not in _FAMILIES:
        from imgsynth.errors import ConfigError

        raise ConfigError(f"'model.family': unknown family {name!r} (known: {', '.join(sorted(_FAMILIES))})")
    return _FAMILIES[name]
