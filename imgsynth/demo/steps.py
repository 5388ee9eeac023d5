"""The demo's steps: one per output folder, each run through its stage's Python API.

A step knows its output folder, how to run the stage on the demo's folders (the same call the
stage's command makes), how to check the folder against its contract (:mod:`imgsynth.contracts`),
the key figures it reads back from the folder, and the ordinary commands that re-run it alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsynth.contracts import Dataset, RunFolder, read_deid_report, read_key, read_report
from imgsynth.demo.plan import MNI152, Layout, Mode
from imgsynth.errors import ContractError, ImgsynthError
from imgsynth.utils.io import atomic_write_text


class DeidVerifyError(ImgsynthError):
    """``deid verify`` found an identifying value of an input in the de-identified folder."""


@dataclass
class Context:
    """What every step needs: the folders, the mode, the DICOM inputs, how to print paths."""

    layout: Layout
    mode: Mode
    sources: list[Path]
    shown_root: str  # OUT_DIR as the user wrote it, for the printed commands

    def show(self, path: Path) -> str:
        """``path`` (inside OUT_DIR) as the user would type it."""
        try:
            rel = path.relative_to(self.layout.root)
        except ValueError:
            return str(path)
        return str(Path(self.shown_root) / rel)


@dataclass
class Figures:
    """Key figures of a finished step: one or more lines for the table, numbers for demo.json."""

    lines: list[str]
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Step:
    key: str = ""
    stage: int = 0
    title: str = ""
    needs: tuple[str, ...] = ()

    def folder(self, ctx: Context) -> Path:
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def check(self, ctx: Context) -> None:
        """Raise :class:`ContractError` unless the output folder is complete."""
        raise NotImplementedError

    def figures(self, ctx: Context) -> Figures:
        raise NotImplementedError

    def commands(self, ctx: Context) -> list[str]:
        raise NotImplementedError


def _cmd(*argv: str) -> str:
    return shlex.join(["imgsynth", *argv])


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


# ---------------------------------------------------------------------------------------------
# 1. De-identify
# ---------------------------------------------------------------------------------------------
class DeidStep(Step):
    key, stage, title = "deid", 1, "de-identify + verify"

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.deid

    def run(self, ctx: Context) -> None:
        from imgsynth.deid.tree import anonymize_tree
        from imgsynth.deid.verify import verify_tree

        lay = ctx.layout
        lay.private.mkdir(parents=True, exist_ok=True)
        os.chmod(lay.private, 0o700)
        key = {"key_file": lay.key} if lay.key.is_file() else {"new_key": lay.key}
        anonymize_tree(ctx.sources, lay.deid, config="deid_basic", **key)
        result = verify_tree(lay.deid, ctx.sources, report=lay.verify)
        if not result.ok:
            raise DeidVerifyError(
                f"deid verify found {len(result.hits)} identifying value(s) in {lay.deid}: see {lay.verify}"
            )

    def check(self, ctx: Context) -> None:
        report = read_deid_report(ctx.layout.deid)
        if report.status != "complete":
            raise ContractError("de-identification did not finish", path=ctx.layout.deid / "report.json")
        verify = _read_json(ctx.layout.verify)
        if verify.get("hits"):
            raise ContractError(f"{len(verify['hits'])} identifying value(s) found", path=ctx.layout.verify)

    def figures(self, ctx: Context) -> Figures:
        report = read_deid_report(ctx.layout.deid)
        verify = _read_json(ctx.layout.verify)
        c = report.counts
        values = {
            "inputs": c.get("inputs", 0), "deidentified": c.get("done", 0), "quarantined": c.get("quarantined", 0),
            "quarantine_reasons": len(report.quarantine_reasons), "verify_outputs": verify.get("outputs_scanned", 0),
            "verify_values": sum(verify.get("values", {}).values()), "verify_hits": len(verify.get("hits", [])),
        }
        return Figures([
            f"{values['deidentified']} of {values['inputs']} files de-identified, {values['quarantined']} quarantined "
            f"({values['quarantine_reasons']} reasons)",
            f"verify: {values['verify_hits']} hits ({values['verify_values']} identifying values searched in "
            f"{values['verify_outputs']} outputs)",
        ], values)

    def commands(self, ctx: Context) -> list[str]:
        lay, src = ctx.layout, [str(s) for s in ctx.sources]
        against = [a for s in src for a in ("--against", s)]
        return [
            _cmd("deid", "run", *src, ctx.show(lay.deid), "--key-file", ctx.show(lay.key)),
            _cmd("deid", "verify", ctx.show(lay.deid), *against, "--report", ctx.show(lay.verify)),
        ]


# ---------------------------------------------------------------------------------------------
# 2. Preprocess
# ---------------------------------------------------------------------------------------------
class PreprocessStep(Step):
    key, stage, title = "preprocess", 2, "preprocess MNI152"

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.dataset

    def run(self, ctx: Context) -> None:
        from imgsynth.data.pipeline import preprocess

        preprocess([MNI152], ctx.layout.dataset, ctx.mode.preprocess_config)

    def check(self, ctx: Context) -> None:
        ds = Dataset.read(ctx.layout.dataset)
        for name in ("plane", "position", "tissue"):
            ds.info.condition(name)
        for split in ("train", "test"):
            if not ds.split(split):
                raise ContractError(f"no '{split}' items", path=ctx.layout.dataset / "manifest.csv")

    def figures(self, ctx: Context) -> Figures:
        ds = Dataset.read(ctx.layout.dataset, check_files=False)
        shape = "x".join(str(s) for s in ds.info.shape)
        splits = {k: v for k, v in ds.info.splits.items()}
        planes = {p: sum(r["plane"] == p for r in ds.rows) for p in ds.info.condition("plane").categories or []}
        return Figures([
            f"{len(ds.rows)} slices {shape} (" + ", ".join(f"{k} {v}" for k, v in splits.items()) + ")",
            "planes " + ", ".join(f"{k} {v}" for k, v in planes.items()) + "; + position, GM/WM maps",
        ], {"items": len(ds.rows), "shape": ds.info.shape, "splits": splits, "planes": planes})

    def commands(self, ctx: Context) -> list[str]:
        return [_cmd("preprocess", MNI152, ctx.show(ctx.layout.dataset), "--config", ctx.mode.preprocess_config)]


# ---------------------------------------------------------------------------------------------
# 3. Train
# ---------------------------------------------------------------------------------------------
class TrainStep(Step):
    stage, needs = 3, ("preprocess",)

    def __init__(self, model: str) -> None:
        self.model = model
        self.key = f"train-{model}"
        self.title = {"ldm": "train LDM", "stylegan2": "train StyleGAN2"}[model]

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.run(self.model)

    def config_name(self, ctx: Context) -> str:
        return ctx.mode.train_configs[self.model]

    def run(self, ctx: Context) -> None:
        from imgsynth.config import load_config
        from imgsynth.training.run import train

        cfg = load_config(self.config_name(ctx), expect_kind="train")
        argv = shlex.split(self.commands(ctx)[0])
        train(ctx.layout.dataset, self.folder(ctx), cfg, argv=argv)  # type: ignore[arg-type]

    def check(self, ctx: Context) -> None:
        run = RunFolder.read(self.folder(ctx))
        pending = [name for name, s in run.model_info().stages.items() if s.status != "complete"]
        if pending:
            raise ContractError(f"stage(s) {', '.join(pending)} not complete", path=run.model_path)

    def figures(self, ctx: Context) -> Figures:
        run = RunFolder.read(self.folder(ctx))
        info, metrics = run.model_info(), run.metrics()
        lines, values = [], {}
        for name, status in info.stages.items():
            recs = [r for r in metrics if r.get("stage") == name]
            val = next((r for r in reversed(recs) if "val/loss" in r), None)
            last = next((r for r in reversed(recs) if "loss" in r), {})
            entry = {"kimg": round(status.kimg, 3), "loss": last.get("loss"),
                     "val_loss": None if val is None else val["val/loss"]}
            text = f"{name} {status.kimg:.3g} kimg, "
            if val is not None:
                text += f"val loss {_fmt(val['val/loss'])}"
            else:
                text += f"loss {_fmt(last.get('loss'))}"
            if "augment/p" in last:
                entry["augment_p"] = last["augment/p"]
                text += f", ADA p {last['augment/p']:.2f}"
            lines.append(text)
            values[name] = entry
        return Figures(lines, values)

    def commands(self, ctx: Context) -> list[str]:
        return [_cmd("train", ctx.show(ctx.layout.dataset), ctx.show(self.folder(ctx)), "--config", self.config_name(ctx))]


# ---------------------------------------------------------------------------------------------
# 4. Generate
# ---------------------------------------------------------------------------------------------
FORMATS = ("png", "nifti", "dicom")
CONDITION_SPLIT = "val"


def condition_rows(dataset: Dataset) -> list[dict[str, str]]:
    """The real slices whose conditions the samples take: the validation slices. Never a training
    slice (memorization is then measured fairly) and never a test slice (the evaluation and the
    reader study compare with the test split, which must not leak into the samples)."""
    return sorted(dataset.split(CONDITION_SPLIT), key=lambda r: r["id"])


def conditions_csv_text(dataset: Dataset, csv_path: Path, condition_names: list[str], count: int) -> str:
    """A ``--conditions-csv`` file: one row per validation slice (its plane, position and, for models
    that take it, its GM/WM maps as a path relative to the CSV), ``count`` samples each."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["count", *condition_names])
    for row in condition_rows(dataset):
        cells = []
        for name in condition_names:
            value = row[name]
            if dataset.info.condition(name).type == "mask":
                value = os.path.relpath(dataset.root / value, csv_path.parent)
            cells.append(value)
        writer.writerow([count, *cells])
    return buf.getvalue()


