"""Evaluation of synthetic images against real ones (stage 5): ``evaluate(real, synthetic, out_dir, config)``.

Heavy modules (torch, MONAI) load on first use, so ``import imgsynth.evaluation`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate", "evaluate_batch"]


def evaluate(*args: Any, **kwargs: Any) -> Any:
    from imgsynth.evaluation.suite import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def evaluate_batch(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from imgsynth.evaluation.suite import evaluate_batch as _batch

    return _batch(jobs)


evaluate.__doc__ = "Evaluate a synthetic dataset folder against a real one; see imgsynth.evaluation.suite.evaluate."
