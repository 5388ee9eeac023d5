"""The MONAI transform chain of ``preprocess``, composed from the config.

Order (each step only when configured): ``Orientationd`` (RAS) -> ``Spacingd`` (bilinear for
images and linear maps, nearest for label maps) -> ``ScaleIntensityRanged`` (the recorded
intensity mapping onto [-1, 1], clipped) -> ``CropForegroundd`` -> ``ResizeWithPadOrCropd``
(the image padded with its background, masks with 0). The dictionary keys are ``image``, one
``mask:<name>`` per mask condition and, when slice positions are needed, ``fov``: a channel of
ones that marks the field of view before padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    Orientationd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from imgsynth.contracts import Intensity
from imgsynth.data.config import PreprocessConfig
from imgsynth.data.volume import Volume

FOV = "fov"


class Above:
    """``select_fn`` for CropForegroundd: values above a threshold (a class, so it pickles)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, x: Any) -> Any:
        return x > self.threshold


def foreground_threshold(cfg: PreprocessConfig, intensity: Intensity, volume_min: float) -> float:
    """Foreground threshold in the units the image has when it is cropped (model scale unless 'none')."""
    if cfg.spatial.foreground_threshold is not None:
        return float(cfg.spatial.foreground_threshold)
    return volume_min if intensity.kind == "none" else -1.0


def background_value(intensity: Intensity, volume_min: float) -> float:
    return volume_min if intensity.kind == "none" else -1.0


def build_chain(
    cfg: PreprocessConfig, intensity: Intensity, mask_modes: dict[str, str], *, with_fov: bool, volume_min: float
) -> Compose:
    """The configured MONAI Compose over keys ``image``, ``mask:<name>`` and (optionally) ``fov``."""
    sp = cfg.spatial
    masks = list(mask_modes)
    others = masks + ([FOV] if with_fov else [])
    keys = ["image", *others]
    chain: list[Any] = []
    if sp.orientation:
        chain.append(Orientationd(keys=keys, axcodes=sp.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if sp.spacing:
        modes = ["bilinear"] + [mask_modes[m] for m in masks] + (["nearest"] if with_fov else [])
        padding = ["border"] + ["zeros"] * len(others)
        pixdim = [float(v) if v and v > 0 else 0.0 for v in sp.spacing]
        chain.append(Spacingd(keys=keys, pixdim=pixdim, mode=modes, padding_mode=padding, dtype=np.float32))
    if intensity.kind != "none":
        assert intensity.low is not None and intensity.high is not None
        chain.append(
            ScaleIntensityRanged(keys="image", a_min=intensity.low, a_max=intensity.high, b_min=-1.0, b_max=1.0, clip=True)
        )
    if sp.crop_foreground:
        thr = foreground_threshold(cfg, intensity, volume_min)
        chain.append(
            CropForegroundd(
                keys=keys, source_key="image", select_fn=Above(thr), margin=sp.margin, allow_smaller=True,
                start_coord_key=None, end_coord_key=None,
            )
        )
    if sp.size:
        size = [int(s) if s > 0 else -1 for s in sp.size]
        chain.append(ResizeWithPadOrCropd(keys="image", spatial_size=size, value=background_value(intensity, volume_min)))
        if others:
            chain.append(ResizeWithPadOrCropd(keys=others, spatial_size=size, value=0.0))
    return Compose(chain)


def volume_dict(vol: Volume, mask_channels: dict[str, list[str]], *, with_fov: bool) -> dict[str, MetaTensor]:
    """Channel-first MetaTensors carrying the volume's affine, one per key."""
    affine = torch.as_tensor(vol.affine, dtype=torch.float64)

    def meta(arr: np.ndarray) -> MetaTensor:
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), affine=affine.clone())

    data = {"image": meta(vol.image[None])}
    for name, channels in mask_channels.items():
        data[f"mask:{name}"] = meta(np.stack([vol.masks[c] for c in channels]))
    if with_fov:
        data[FOV] = meta(np.ones((1, *vol.image.shape), dtype=np.float32))
    return data


def apply_chain(
    vol: Volume,
    cfg: PreprocessConfig,
    intensity: Intensity,
    *,
    with_fov: bool,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run the chain on one volume; returns ({key: array [C, X, Y, Z]}, RAS affine)."""
    mask_channels = {name: spec.channels for name, spec in cfg.masks.items()}
    modes = {f"mask:{name}": ("nearest" if spec.interpolation == "nearest" else "bilinear") for name, spec in cfg.masks.items()}
    chain = build_chain(cfg, intensity, modes, with_fov=with_fov, volume_min=float(vol.image.min()))
    out = chain(volume_dict(vol, mask_channels, with_fov=with_fov))
    affine = np.asarray(out["image"].affine, dtype=np.float64)
    arrays = {k: out[k].detach().cpu().numpy() for k in ("image", *modes, *([FOV] if with_fov else []))}
    return arrays, affine