class GenerateStep(Step):
    stage = 4

    def __init__(self, model: str) -> None:
        self.model = model
        self.key = f"generate-{model}"
        self.title = {"ldm": "generate LDM", "stylegan2": "generate StyleGAN2"}[model]
        self.needs = ("preprocess", f"train-{model}")

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.samples(self.model)

    def _expected(self, ctx: Context) -> int:
        return len(condition_rows(Dataset.read(ctx.layout.dataset, check_files=False))) * ctx.mode.samples_per_condition

    def run(self, ctx: Context) -> None:
        from imgsynth.generate import generate

        run = RunFolder.read(ctx.layout.run(self.model))
        names = [c.name for c in run.dataset_info().conditions]
        model_conditions = _model_conditions(run, names)
        csv_path = ctx.layout.conditions_csv(self.model)
        dataset = Dataset.read(ctx.layout.dataset)
        atomic_write_text(csv_path, conditions_csv_text(dataset, csv_path, model_conditions,
                                                        ctx.mode.samples_per_condition))
        generate(run.root, self.folder(ctx), conditions_csv=csv_path, formats=FORMATS, seed=0)

    def check(self, ctx: Context) -> None:
        ds = Dataset.read(self.folder(ctx))
        where = self.folder(ctx) / "manifest.csv"
        if ds.info.generator is None:
            raise ContractError("not a sample set (no 'generator' in dataset.json)", path=self.folder(ctx))
        expected = self._expected(ctx)
        if len(ds.rows) != expected:
            raise ContractError(f"{len(ds.rows)} samples, expected {expected}", path=where)
        for fmt in FORMATS:
            missing = [r["id"] for r in ds.rows if not r.get(fmt) or not (ds.root / r[fmt]).is_file()]
            if missing:
                raise ContractError(f"{len(missing)} sample(s) lack their {fmt} file (e.g. {missing[0]})", path=where)

    def figures(self, ctx: Context) -> Figures:
        ds = Dataset.read(self.folder(ctx), check_files=False)
        gen = ds.info.generator or {}
        dicom = sum(1 for _ in (ds.root / "dicom").rglob("*.dcm")) if (ds.root / "dicom").is_dir() else 0
        sampler = gen.get("sampler") or "-"
        steps = gen.get("steps")
        values = {"samples": len(ds.rows), "dicom_files": dicom, "sampler": sampler, "steps": steps,
                  "guidance": gen.get("guidance")}
        how = f"{sampler}, {steps} steps" if steps else str(sampler)
        return Figures([
            f"{len(ds.rows)} samples ({how}) as .npy, PNG, NIfTI, DICOM ({dicom} files)",
            "conditioned on the val slices' " + "/".join(_model_conditions_from_info(ds)),
        ], values)

    def commands(self, ctx: Context) -> list[str]:
        lay = ctx.layout
        return [_cmd("generate", ctx.show(lay.run(self.model)), ctx.show(self.folder(ctx)), "--conditions-csv",
                     ctx.show(lay.conditions_csv(self.model)), "--format", ",".join(FORMATS), "--seed", "0")]


