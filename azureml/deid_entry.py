"""Entry script of the de-identification parallel job (``deid-preprocess-pipeline.yml``).

Azure ML starts it with the job's ``program_arguments`` and calls ``init()`` once per worker, then
``run(mini_batch)`` with lists of input file paths. It runs the de-identification stage's parallel
entry (:mod:`imgsynth.deid.parallel`, the same mini-batch entry as ``imgsynth deid run``):

    --input-root DIR    the mounted DICOM folder (audit ids are keyed on paths relative to it,
                        as in a local run of that folder)
    --output DIR        the de-identified folder (a mounted output)
    --key-file FILE     file holding the de-identification key (or set IMGSYNTH_DEID_KEY)
    --config NAME       built-in config name or YAML path (default deid_basic)

``run`` returns one JSON line per input (the lines of ``audit.jsonl``: keyed input id, status,
output name, reason; no path, no identifying value), appended to the job's audit output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deid_entry", add_help=False)
    p.add_argument("--input-root", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--key-file")
    p.add_argument("--config", default="deid_basic")
    args, _ = p.parse_known_args(argv)  # the parallel runner adds its own arguments
    return args


def init() -> None:
    """Configure and load the de-identifier once per worker."""
    from imgsynth.deid import parallel
    from imgsynth.deid.keys import KEY_ENV

    args = _args(sys.argv[1:])
    os.environ["IMGSYNTH_DEID_OUT"] = args.output
    os.environ["IMGSYNTH_DEID_INPUT_ROOT"] = args.input_root
    os.environ["IMGSYNTH_DEID_CONFIG"] = args.config
    if args.key_file:
        os.environ[KEY_ENV] = Path(args.key_file).read_text(encoding="utf-8").strip()
    Path(args.output).mkdir(parents=True, exist_ok=True)
    parallel.init()


def run(mini_batch: list[Any]) -> list[str]:
    """De-identify the files of one mini-batch; one audit line (JSON) per file."""
    from imgsynth.deid import parallel

    return parallel.run(mini_batch)
