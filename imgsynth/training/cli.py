"""``imgsynth train`` (heavy imports inside the command)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from typing import Annotated

import typer

from imgsynth.errors import UsageError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(args: list[str], processes: int, *, cpu: bool) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` command line (and environment) running ``imgsynth.training.entry``."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    if processes > 1:
        cmd.append("--multi_gpu")
    cmd += ["-m", "imgsynth.training.entry", *args]
    env = dict(os.environ)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    return cmd, env


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        dataset_dir: Annotated[str, typer.Argument(help="Dataset folder (manifest.csv + dataset.json).")],
        run_dir: Annotated[str, typer.Argument(help="Run folder to write; an existing one is resumed or extended.")],
        config: Annotated[str, typer.Option("--config", "-c", help="Built-in config name or YAML path.")] = "ldm_2d",
        set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Override key.sub=value (repeatable).")] = None,
        num_processes: Annotated[int, typer.Option("--num-processes", "-n", min=1,
                                                   help="Processes (GPUs) to train on; >1 launches accelerate.")] = 1,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and plan; train nothing.")] = False,
    ) -> int:
        """Train latent diffusion (autoencoder, then diffusion UNet) or StyleGAN2, per --config, into a run folder."""
        from imgsynth.training.entry import load

        overrides = list(set_ or [])
        cfg = load(config, overrides)
        if dry_run:
            from imgsynth.training.run import dry_run as plan_text

            typer.echo(plan_text(dataset_dir, cfg, num_processes))
            return 0
        args = [dataset_dir, run_dir, "--config", config, *[a for o in overrides for a in ("--set", o)]]
        if num_processes > 1:
            import torch

            cpu = cfg.loop.cpu or not torch.cuda.is_available()
            if not cpu and torch.cuda.device_count() < num_processes:
                raise UsageError(f"--num-processes {num_processes} but only {torch.cuda.device_count()} GPU(s) are visible")
            if shutil.which("accelerate") is None and not _has_accelerate():
                raise UsageError("accelerate is not installed")
            cmd, env = launch_command(args, num_processes, cpu=cpu)
            return subprocess.run(cmd, env=env, check=False).returncode
        from imgsynth.training.run import train

        train(dataset_dir, run_dir, cfg, argv=["imgsynth", "train", *args])
        return 0


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None
