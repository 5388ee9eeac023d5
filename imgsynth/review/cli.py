"""``imgsynth review export`` and ``imgsynth review score`` (heavy imports inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

review_app = typer.Typer(
    help="Blinded real-vs-synthetic reading packages for radiologists, and scoring of their answers.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    str | None, typer.Option("--config", "-c", help="A 'kind: review' YAML config (built-in name or path).")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config value: export.n_real=30 (repeatable).")
]


def _load(config: str | None, overrides: list[str] | None) -> Any:
    from imgsynth.config import load_config, validate_config
    from imgsynth.review.config import ReviewConfig

    if config is None:
        from imgsynth.config import apply_overrides

        return validate_config(ReviewConfig, apply_overrides({}, overrides or []), source="--set")
    return load_config(config, overrides or [], expect_kind="review")


def _with(section: Any, **given: Any) -> Any:
    """``section`` updated with the command-line values that were actually given."""
    from imgsynth.config import validate_config

    values = {k: v for k, v in given.items() if v is not None}
    return validate_config(type(section), {**section.model_dump(), **values}, source="command line") if values else section


@review_app.command("export")
def export_command(
    out_dir: Annotated[Path, typer.Argument(help="Review folder to write (readers/, key.csv, review.json).")],
    real: Annotated[Path, typer.Option("--real", help="Real dataset folder (cases from its test split).")],
    synthetic: Annotated[Path, typer.Option("--synthetic", help="Synthetic dataset folder (a sample set).")],
    n_real: Annotated[int | None, typer.Option("--n-real", help="Real cases (the same for every reader).")] = None,
    n_synthetic: Annotated[int | None, typer.Option("--n-synthetic", help="Synthetic cases.")] = None,
    readers: Annotated[int | None, typer.Option("--readers", help="Number of reading packages.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of selection, case ids and orders.")] = None,
    dicom: Annotated[bool | None, typer.Option("--dicom/--no-dicom", help="Also write the cases as DICOM.")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="DICOM class: auto, CT, MR or OT.")] = None,
    channel: Annotated[int | None, typer.Option("--channel", help="Channel shown for multi-channel items.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="Title shown to readers.")] = None,
    instructions: Annotated[str | None, typer.Option("--instructions", help="Instructions shown to readers.")] = None,
    show_condition: Annotated[
        list[str] | None, typer.Option("--show-condition", help="Condition shown with each case (repeatable).")
    ] = None,
    uid_root: Annotated[str | None, typer.Option("--uid-root", help="DICOM UID root (default 2.25.<uuid>).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes writing cases.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> int:
    """Write one blinded reading package per reader and key.csv (which case is real) beside readers/."""
    from imgsynth.provenance import collect
    from imgsynth.review.export import export_review

    cfg = _with(
        _load(config, set_).export,
        n_real=n_real, n_synthetic=n_synthetic, readers=readers, seed=seed, dicom=dicom, modality=modality,
        channel=channel, title=title, instructions=instructions, show_conditions=show_condition or None,
        uid_root=uid_root, workers=workers,
    )
    result = export_review(real, synthetic, out_dir, cfg, argv=collect()["command"])
    cases = result.n_real + result.n_synthetic
    if result.already_done:
        typer.echo(f"{out_dir}: export already complete (seed {result.seed}); nothing to do")
    else:
        typer.echo(
            f"wrote {len(result.readers)} reading package(s) of {cases} cases to {out_dir / 'readers'} "
            f"(seed {result.seed}); key: {out_dir / 'key.csv'}"
        )
    for note in result.notes:
        typer.echo(f"note: {note}")
    for item, reason in result.skipped:
        typer.echo(f"skipped item {item}: {reason}", err=True)
    return result.exit_code


@review_app.command("score")
def score_command(
    paths: Annotated[
        list[Path], typer.Argument(metavar="KEY_CSV ANSWERS.csv... OUT_DIR", help="key.csv, answer file(s), output.")
    ],
    bootstrap: Annotated[int | None, typer.Option("--bootstrap", help="Bootstrap resamples for intervals.")] = None,
    confidence_level: Annotated[float | None, typer.Option("--confidence-level", help="Interval level.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Bootstrap seed.")] = None,
    allow_incomplete: Annotated[
        bool | None, typer.Option("--allow-incomplete", help="Score answered cases when some are missing.")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> int:
    """Check returned answers.csv files against key.csv; write results.json, report.md/.html, cases.csv."""
    from imgsynth.errors import UsageError
    from imgsynth.review.report import summary_sentence
    from imgsynth.review.score import score_review

    if len(paths) < 3:
        raise UsageError("review score needs KEY_CSV, at least one ANSWERS.csv and OUT_DIR (last)")
    cfg = _with(
        _load(config, set_).score,
        bootstrap=bootstrap, confidence_level=confidence_level, seed=seed, allow_incomplete=allow_incomplete,
    )
    result = score_review(paths[0], paths[1:-1], paths[-1], cfg)
    typer.echo(summary_sentence(result.results))
    typer.echo(f"report: {paths[-1] / 'report.html'}")
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)
    return result.exit_code


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
