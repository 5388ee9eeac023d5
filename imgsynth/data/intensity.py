"""Choosing the intensity mapping (physical units -> model scale [-1, 1]) recorded in dataset.json.

* ``ct_window``: a fixed window in HU (default [-1000, 1000]);
* ``percentile``: the [p_low, p_high] percentiles of the acquired voxels (before any resampling),
  per volume or once over the dataset;
* ``minmax``: fixed ``low``/``high`` when given, else the minimum and maximum, per volume or dataset;
* ``none``: physical units are stored unchanged.

``auto`` picks ``ct_window`` for CT and ``percentile`` otherwise. Per-volume fits record each
series' own [low, high] in ``dataset.json`` (``intensity.params.per_series``) so every real item maps
back exactly; the top-level low/high are then the means over series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgsynth.contracts import Intensity
from imgsynth.data.config import IntensityOptions
from imgsynth.errors import ConfigError, InputError

CT_WINDOW = (-1000.0, 1000.0)
SAMPLE_PER_VOLUME = 200_000


def resolve_kind(opts: IntensityOptions, modality: str) -> str:
    if opts.kind != "auto":
        return opts.kind
    return "ct_window" if modality.upper() == "CT" else "percentile"


def needs_fit(opts: IntensityOptions, kind: str) -> bool:
    """True when low/high come from the data rather than the config."""
    if kind in ("none", "ct_window"):
        return False
    return not (kind == "minmax" and opts.low is not None)


def unit_of(opts: IntensityOptions, modality: str) -> str:
    if opts.unit is not None:
        return opts.unit
    return "HU" if modality.upper() == "CT" else ""


def fixed_intensity(opts: IntensityOptions, kind: str, unit: str) -> Intensity:
    """The mapping when it does not depend on the data (ct_window, none, minmax with low/high)."""
    if kind == "none":
        return Intensity(kind="none", unit=unit)
    if kind == "ct_window":
        low, high = (opts.low, opts.high) if opts.low is not None else CT_WINDOW
        assert low is not None and high is not None
        return Intensity(
            kind="ct_window", low=low, high=high, unit=unit,
            params={"center": (low + high) / 2, "width": high - low},
        )
    if kind == "minmax" and opts.low is not None and opts.high is not None:
        return Intensity(kind="minmax", low=opts.low, high=opts.high, unit=unit, params={"fixed": True})
    raise ConfigError(f"intensity kind '{kind}' is fitted from the data, not fixed")


def fit_values(opts: IntensityOptions, kind: str, values: np.ndarray) -> tuple[float, float]:
    """(low, high) of ``values`` for a fitted kind; refuses a zero range."""
    values = np.asarray(values).ravel(order="K")  # no copy for Fortran-ordered NIfTI data
    if kind == "percentile":
        low, high = (float(v) for v in np.percentile(values, list(opts.percentiles)))
    elif kind == "minmax":
        low, high = float(values.min()), float(values.max())
    else:
        raise ConfigError(f"intensity kind '{kind}' is not fitted")
    if not high > low:
        raise InputError(f"intensity {kind} range is empty ({low:g}..{high:g}): the volume is almost constant")
    return low, high


def fitted_intensity(opts: IntensityOptions, kind: str, unit: str, low: float, high: float, scope: str) -> Intensity:
    params: dict[str, object] = {"scope": scope}
    if kind == "percentile":
        params["percentiles"] = list(opts.percentiles)
    return Intensity(kind=kind, low=low, high=high, unit=unit, params=params)  # type: ignore[arg-type]


def voxel_sample(image: np.ndarray, seed: int, size: int = SAMPLE_PER_VOLUME) -> np.ndarray:
    """A seeded random sample of voxels (all of them when fewer), for dataset-wide fits."""
    flat = image.ravel(order="K")
    if flat.size <= size:
        return flat.astype(np.float32)
    rng = np.random.default_rng(seed)
    return flat[rng.choice(flat.size, size=size, replace=False)].astype(np.float32)


def summarise(per_series: dict[str, tuple[float, float]], template: Intensity) -> Intensity:
    """Dataset-level record of per-volume fits: mean low/high, every series' own values in params."""
    lows = [v[0] for v in per_series.values()]
    highs = [v[1] for v in per_series.values()]
    params = dict(template.params)
    params["per_series"] = {k: [round(v[0], 6), round(v[1], 6)] for k, v in sorted(per_series.items())}
    params["note"] = "low/high are means over series; each real item was mapped with its series' own values"
    return Intensity(kind=template.kind, low=float(np.mean(lows)), high=float(np.mean(highs)), unit=template.unit, params=params)


def same_mapping(items: Sequence[Intensity]) -> bool:
    first = items[0]
    return all(i.kind == first.kind and i.low == first.low and i.high == first.high for i in items)
