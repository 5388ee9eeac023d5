"""``--run``: reconstruction quality of a run folder's autoencoder on the real held-out split.

The autoencoder is rebuilt from the run folder alone: ``config.yaml`` (its ``model.autoencoder``
section), ``model.json`` (spatial dims), ``dataset.json`` (channels) and
``weights/autoencoder-ema.safetensors`` (or ``autoencoder.safetensors`` when no EMA copy exists;
keys may carry an ``autoencoder.`` prefix).
:func:`load_autoencoder` is the one place that knows this layout: it builds MONAI's
``AutoencoderKL`` (the network the latent diffusion family trains) and decodes the latent mean.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from imgsynth.contracts import RunFolder
from imgsynth.errors import ContractError
from imgsynth.utils.io import sha256_file

Reconstructor = Callable[[torch.Tensor], torch.Tensor]

# Config keys of the run's autoencoder section -> AutoencoderKL arguments.
_RENAMED = {"with_nonlocal_attn": ("with_encoder_nonlocal_attn", "with_decoder_nonlocal_attn")}


def _autoencoder_section(config: dict[str, Any], path: Path) -> dict[str, Any]:
    for keys in (("model", "autoencoder"), ("autoencoder",)):
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            return node
    raise ContractError("no 'model.autoencoder' section: this run has no autoencoder stage", path=path)


def load_autoencoder(run_dir: str | Path, *, ema: bool = True, device: torch.device | None = None) -> tuple[Reconstructor, dict[str, Any]]:
    """(reconstruct ``[B, C, *S] -> [B, C, *S]``, recipe) for the run's autoencoder."""
    from monai.networks.nets import AutoencoderKL
    from safetensors.torch import load_file

    run = RunFolder.read(run_dir)
    info = run.model_info()
    channels = run.dataset_info().channels
    config = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    section = _autoencoder_section(config, run.config_path)
    accepted = set(inspect.signature(AutoencoderKL.__init__).parameters)
    kwargs: dict[str, Any] = {}
    for key, value in section.items():
        for target in _RENAMED.get(key, (key,)):
            if target in accepted and target not in ("spatial_dims", "in_channels", "out_channels"):
                kwargs[target] = tuple(value) if isinstance(value, list) else value
    weights = run.weights_path("autoencoder", ema=ema)
    used_ema = ema
    if not weights.is_file() and ema:
        weights, used_ema = run.weights_path("autoencoder"), False
    if not weights.is_file():
        raise ContractError("autoencoder weights missing (expected autoencoder-ema.safetensors)", path=run.weights_dir)
    try:
        net = AutoencoderKL(spatial_dims=info.spatial_dims, in_channels=channels, out_channels=channels, **kwargs)
        state = load_file(str(weights))
        if any(k.startswith("autoencoder.") for k in state):  # stage files may prefix the module name
            state = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("autoencoder.")}
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ContractError(f"autoencoder weights do not match config.yaml ({str(exc).splitlines()[0]})", path=weights) from None
    device = device or torch.device("cpu")
    net = net.eval().to(device)

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        z_mu, _ = net.encode(x.to(device))
        return net.decode(z_mu).float().cpu()

    recipe = {
        "run": run.root.name,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "ema": used_ema,
        "decoding": "latent mean (no sampling)",
        "family": info.family,
    }
    return reconstruct, recipe


def reconstruct_all(fn: Reconstructor, images: np.ndarray, batch: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(fn(torch.from_numpy(np.ascontiguousarray(images[s : s + batch], dtype=np.float32))).numpy())
    return np.concatenate(out)
