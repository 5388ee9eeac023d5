"""Where training numbers go: ``metrics.jsonl`` always, MLflow when asked for and installed.

Only the main process holds a sink that writes; the others get a :class:`NullSink`.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from imgsynth.contracts import RunFolder
from imgsynth.errors import DependencyError
from imgsynth.utils.log import get_logger

log = get_logger("training")


class MetricsSink:
    """Appends records to the run's ``metrics.jsonl`` (and MLflow)."""

    def __init__(self, run: RunFolder, *, mlflow: bool = False, experiment: str = "imgsynth", tracking_uri: str | None = None) -> None:
        self.run = run
        self._mlflow = None
        if mlflow:
            try:
                import mlflow as _mlflow
            except ImportError:
                raise DependencyError(
                    "logging.mlflow is on but mlflow is not installed (pip install 'imgsynth[azure]' or set logging.mlflow=false)"
                ) from None
            uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            if uri:
                _mlflow.set_tracking_uri(uri)
            _mlflow.set_experiment(experiment)
            if _mlflow.active_run() is None:
                _mlflow.start_run(run_name=run.root.name)
            self._mlflow = _mlflow

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log_metrics(record)
        if self._mlflow is not None:
            numbers = {
                f"{record['stage']}/{k}": float(v)
                for k, v in record.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step",) and math.isfinite(v)
            }
            self._mlflow.log_metrics(numbers, step=int(record["step"]))

    def close(self) -> None:
        if self._mlflow is not None and self._mlflow.active_run() is not None:
            self._mlflow.end_run()


class NullSink:
    def log(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class Running:
    """Running means of logged numbers between two log records.

    Tensors are summed on their device and read only in :meth:`means`, so logging does not
    synchronise the GPU on every step.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, values: Mapping[str, Any]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums[k] + (v.detach().float() if hasattr(v, "detach") else float(v))
            self.counts[k] += 1

    def means(self) -> dict[str, float]:
        out = {k: float(self.sums[k]) / self.counts[k] for k in sorted(self.sums)}
        self.sums.clear()
        self.counts.clear()
        return out
