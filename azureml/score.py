"""Scoring script of the generation batch endpoint (``batch-deployment.yml``).

Azure ML calls ``init()`` once per worker process, then ``run(mini_batch)`` with lists of request
CSV files (columns: ``count``, ``seed``, then condition fields; see
:mod:`imgsynth.generate.endpoint`). The model is a run folder registered as a ``custom_model``
(``AZUREML_MODEL_DIR``); samples are written into the job's output folder
(``AZUREML_BI_OUTPUT_PATH``) by the same code path as ``imgsynth generate``, and ``run`` returns
one row per sample (its manifest row, ``request_file``, ``request_line``, or ``error``), which the
deployment appends to ``generated.csv``. Afterwards
``python -c "from imgsynth.generate.endpoint import collect; collect('OUTPUT')"`` writes the
output folder's ``manifest.csv`` and ``dataset.json``.
"""

from __future__ import annotations

from typing import Any

_session: Any = None

COLUMNS = ("id", "request_file", "request_line", "seed", "path", "png", "nifti", "dicom", "error")


def init() -> None:
    """Load the registered run (EMA weights) once; settings from the deployment's environment."""
    global _session
    from imgsynth.generate.endpoint import EndpointSession
    from imgsynth.utils.log import setup_logging

    setup_logging()
    _session = EndpointSession.from_environment()


def run(mini_batch: list[str]) -> Any:
    """Generate the requests of every CSV file in ``mini_batch``; a DataFrame with one row per sample."""
    if _session is None:
        init()
    rows = _session.run(mini_batch)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - the image installs pandas with the 'azure' extra
        return rows
    frame = pd.DataFrame(rows)
    first = [c for c in COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]
