"""Entry script for an Azure ML parallel job (or batch endpoint): ``init()`` and ``run(mini_batch)``.

It runs the same mini-batch entry as ``imgsynth deid run`` (:func:`imgsynth.deid.tree.deid_minibatch`);
settings come from the environment of the job:

* ``IMGSYNTH_DEID_OUT``: the output folder (a mounted datastore path);
* ``IMGSYNTH_DEID_INPUT_ROOT``: the mounted input folder (input labels and their keyed ids are
  relative to it, exactly as in a local run of that folder);
* ``IMGSYNTH_DEID_CONFIG``: built-in config name or YAML path (default ``deid_basic``);
* ``IMGSYNTH_DEID_KEY``: the secret key (from a key vault secret, never from the job's YAML).

``run`` returns one JSON line per input, the lines of ``audit.jsonl`` (no path, no identifying value);
the parallel job gathers them (``append_row``) into its output file.
"""

from __future__ import annotations

import json
import os
from typing import Any

from imgsynth.deid.keys import KEY_ENV, Keyring
from imgsynth.deid.tree import Job, _audit_line, deid_minibatch, resolve_config

_job: Job | None = None


def init() -> None:
    global _job
    out = os.environ.get("IMGSYNTH_DEID_OUT")
    if not out or not os.environ.get(KEY_ENV):
        raise RuntimeError(f"set IMGSYNTH_DEID_OUT and {KEY_ENV} in the job's environment")
    config = resolve_config(os.environ.get("IMGSYNTH_DEID_CONFIG", "deid_basic"))
    _job = Job(out, config.model_dump(mode="json"), Keyring(os.environ[KEY_ENV]),
               input_root=os.environ.get("IMGSYNTH_DEID_INPUT_ROOT"))


def run(mini_batch: list[Any]) -> list[str]:
    """De-identify the files of one mini-batch; one audit line (JSON) per file."""
    if _job is None:
        init()
    assert _job is not None
    return [json.dumps(_audit_line(r)) for r in deid_minibatch([str(p) for p in mini_batch], _job)]
