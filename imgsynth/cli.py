"""The ``imgsynth`` command line: one Typer app, one subcommand per stage.

Every subcommand calls the stage's Python function; errors derived from ``ImgsynthError`` are
printed on one line (``--debug`` adds the traceback) and mapped to the exit codes
0 done, 1 failed, 2 usage/config error, 3 finished with some inputs skipped.
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from typing import Annotated

import click
import typer
from rich.markup import escape

import imgsynth
from imgsynth.errors import EXIT_FAILED, EXIT_USAGE, ImgsynthError
from imgsynth.utils.log import console, setup_logging

app = typer.Typer(
    name="imgsynth",
    help="Privacy-safe synthetic medical images: de-identify, preprocess, train, generate, evaluate, review.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Inspect and check YAML configs (built-in names or paths).", no_args_is_help=True)
app.add_typer(config_app, name="config")

_state = {"debug": False}


def _click_errors() -> tuple[type, ...]:
    """ClickException classes of click and of Typer's vendored copy of click, if any."""
    try:
        from typer._click.exceptions import ClickException as Vendored  # Typer >= 0.17

        return (click.ClickException, Vendored)
    except ImportError:
        return (click.ClickException,)


_EXIT = (click.exceptions.Exit, typer.Exit)
_ABORT = (click.exceptions.Abort, typer.Abort)
_CLICK_ERROR = _click_errors()

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: key.sub=value (repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgsynth {imgsynth.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    _state["debug"] = debug
    setup_logging(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)


@config_app.command("show")
def config_show(
    config: Annotated[str, typer.Argument(help="Built-in config name or YAML path.")],
    set_: SetOption = None,
) -> None:
    """Print the fully resolved config (defaults + file + overrides) as YAML."""
    from imgsynth.config import config_to_yaml, load_config

    typer.echo(config_to_yaml(load_config(config, set_ or [])), nl=False)


@config_app.command("validate")
def config_validate(
    config: Annotated[str, typer.Argument(help="Built-in config name or YAML path.")],
    set_: SetOption = None,
) -> None:
    """Check a config: unknown keys, wrong types and bad values are reported on one line."""
    from imgsynth.config import config_hash, config_kind, load_config

    cfg = load_config(config, set_ or [])
    typer.echo(f"{config}: valid {config_kind(cfg)} config (hash {config_hash(cfg)})")


@config_app.command("list")
def config_list() -> None:
    """List the built-in configs with their kind (resolved through ``base:`` chains)."""
    from imgsynth.config import builtin_config_names, config_kind, load_config
    from imgsynth.errors import ConfigError

    for name in builtin_config_names():
        try:
            kind = config_kind(load_config(name))
        except ConfigError as exc:
            kind = f"invalid: {exc}"
        typer.echo(f"{name:28s} {kind}")


def _register_stages() -> None:
    """Attach each stage's subcommands (the modules import their heavy dependencies lazily).

    Each stage package has a light ``cli.py`` with ``register(app)``; one entry per stage here.
    """
    for module in (
        "imgsynth.deid.cli",
        "imgsynth.data.cli",
        "imgsynth.training.cli",
        "imgsynth.generate.cli",
        "imgsynth.evaluation.cli",
        "imgsynth.review.cli",
        "imgsynth.demo.cli",
    ):
        importlib.import_module(module).register(app)


_register_stages()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="imgsynth", standalone_mode=False)
    except _EXIT as exc:
        return int(exc.exit_code)
    except _CLICK_ERROR as exc:
        exc.show()
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except (*_ABORT, KeyboardInterrupt):
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except ImgsynthError as exc:
        if _state["debug"]:
            traceback.print_exc()
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if _state["debug"]:
            traceback.print_exc()
        else:
            console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))} (rerun with --debug for the traceback)",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
        return EXIT_FAILED
    if result == 130:  # Ctrl-C: Typer turns it into Exit(130), which click returns outside standalone mode
        console.print("[yellow]interrupted[/yellow]")
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
