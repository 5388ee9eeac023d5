"""A short model card (``MODEL_CARD.md``) for a trained run, written by ``imgsynth generate``.

Sections: the model (family, stages, weights sampled from), training data (source, counts, shape,
spacing, intensity mapping, conditions), training budget (images seen per stage against its
budget, batch, steps, last losses), evaluation summary (when an evaluation report is found:
``--evaluation DIR``, or ``RUN/evaluation/report.json``), intended use and known limits.

It is written into the sample set and, where the run folder is writable, beside the run's
``model.json`` (the only file ``generate`` ever writes into a run folder; the weights and every
record of training stay untouched). Its content depends only on the run (and the report), so
writing it again changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgsynth.contracts import RunFolder, read_report
from imgsynth.errors import ContractError
from imgsynth.utils.io import atomic_write_text
from imgsynth.utils.log import get_logger

log = get_logger("generate")
CARD = "MODEL_CARD.md"

INTENDED_USE = (
    "Research and development: augmenting or replacing real images for training and testing image-analysis "
    "models, sharing data that carries no patient's pixels, teaching, and reader studies. Every output is marked "
    "SYNTHETIC (PNG text chunks, NIfTI header, DICOM SeriesDescription / ImageComments / patient name)."
)
LIMITS = (
    "Not for diagnosis or treatment decisions: images are plausible, not true, and may contain anatomy or "
    "findings that no patient has.",
    "A generative model can reproduce training images (memorization); check the evaluation's memorization "
    "figure before sharing samples outside the institution that holds the training data.",
    "The model reflects its training data: populations, scanners, protocols and conditions absent from it are "
    "not represented, and rare conditions are less reliable than common ones.",
    "Intensities are clipped to the training intensity window; values outside it cannot be generated.",
    "Conditions outside the trained categories and ranges are refused; combinations rare in training are weakly "
    "controlled.",
)


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def find_evaluation(run: RunFolder, evaluation: str | Path | None = None) -> Path | None:
    """The evaluation folder to summarise: ``evaluation`` if given, else ``RUN/evaluation`` if present."""
    for candidate in ([Path(evaluation)] if evaluation else []) + [run.root / "evaluation"]:
        if (candidate / "report.json").is_file():
            return candidate
    if evaluation:
        raise ContractError("no report.json in the evaluation folder", path=evaluation)
    return None


def build_model_card(run: RunFolder, *, evaluation: str | Path | None = None,
                     checkpoint: dict[str, Any] | None = None) -> str:
    """The card's Markdown text."""
    model = run.model_info()
    info = run.dataset_info()
    config = _load_yaml(run.config_path)
    lines = [f"# Model card: {run.root.name}", "",
             "Synthetic medical image generator trained with imgsynth. Generated images are synthetic: "
             "no image is a real patient's.", "", "## Model", "",
             f"- Family: `{model.family}`, {model.spatial_dims}D, config hash `{model.config_hash}`"]
    for name, st in model.stages.items():
        lines.append(f"- Stage `{name}`: {st.status}")
    if model.latent_scale_factor is not None:
        lines.append(f"- Latent scale factor: {model.latent_scale_factor:.6g}")
    if checkpoint:
        lines.append(f"- Weights sampled: `{checkpoint.get('path')}` (sha256 `{checkpoint.get('sha256')}`)")

    lines += ["", "## Training data", ""]
    src = info.source or {}
    kind = src.get("kind", "unknown")
    lines.append(f"- Source: {kind}" + (f", modalities {', '.join(src['modalities'])}" if src.get("modalities") else ""))
    if "series" in src:
        lines.append(f"- Series used: {src['series']} (skipped: {src.get('skipped', 0)})")
    if info.splits:
        lines.append("- Items per split: " + ", ".join(f"{k} {v}" for k, v in info.splits.items()))
    lines.append(f"- Image shape `{info.shape}` (channels first), spacing {info.spacing or 'not recorded'} mm, "
                 f"orientation {info.orientation or 'not recorded'}")
    it = info.intensity
    if it.kind == "none":
        lines.append(f"- Intensities stored in physical units ({it.unit or 'no unit'})")
    else:
        lines.append(f"- Intensity mapping `{it.kind}`: [{it.low:g}, {it.high:g}] {it.unit} onto model scale [-1, 1]")
    for c in info.conditions:
        detail = (", ".join(c.categories or []) if c.type == "categorical" else
                  f"range {list(c.range or ())}" if c.type == "continuous" else f"{c.channels} channel(s)")
        lines.append(f"- Condition `{c.name}` ({c.type}): {detail}")

    lines += ["", "## Training budget", ""]
    stages_cfg = config.get("stages", {}) if isinstance(config, dict) else {}
    for name, st in model.stages.items():
        cfg = stages_cfg.get(name, {}) if isinstance(stages_cfg, dict) else {}
        budget = st.budget_kimg if st.budget_kimg is not None else cfg.get("kimg")
        losses = [r for r in run.metrics(name) if "loss" in r]
        last = f", last loss {float(losses[-1]['loss']):.4g}" if losses else ""
        lines.append(f"- `{name}`: {st.kimg:g} of {budget if budget is not None else '?'} kimg, {st.step} steps, "
                     f"batch {cfg.get('batch', '?')}, lr {cfg.get('lr', '?')}{last}")
    if config.get("seed") is not None:
        lines.append(f"- Seed {config['seed']}")

    lines += ["", "## Evaluation", ""]
    found = find_evaluation(run, evaluation)
    if found is None:
        lines.append("No evaluation report found (run `imgsynth evaluate` and pass `--evaluation DIR` to include it).")
    else:
        report = read_report(found)
        lines.append(f"From `{found.name}/report.json`:")
        for name, metric in report.metrics.items():
            value = "n/a" if metric.value is None else f"{metric.value:.4g}"
            floor = f" (real-vs-real floor {metric.floor:.4g})" if metric.floor is not None else ""
            lines.append(f"- {name}: {value}{floor}")
        lines += [f"- Warning: {w}" for w in report.warnings]

    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Known limits", ""]
    lines += [f"- {text}" for text in LIMITS]
    prov = {}
    if run.provenance_path.is_file():
        try:
            prov = json.loads(run.provenance_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            prov = {}
    versions = prov.get("versions", {})
    if versions:
        lines += ["", "## Software", "", f"imgsynth {versions.get('imgsynth', '?')}, torch {versions.get('torch', '?')}, "
                  f"MONAI {versions.get('monai', '?')}; commit {prov.get('git_commit') or 'unknown'}"]
    return "\n".join(lines) + "\n"


def write_model_card(run: RunFolder, out_dir: str | Path | None = None, *, evaluation: str | Path | None = None,
                     checkpoint: dict[str, Any] | None = None) -> str:
    """Write ``MODEL_CARD.md`` into the run folder (if writable) and into ``out_dir`` (if given; that
    copy also names the ``checkpoint`` sampled); returns the run folder's text."""
    text = build_model_card(run, evaluation=evaluation)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / CARD, build_model_card(run, evaluation=evaluation, checkpoint=checkpoint))
    target = run.root / CARD
    try:
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            atomic_write_text(target, text)
    except OSError as exc:  # read-only run folder (e.g. a mounted model): the sample set has the card
        log.debug("model card not written into %s (%s)", run.root, exc)
    return text
