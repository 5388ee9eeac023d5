"""The generation mini-batch entry of batch endpoints: request CSV files in, written samples out.

A batch endpoint's scoring script (``azureml/score.py``) builds one :class:`EndpointSession` in
``init()`` and calls :meth:`EndpointSession.run` with each mini-batch, a list of CSV files. Each
CSV row asks for samples: ``count`` (default 1), ``seed`` (optional: else derived from the file
name and line, so that a retried mini-batch makes the same images), then condition columns
(mask paths relative to the CSV), exactly as ``imgsynth generate --conditions-csv``. The ``j``-th
sample of a row has the seed ``item_seed(seed, j)`` and the id ``synthetic-<hash of file, line, j>``.

Every sample is written by :func:`imgsynth.generate.api.generate_batch` (the code path of
``imgsynth generate``) into the output folder, and recorded in a journal of this worker
(``.generate/done-<host>-<pid>.jsonl``); :func:`collect` turns the folder into a sample set
(``manifest.csv`` + ``dataset.json``) once the job is done. ``run`` returns one row per sample:
its manifest row plus ``request_file`` and ``request_line``, or its ``error``.

Settings come from the environment (the deployment's ``environment_variables``):
``AZUREML_MODEL_DIR`` (the registered run folder, or a folder holding it), ``AZUREML_BI_OUTPUT_PATH``
(the job's output folder), ``IMGSYNTH_GENERATE_FORMATS`` (png,nifti), ``IMGSYNTH_GENERATE_BATCH_SIZE``
(16), ``IMGSYNTH_GENERATE_SAMPLER``, ``_STEPS``, ``_GUIDANCE``, ``_TRUNCATION``, ``_PRECISION``,
``_DICOM_MODALITY``, ``_UID_ROOT``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imgsynth.contracts import Dataset, write_dataset
from imgsynth.errors import ContractError, UsageError
from imgsynth.utils.io import append_jsonl, atomic_write_json, read_jsonl
from imgsynth.utils.log import get_logger

log = get_logger("generate")
ENV_PREFIX = "IMGSYNTH_GENERATE_"


def find_run(model_dir: str | Path) -> Path:
    """The run folder inside a registered model's folder (itself, or the one folder below holding ``model.json``)."""
    root = Path(model_dir)
    if (root / "model.json").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/model.json")) or sorted(p.parent for p in root.glob("*/*/model.json"))
    if len(found) != 1:
        raise ContractError(f"expected one run folder (with model.json) in the model folder, found {len(found)}", path=root)
    return found[0]


def _env(name: str, cast: Any = str, default: Any = None) -> Any:
    value = os.environ.get(ENV_PREFIX + name, "").strip()
    if not value:
        return default
    try:
        return cast(value)
    except ValueError:
        raise UsageError(f"${ENV_PREFIX}{name}={value!r} is not a valid {cast.__name__}") from None


class EndpointSession:
    """A loaded generator and its settings, ready for mini-batches of request files."""

    def __init__(self, run_dir: str | Path, out_dir: str | Path, *, formats: Sequence[str] = ("png", "nifti"),
                 batch_size: int = 16, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, options: Mapping[str, float] | None = None,
                 precision: str | None = None, dicom_modality: str = "auto", uid_root: str | None = None,
                 device: str | None = None) -> None:
        import torch

        from imgsynth.generate import api
        from imgsynth.generate.checkpoint import resolve_checkpoint
        from imgsynth.generate.outputs import default_precision
        from imgsynth.generate.runner import SAMPLER_ALIASES, GenerateJob, _provenance

        self.out = Path(out_dir)
        job = GenerateJob(checkpoint=str(run_dir), out_dir=str(out_dir), n=1, formats=list(formats),
                          batch_size=batch_size, precision=precision, dicom_modality=dicom_modality, uid_root=uid_root)
        job.check()
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.view = resolve_checkpoint(run_dir)
        self.generator = api.load_generator(run_dir, dev)
        family = self.view.model_info().family
        self.settings = api.SampleSettings(
            sampler=SAMPLER_ALIASES.get(sampler, sampler) if sampler else None, steps=steps, guidance=guidance,
            formats=tuple(formats), options=dict(options or {}), precision=precision or default_precision(dev))
        api.check_settings(self.generator, self.settings, family)
        info = self.generator.info
        self.conditions = [info.condition(name) for name in self.generator.condition_names]
        if "dicom" in formats:
            from imgsynth.generate.dicom import DicomSettings, check_dicom

            check_dicom(info, dicom_modality)
            # One set UID per output folder and checkpoint: every worker of the job agrees.
            set_uid = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.out.resolve()}|{self.generator.checkpoint['sha256']}").hex
            self.settings.dicom = DicomSettings(set_uid=set_uid, created=_today(), modality=dicom_modality,  # type: ignore[arg-type]
                                                uid_root=uid_root)
        self.batch_size = batch_size
        self.info = api.sample_set_info(self.generator, self.settings, 0, self.view, 0)
        self.settings.provenance = _provenance(self.view, self.generator, self.settings, 0, family, self.info)
        self.settings.provenance.pop("set_seed")  # each request row has its own seed
        self.journal = self.out / ".generate" / f"done-{socket.gethostname()}-{os.getpid()}.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / ".generate" / "endpoint.json", {
            "format": "imgsynth-generate-endpoint", "info": self.info.model_dump(mode="json"),
            "formats": sorted(formats), "precision": self.settings.precision})

    @classmethod
    def from_environment(cls) -> EndpointSession:
        """The session a batch deployment describes through its environment variables."""
        model_dir = os.environ.get("AZUREML_MODEL_DIR")
        if not model_dir:
            raise UsageError("AZUREML_MODEL_DIR is not set (the deployment's model: a registered run folder)")
        out = os.environ.get("AZUREML_BI_OUTPUT_PATH") or _env("OUT_DIR")
        if not out:
            raise UsageError("AZUREML_BI_OUTPUT_PATH (or IMGSYNTH_GENERATE_OUT_DIR) is not set")
        formats = [f.strip() for f in _env("FORMATS", str, "png,nifti").split(",") if f.strip() and f.strip() != "none"]
        truncation = _env("TRUNCATION", float)
        return cls(find_run(model_dir), out, formats=formats, batch_size=_env("BATCH_SIZE", int, 16),
                   sampler=_env("SAMPLER"), steps=_env("STEPS", int), guidance=_env("GUIDANCE", float),
                   options={} if truncation is None else {"truncation": truncation}, precision=_env("PRECISION"),
                   dicom_modality=_env("DICOM_MODALITY", str, "auto"), uid_root=_env("UID_ROOT"), device=_env("DEVICE"))

    def requests(self, csv_file: str | Path) -> list[tuple[Any, int]]:
        """The requests of one CSV file, each with its CSV line."""
        from imgsynth.generate.requests import build_requests, read_conditions_csv

        path = Path(csv_file)
        out = []
        for row in read_conditions_csv(path, self.conditions):
            seed = row.seed if row.seed is not None else int(_hash(path.name, row.line, "seed")[:7], 16)
            if row.count == 0:
                continue
            one = dataclasses.replace(row, seed=None)
            reqs = build_requests(self.conditions, self.generator.info, n=None, fixed={}, seed=seed, rows=[one],
                                  digests=self.settings.digests)
            for j, req in enumerate(reqs):
                key = _hash(path.name, row.line, j)
                out.append((dataclasses.replace(req, index=int(key[:7], 16), name=f"synthetic-{key[:16]}"), row.line))
        return out

    def run(self, mini_batch: Sequence[str | Path]) -> list[dict[str, Any]]:
        """Generate every request of the CSV files in ``mini_batch``; one result row per sample."""
        from imgsynth.generate.api import generate_batch
        from imgsynth.generate.runner import _key, _sizes

        pending: list[tuple[Any, str, int]] = []
        results: list[dict[str, Any]] = []
        for file in mini_batch:
            try:
                pending.extend((req, Path(file).name, line) for req, line in self.requests(file))
            except UsageError as exc:  # a bad request file is reported, the others go on
                results.append({"request_file": Path(file).name, "request_line": None, "error": str(exc)})
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            for (req, name, line), res in zip(chunk, generate_batch(self.generator, [c[0] for c in chunk], self.out,
                                                                     self.settings), strict=True):
                if res.row is None:
                    results.append({"id": req.id, "request_file": name, "request_line": line, "error": res.error})
                    continue
                append_jsonl(self.journal, {"id": req.id, "key": _key(req, self.conditions, self.settings.digests),
                                            "row": res.row, "sizes": _sizes(self.out, res.row)})
                results.append({**res.row, "request_file": name, "request_line": line})
        log.info("mini-batch of %d file(s): %d samples", len(mini_batch), len(results))
        return results


def collect(out_dir: str | Path) -> Dataset:
    """Turn an endpoint job's output folder into a sample set (``manifest.csv`` + ``dataset.json``)."""
    import json

    from imgsynth.contracts import DatasetInfo

    out = Path(out_dir)
    spec_path = out / ".generate" / "endpoint.json"
    if not spec_path.is_file():
        raise ContractError("not the output of a generation endpoint (no .generate/endpoint.json)", path=out)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    rows: dict[str, dict[str, Any]] = {}
    for journal in sorted((out / ".generate").glob("done-*.jsonl")):
        for rec in read_jsonl(journal):
            if rec.get("sizes") and all((out / rel).is_file() for rel in rec["sizes"]):
                rows[rec["id"]] = rec["row"]
    if not rows:
        raise ContractError("no finished sample recorded", path=out)
    info = DatasetInfo.model_validate(spec["info"])
    generator = {**(info.generator or {}), "n": len(rows), "formats": spec["formats"], "precision": spec["precision"]}
    generator.pop("seed", None)  # every request row has its own seed (the manifest's seed column)
    return write_dataset(out, info.model_copy(update={"generator": generator}), [rows[k] for k in sorted(rows)])


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def _today() -> str:
    import datetime as _dt

    return _dt.datetime.now().replace(microsecond=0).isoformat()