def _model_conditions(run: RunFolder, names: list[str]) -> list[str]:
    """The conditions a trained model takes (``data.conditions`` of its config, default all)."""
    import yaml

    config = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    chosen = (config.get("data") or {}).get("conditions")
    return [n for n in names if chosen is None or n in chosen]


def _model_conditions_from_info(ds: Dataset) -> list[str]:
    return [c.name if c.type != "mask" else f"{c.name} maps" for c in ds.info.conditions]


# ---------------------------------------------------------------------------------------------
# 5. Evaluate
# ---------------------------------------------------------------------------------------------
class EvaluateStep(Step):
    stage = 5

    def __init__(self, model: str) -> None:
        self.model = model
        self.key = f"evaluate-{model}"
        self.title = {"ldm": "evaluate LDM", "stylegan2": "evaluate StyleGAN2"}[model]
        self.needs = ("preprocess", f"train-{model}", f"generate-{model}")

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.evaluation(self.model)

    def _run_arg(self, ctx: Context) -> Path | None:
        # Only a latent diffusion run has an autoencoder whose reconstructions can be scored.
        return ctx.layout.run(self.model) if self.model == "ldm" else None

    def _overrides(self, ctx: Context) -> list[str]:
        return [f"features.domain.cache_dir={ctx.layout.cache}"]

    def run(self, ctx: Context) -> None:
        from imgsynth.evaluation import evaluate

        evaluate(ctx.layout.dataset, ctx.layout.samples(self.model), self.folder(ctx), ctx.mode.evaluate_config,
                 run=self._run_arg(ctx), overrides=self._overrides(ctx))

    def check(self, ctx: Context) -> None:
        read_report(self.folder(ctx))
        if not (self.folder(ctx) / "report.html").is_file():
            raise ContractError("missing file", path=self.folder(ctx) / "report.html")

    def figures(self, ctx: Context) -> Figures:
        m = read_report(self.folder(ctx)).metrics

        def val(key: str) -> float | None:
            return m[key].value if key in m else None

        def floor(key: str) -> float | None:
            return m[key].floor if key in m else None

        values = {k: val(k) for k in ("FD_domain", "KD_domain", "diversity.ms_ssim", "memorization.fraction",
                                      "downstream.tstr", "downstream.trtr", "downstream.ratio",
                                      "reconstruction.ssim", "reconstruction.ms_ssim")}
        values["floors"] = {k: floor(k) for k in ("FD_domain", "KD_domain", "diversity.ms_ssim", "memorization.fraction")}
        lines = [
            f"FD_domain {_fmt(val('FD_domain'))} (real-vs-real {_fmt(floor('FD_domain'))}), "
            f"KD_domain {_fmt(val('KD_domain'))} ({_fmt(floor('KD_domain'))})",
            f"MS-SSIM diversity {_fmt(val('diversity.ms_ssim'))} (real {_fmt(floor('diversity.ms_ssim'))})"
            + (f", recon SSIM {_fmt(val('reconstruction.ssim'))} / MS-SSIM {_fmt(val('reconstruction.ms_ssim'))}"
               if "reconstruction.ssim" in m else ""),
            f"memorized {_pct(val('memorization.fraction'))} (held-out real {_pct(floor('memorization.fraction'))}); "
            f"plane AUROC TSTR {_fmt(val('downstream.tstr'), 2)} / TRTR {_fmt(val('downstream.trtr'), 2)}",
        ]
        return Figures(lines, values)

    def commands(self, ctx: Context) -> list[str]:
        lay = ctx.layout
        argv = ["evaluate", "--real", ctx.show(lay.dataset), "--synthetic", ctx.show(lay.samples(self.model)),
                ctx.show(self.folder(ctx))]
        if self._run_arg(ctx) is not None:
            argv += ["--run", ctx.show(lay.run(self.model))]
        argv += ["--config", ctx.mode.evaluate_config, "--set", f"features.domain.cache_dir={ctx.show(lay.cache)}"]
        return [_cmd(*argv)]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


