"""``imgsynth generate`` (heavy imports inside the command)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_command(
        run_dir: Annotated[str, typer.Argument(help="Run folder written by 'imgsynth train'.")],
        out_dir: Annotated[str, typer.Argument(help="Sample set to write (a dataset folder, split 'synthetic').")],
        n: Annotated[int, typer.Option("--n", min=1, help="Number of images.")] = 16,
        condition: Annotated[list[str] | None, typer.Option("--condition", help="Fix a condition: name=value "
                             "(repeatable; masks: name=PATH.npy). Unset categories cycle, numbers are drawn.")] = None,
        sampler: Annotated[str | None, typer.Option("--sampler", help="dpm++ | ddim | ddpm (DDPM models), euler (flow).")] = None,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="Sampling steps (default: the model's).")] = None,
        guidance: Annotated[float | None, typer.Option("--guidance", min=0.0, help="Classifier-free guidance scale.")] = None,
        truncation: Annotated[float | None, typer.Option("--truncation", min=0.0, max=2.0, help="StyleGAN2 truncation "
                              "psi: 1 = none, lower trades diversity for typicality (default: the model's).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed; image i depends only on (seed, i, conditions).")] = 0,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
        formats: Annotated[str, typer.Option("--formats", help="Extra outputs beside .npy: png,nifti (comma list, or 'none').")] = "png,nifti",
        device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: GPU when present).")] = None,
    ) -> int:
        """Generate a sample set from a trained run (EMA weights)."""
        from imgsynth.generate.api import generate

        fmts = [] if formats.strip() == "none" else [f.strip() for f in formats.split(",") if f.strip()]
        ds = generate(run_dir, out_dir, n=n, conditions=list(condition or []), sampler=sampler, steps=steps,
                      guidance=guidance, options={} if truncation is None else {"truncation": truncation}, seed=seed, batch_size=batch_size, formats=fmts, device=device)
        typer.echo(f"wrote {len(ds.rows)} samples to {ds.root}")
        return 0
