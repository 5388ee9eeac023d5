"""Stage 2: DICOM series / NIfTI / MedMNIST -> dataset folders, and torch loaders over them.

``imgsynth.data.preprocess(inputs, out_dir, config)`` is the API function and
``imgsynth.data.preprocess_minibatch(units, out_dir, config)`` the mini-batch entry; both are
imported lazily so that importing this package (e.g. for its config schema) stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "preprocess": "imgsynth.data.pipeline",
    "PreprocessResult": "imgsynth.data.pipeline",
    "preprocess_minibatch": "imgsynth.data.process",
    "import_medmnist": "imgsynth.data.medmnist",
    "item_dataset": "imgsynth.data.loading",
    "make_loader": "imgsynth.data.loading",
    "ConditionEncoder": "imgsynth.data.loading",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imgsynth.data' has no attribute {name!r}")
