"""Process entry point of ``imgsynth train`` (what ``accelerate launch`` runs in every process).

    accelerate launch --num_processes 4 scripts/train.py DATASET_DIR RUN_DIR --config ldm_2d
    accelerate launch --num_processes 4 -m imgsynth.training.entry DATASET_DIR RUN_DIR ...

Same arguments as ``imgsynth train`` except ``--num-processes`` (accelerate decides).
"""

from __future__ import annotations

import argparse
import os
import sys

from imgsynth.errors import EXIT_FAILED, ImgsynthError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="imgsynth-train", description="Train a generative model on a dataset folder.")
    p.add_argument("dataset", help="dataset folder (manifest.csv + dataset.json)")
    p.add_argument("run_dir", help="run folder to write (resumed when it exists)")
    p.add_argument("--config", default="ldm_2d", help="built-in config name or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override key.sub=value (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, train nothing")
    return p.parse_args(argv)


def load(config: str, overrides: list[str]):  # noqa: ANN201
    from imgsynth.config import load_config

    return load_config(config, overrides, expect_kind="train")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    from imgsynth.utils.log import console, setup_logging

    setup_logging()
    try:
        config = load(args.config, args.overrides)
        if args.dry_run:
            from imgsynth.training.run import dry_run

            print(dry_run(args.dataset, config))
            return 0
        from imgsynth.training.run import train

        train(args.dataset, args.run_dir, config, argv=["imgsynth", "train", *argv])
    except ImgsynthError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, like the CLI (IMGSYNTH_DEBUG=1 shows the traceback)
        console.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {exc}", markup=True, highlight=False)
        if os.environ.get("IMGSYNTH_DEBUG") == "1":
            raise
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
