"""``imgsynth evaluate --real R --synthetic S OUT [--run RUN] [--config NAME] [--set k=v]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        out_dir: Annotated[Path, typer.Argument(help="Evaluation folder to write (report.json, report.html).")],
        real: Annotated[Path, typer.Option("--real", help="Real dataset folder: train = memorization reference, test = held-out.")],
        synthetic: Annotated[Path, typer.Option("--synthetic", help="Synthetic dataset folder (every item is used).")],
        run: Annotated[Path | None, typer.Option("--run", help="Run folder: adds its autoencoder's reconstruction quality.")] = None,
        config: Annotated[str, typer.Option("--config", "-c", help="Built-in config name or YAML path (kind: evaluate).")] = "evaluate",
        set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config value: key.sub=value (repeatable).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")] = False,
    ) -> int:
        """Compare synthetic images with real ones: FID/KID-style distances with floors, similarity, diversity,
        memorization, physical validators, downstream TSTR/TRTR; writes report.json and report.html."""
        from imgsynth.config import config_to_yaml
        from imgsynth.evaluation.suite import evaluate, resolve_config
        from imgsynth.utils.log import console

        cfg = resolve_config(config, list(set_ or []))
        if dry_run:
            typer.echo(config_to_yaml(cfg), nl=False)
            return 0
        result = evaluate(real, synthetic, out_dir, cfg, run=run)
        shown = [n for n in ("FID", "KID", "FID_2.5d", "FD_domain", "KD_domain", "FD_medicalnet", "diversity.ms_ssim",
                             "memorization.fraction", "downstream.tstr", "downstream.trtr", "downstream.ratio",
                             "reconstruction.ssim") if n in result.report.metrics]
        for name in shown:
            m = result.report.metrics[name]
            value = "n/a" if m.value is None else f"{m.value:.4g}"
            floor = "" if m.floor is None else f"  (floor {m.floor:.4g})"
            console.print(f"{name:24s} {value}{floor}", markup=False, highlight=False)
        for warning in result.report.warnings:
            console.print(f"note: {warning}", markup=False, highlight=False, soft_wrap=True)
        if result.skipped:
            console.print(f"{len(result.skipped)} items skipped (see report.json extra.skipped)", markup=False)
        console.print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.html'} in {result.seconds:.1f} s", markup=False)
        return result.exit_code