# ---------------------------------------------------------------------------------------------
# 6. Review
# ---------------------------------------------------------------------------------------------
class ReviewStep(Step):
    key, stage, title = "review", 6, "review package"
    needs = ("preprocess", "train-ldm", "generate-ldm")

    def folder(self, ctx: Context) -> Path:
        return ctx.layout.review

    def run(self, ctx: Context) -> None:
        from imgsynth.config import load_config
        from imgsynth.review import export_review

        cfg = load_config(ctx.mode.review_config, expect_kind="review")
        export_review(ctx.layout.dataset, ctx.layout.samples("ldm"), self.folder(ctx), cfg.export,  # type: ignore[attr-defined]
                      argv=shlex.split(self.commands(ctx)[0]))

    def check(self, ctx: Context) -> None:
        root = self.folder(ctx)
        rows = read_key(root / "key.csv")
        readers = sorted({r.reader for r in rows})
        for reader in readers:
            if not (root / "readers" / reader / "index.html").is_file():
                raise ContractError(f"reader package {reader} has no index.html", path=root / "readers" / reader)
            if (root / "readers" / reader / "key.csv").exists():
                raise ContractError("key.csv inside a reader's package", path=root / "readers" / reader)

    def figures(self, ctx: Context) -> Figures:
        root = self.folder(ctx)
        rows = read_key(root / "key.csv")
        readers = sorted({r.reader for r in rows})
        per = len(rows) // max(1, len(readers))
        real = sum(r.truth == "real" for r in rows) // max(1, len(readers))
        values = {"readers": len(readers), "cases_per_reader": per, "real_per_reader": real,
                  "synthetic_per_reader": per - real, "key_beside_readers": (root / "readers").is_dir()}
        return Figures([
            f"{len(readers)} readers x {per} cases ({real} real, {per - real} synthetic), DICOM copies",
            "key.csv beside readers/ (not for the readers)",
        ], values)

    def commands(self, ctx: Context) -> list[str]:
        lay = ctx.layout
        return [_cmd("review", "export", "--real", ctx.show(lay.dataset), "--synthetic", ctx.show(lay.samples("ldm")),
                     ctx.show(self.folder(ctx)), "--config", ctx.mode.review_config)]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ContractError("missing file", path=path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise ContractError("not a JSON object", path=path)
    return data


def build_steps(mode: Mode) -> list[Step]:
    """The steps of a mode, in order (stage by stage; within a stage, LDM first)."""
    steps: list[Step] = [DeidStep(), PreprocessStep()]
    steps += [TrainStep(m) for m in mode.models]
    steps += [GenerateStep(m) for m in mode.models]
    steps += [EvaluateStep(m) for m in mode.models]
    steps.append(ReviewStep())
    return steps
