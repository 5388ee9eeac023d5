"""Process entry point of ``imgsynth generate --num-processes P`` (what ``accelerate launch`` runs).

    accelerate launch --num_processes 8 -m imgsynth.generate.entry OUT_DIR/.generate/launch.json

It reads the job that ``imgsynth generate`` wrote. Jobs launched directly (e.g. an Azure ML
command job across nodes) run the command line itself in every process instead:
``accelerate launch -m imgsynth generate CHECKPOINT OUT_DIR --n 100000 ...``. Either way every
process runs :func:`imgsynth.generate.runner.run_job`, and they split the samples between them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from imgsynth.errors import EXIT_FAILED, ImgsynthError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from rich.markup import escape

    from imgsynth.generate.runner import GenerateJob, run_job
    from imgsynth.utils.log import console, setup_logging

    setup_logging()
    try:
        if len(argv) != 1:
            raise ImgsynthError("usage: python -m imgsynth.generate.entry OUT_DIR/.generate/launch.json")
        job = GenerateJob(**json.loads(Path(argv[0]).read_text(encoding="utf-8")))
        job.check()
        run_job(job)
    except ImgsynthError as exc:
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, like the CLI (IMGSYNTH_DEBUG=1 shows the traceback)
        console.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}", markup=True, highlight=False)
        if os.environ.get("IMGSYNTH_DEBUG") == "1":
            raise
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
