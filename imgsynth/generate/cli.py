"""``imgsynth generate`` (heavy imports inside the command)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_command(
        run_dir: Annotated[str, typer.Argument(
            help="Run folder written by 'imgsynth train' (its latest EMA weights), or one checkpoint: "
                 "RUN/checkpoints/<stage> or RUN/checkpoints/<stage>/step-N.", metavar="CHECKPOINT")],
        out_dir: Annotated[str, typer.Argument(help="Sample set to write (a dataset folder, split 'synthetic'); "
                                               "an interrupted one is resumed.", metavar="OUT_DIR")],
        n: Annotated[int | None, typer.Option("--n", min=1, help="Number of images (default 16 without "
                                              "--conditions-csv).")] = None,
        condition: Annotated[list[str] | None, typer.Option("--condition", help="Fix a condition: name=value "
                             "(repeatable; masks: name=PATH.npy). Unset categories cycle, numbers are drawn.")] = None,
        conditions_csv: Annotated[str | None, typer.Option("--conditions-csv", help="CSV of requests: count, seed, "
                                  "condition columns (mask paths relative to the CSV).")] = None,
        masks_from: Annotated[str | None, typer.Option("--masks-from", help="Dataset folder whose mask conditions "
                              "(row i mod rows) condition sample i.", metavar="DATASET_DIR")] = None,
        sampler: Annotated[str | None, typer.Option("--sampler", help="dpmpp (DPM-Solver++) | ddim | ddpm for DDPM "
                           "models, rflow (Euler) for flow; default: the one matching the training objective.")] = None,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="Sampling steps (default: the model's).")] = None,
        guidance: Annotated[float | None, typer.Option("--guidance", min=0.0, help="Classifier-free guidance scale.")] = None,
        truncation: Annotated[float | None, typer.Option("--truncation", min=0.0, max=2.0, help="StyleGAN2 truncation "
                              "psi: 1 = none, lower trades diversity for typicality (default: the model's).")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed; image i depends only on (seed, i, conditions).")] = 0,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 16,
        formats: Annotated[str, typer.Option("--format", "--formats", help="Outputs beside the .npy items: any of "
                           "png,nifti,dicom (comma list, or 'none').")] = "png,nifti",
        num_processes: Annotated[int, typer.Option("--num-processes", min=1, help="Processes (GPUs) splitting the "
                                 "work; >1 launches accelerate.")] = 1,
        device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: GPU when present).")] = None,
        precision: Annotated[str | None, typer.Option("--precision", help="fp32 | bf16 (default: bf16 on GPU, fp32 on "
                             "CPU).")] = None,
        dicom_modality: Annotated[str, typer.Option("--dicom-modality", help="auto (CT for HU, MR for MR data, else "
                                  "Secondary Capture) | CT | MR | SC.")] = "auto",
        uid_root: Annotated[str | None, typer.Option("--uid-root", help="Your organisation's DICOM UID root "
                            "(default 2.25.<uuid>).")] = None,
        evaluation: Annotated[str | None, typer.Option("--evaluation", help="Evaluation folder summarised in the "
                              "model card.", metavar="EVAL_DIR")] = None,
    ) -> int:
        """Generate a sample set from a trained run or checkpoint (EMA weights): .npy + PNG / NIfTI / DICOM."""
        from imgsynth.generate.api import generate

        fmts = [] if formats.strip() == "none" else [f.strip() for f in formats.split(",") if f.strip()]
        if n is None and conditions_csv is None:
            n = 16
        ds = generate(run_dir, out_dir, n=n, conditions=list(condition or []), conditions_csv=conditions_csv,
                      masks_from=masks_from, sampler=sampler, steps=steps, guidance=guidance,
                      options={} if truncation is None else {"truncation": truncation}, seed=seed,
                      batch_size=batch_size, formats=fmts, num_processes=num_processes, device=device,
                      precision=precision, dicom_modality=dicom_modality, uid_root=uid_root, evaluation=evaluation)
        typer.echo(f"wrote {len(ds.rows)} samples to {ds.root}")
        return 0
