from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import imgsynth
from imgsynth.cli import main

from .test_config import _TestConfig  # noqa: F401  (registers the '_test' kind in this process)


def test_help_and_version_in_a_fresh_process() -> None:
    out = subprocess.run([sys.executable, "-m", "imgsynth", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "config" in out.stdout
    out = subprocess.run([sys.executable, "-m", "imgsynth", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"imgsynth {imgsynth.__version__}"


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    import typer.main

    from imgsynth.cli import app

    group = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix):  # noqa: ANN001
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])

    walk(group, [])
    assert ["config", "show"] in paths and ["config", "validate"] in paths
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        assert "Usage" in capsys.readouterr().out


def test_config_show_applies_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: _test\nseed: 1\n")
    assert main(["config", "show", str(cfg), "--set", "seed=42", "--set", "optim.learning_rate=0.5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 42" in out and "learning_rate: 0.5" in out and out.startswith("kind: _test")


def test_config_validate_misspelt_key_exits_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: _test\nsed: 1\n")
    assert main(["config", "validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown key 'sed'" in err and "did you mean 'seed'" in err and "c.yaml" in err
    cfg.write_text("kind: _test\n")
    assert main(["config", "validate", str(cfg)]) == 0
    assert "valid _test config" in capsys.readouterr().out


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["config", "show"]) == 2


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, capsys) -> None:  # noqa: ANN001
    import imgsynth.config

    def interrupted(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(imgsynth.config, "load_config", interrupted)
    assert main(["config", "validate", "deid_basic"]) == 130
    assert "interrupted" in capsys.readouterr().err
