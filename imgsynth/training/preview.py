"""Preview grids: a batch of images in model scale tiled into one 8-bit PNG (3D: middle slices)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from imgsynth.utils.io import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Model scale [-1, 1] -> uint8 [0, 255] (clipped)."""
    return np.round((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def middle_slice(image: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` unchanged; ``[C, D, H, W]`` -> its middle slice along D."""
    return image if image.ndim == 3 else image[:, image.shape[1] // 2]


def image_grid(images: torch.Tensor | np.ndarray, columns: int | None = None) -> np.ndarray:
    """``[N, C, *spatial]`` -> ``[rows*H, cols*W]`` (one channel) or ``[.., .., 3]`` (three) uint8."""
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    tiles = [middle_slice(a) for a in arr]
    c, h, w = tiles[0].shape
    cols = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    grid = np.full((c, rows * h, cols * w), -1.0, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        grid[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = tile
    out = to_uint8(grid)
    return out[0] if c != 3 else np.moveaxis(out, 0, -1)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 ``[H, W]`` or ``[H, W, 3]`` array as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
