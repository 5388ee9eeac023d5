"""``imgsynth demo [OUT_DIR] [--quick]`` (heavy imports inside the command)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder for every stage's output (created; resumed if it "
                                            "holds an interrupted demo).")] = Path("imgsynth-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="A smaller run (under a minute on 2 CPU cores): 32x32 "
                                        "slices, a tiny LDM only, fewer samples and cases.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch (default: "
                                                "torch's choice; 1 is faster on a busy machine).")] = None,
) -> int:
    """Run the whole pipeline on real data shipped with the installed packages, no network, no GPU needed.

    De-identifies pydicom's DICOM test files (and verifies), turns nilearn's MNI152 brain template
    into a conditioned slice dataset, trains a small latent diffusion model (and, without --quick,
    a StyleGAN2), generates PNG/NIfTI/DICOM samples, evaluates them and exports a review package.
    Ctrl-C stops cleanly; the same command resumes. Full run under 15 minutes on 2 CPU cores.
    """
    from imgsynth.demo.runner import run_demo
    from imgsynth.utils.log import console as err

    mode = "quick" if quick else "full"
    err.print(f"[bold]imgsynth demo[/bold] ({mode}) -> {out_dir}", highlight=False)

    def announce(step: Any, index: int, total: int, folder: Path) -> None:
        err.print(f"[bold cyan][{index}/{total}][/bold cyan] {step.stage}. {step.title} -> {folder.name}/",
                  highlight=False)

    try:
        result = run_demo(out_dir, quick=quick, threads=threads, announce=announce)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/yellow]: finished stages are kept; run the same command again to resume "
                  f"({out_dir})", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    print_summary(summary_console(), result, str(out_dir))
    return 0


def summary_console() -> Any:
    """A console on stdout: the terminal's width, or 120 columns when the output is a file or pipe."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=120)


def print_summary(out: Any, result: Any, shown_root: str) -> None:
    from rich.table import Table

    from imgsynth.demo.readme import summary_rows

    earlier = any(r.skipped for r in result.results)
    caption = f"* done by an earlier run, skipped this time (this run: {result.seconds:.0f} s)" if earlier else None
    table = Table(title=f"imgsynth demo ({result.mode.name}) in {shown_root}: {result.total_seconds:.0f} s",
                  caption=caption, show_lines=True)
    table.add_column("Stage", no_wrap=True)
    table.add_column("Time", justify="right", no_wrap=True)
    table.add_column("Key figures", ratio=1)
    table.add_column("Output", no_wrap=True)
    for row in summary_rows(result):
        table.add_row(*row)
    out.print(table)
    out.print("Re-run one stage alone on these folders:", highlight=False)
    if shutil.which("imgsynth") is None:  # e.g. run as .venv/bin/imgsynth without activating .venv
        bin_dir = Path(sys.executable).parent
        out.print(f"  (imgsynth is not on your PATH: first `source {bin_dir / 'activate'}`, or call {bin_dir / 'imgsynth'})",
                  highlight=False, soft_wrap=True, markup=False)
    for _, commands in result.commands:
        for command in commands:
            out.print(f"  {command}", highlight=False, soft_wrap=True, markup=False)
    out.print(f"What each folder holds: {Path(shown_root) / 'README.txt'} "
              f"(private/ holds the de-identification key: never share it).", highlight=False, soft_wrap=True)
