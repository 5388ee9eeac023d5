"""``imgsynth preprocess IN... OUT [--config NAME|PATH] [--set k=v] [--workers N] [--dry-run]``."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("preprocess")
    def preprocess_cmd(
        paths: Annotated[
            list[str],
            typer.Argument(
                help="Inputs (DICOM trees, NIfTI folders or files, MedMNIST .npz, nilearn:mni152), then OUT_DIR.",
                show_default=False,
                metavar="IN... OUT_DIR",
            ),
        ],
        config: Annotated[
            str | None,
            typer.Option("--config", "-c", help="Built-in config name (imgsynth config list) or YAML path."),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", "-s", help="Override a config value: key.sub=value (repeatable)."),
        ] = None,
        workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Worker processes.")] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the resolved config and the series found; write nothing.")
        ] = False,
    ) -> int:
        """Turn DICOM series / NIfTI volumes / MedMNIST files into one training-ready dataset folder.

        Writes OUT_DIR/manifest.csv, dataset.json and items; series that cannot be used are listed
        with a one-line reason in OUT_DIR/errors.jsonl (exit code 3 when there are any).
        """
        from imgsynth.config import config_to_yaml
        from imgsynth.data.pipeline import preprocess, resolve_config
        from imgsynth.errors import UsageError
        from imgsynth.utils.log import console

        if len(paths) < 2:
            raise UsageError("give at least one input and the output folder: imgsynth preprocess IN... OUT_DIR")
        *inputs, out = paths
        cfg = resolve_config(config, set_ or [])
        if dry_run:
            from imgsynth.data.sources import discover

            typer.echo(config_to_yaml(cfg), nl=False)
            if all(not i.lower().endswith(".npz") for i in inputs):
                units, ignored = discover(inputs, cfg, workers=workers or cfg.workers)
                for unit in units:
                    typer.echo(f"# {unit.kind:8s} {unit.label}" + (f"  SKIP: {unit.error}" if unit.error else ""))
                typer.echo(f"# {len(units)} unit(s), {sum(u.error is None for u in units)} usable, {ignored} file(s) ignored")
            return 0
        result = preprocess(inputs, out, cfg, workers=workers)
        console.print(("resumed: " if result.resumed else "") + result.summary(), highlight=False, soft_wrap=True)
        return result.exit_code
