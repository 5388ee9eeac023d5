"""Learning-rate schedule as a function of images seen (stateless, so resume is exact)."""

from __future__ import annotations

import math


def lr_factor(kimg: float, *, total_kimg: float, warmup_kimg: float = 0.0, kind: str = "constant", lr_min: float = 0.0) -> float:
    """Multiplier of the base learning rate after ``kimg`` thousand images.

    Linear warm-up from 0 over ``warmup_kimg``; then ``constant`` (1) or ``cosine`` decay,
    ``lr_min + (1 - lr_min) * (1 + cos(pi * p)) / 2`` with ``p`` the fraction of the post-warm-up
    budget done (Loshchilov & Hutter, SGDR, eq. 5 without restarts).
    """
    warm = min(1.0, kimg / warmup_kimg) if warmup_kimg > 0 else 1.0
    if kind == "constant":
        return warm
    span = max(total_kimg - warmup_kimg, 1e-12)
    p = min(max((kimg - warmup_kimg) / span, 0.0), 1.0)
    return warm * (lr_min + (1.0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * p)))
