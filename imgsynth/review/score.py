"""``imgsynth review score``: check returned answers against ``key.csv`` and compute the results.

Per reader and pooled: accuracy, sensitivity and specificity for "synthetic" (synthetic is the
positive class), AUC from the confidence-signed call, image quality of real vs synthetic cases;
inter-reader agreement (Fleiss' kappa, Cohen's for pairs). Intervals: Wilson for one reader's
proportions, otherwise a bootstrap over cases (stratified by truth; all readers' answers to a case
travel together, so pooled intervals respect that readers saw the same images).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.contracts import read_answers, read_key
from imgsynth.errors import EXIT_OK, EXIT_PARTIAL, ContractError, UsageError
from imgsynth.review import stats
from imgsynth.review.config import ReviewScoreConfig
from imgsynth.utils.io import atomic_write_json, atomic_write_text

RESULTS_FORMAT = "imgsynth-review-results"
RESULTS_VERSION = 1
OUTPUT_FILES = ("results.json", "report.md", "report.html", "cases.csv")


@dataclass(frozen=True)
class Rating:
    """One answer joined with the key."""

    reader: str
    case: str
    image: tuple[str, str]  # (dataset, item): the same image across readers
    truth: str
    answer: str
    confidence: int
    quality: int
    comment: str
    seconds: float


@dataclass
class ScoreResult:
    out_dir: Path
    results: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.warnings else EXIT_OK


# =============================================================================================
# Matching answers to the key
# =============================================================================================
def match_answers(
    key_csv: str | Path, answer_files: Sequence[str | Path], *, allow_incomplete: bool = False
) -> tuple[list[Rating], list[str], list[str]]:
    """(ratings, readers of the key, warnings); one-line errors for answers that do not fit the key."""
    key_csv = Path(key_csv)
    key = read_key(key_csv)
    if not key:
        raise ContractError("key.csv lists no case", path=key_csv)
    if not answer_files:
        raise UsageError("give at least one answers.csv")
    by_pair = {(k.reader, k.case): k for k in key}
    readers = list(dict.fromkeys(k.reader for k in key))
    seen: dict[tuple[str, str], str] = {}
    ratings: list[Rating] = []
    for path in map(Path, answer_files):
        rows = read_answers(path)
        if not rows:
            raise ContractError("holds no answers (only a header?)", path=path)
        for n, a in enumerate(rows, start=1):
            where = f"answer {n}"
            if a.reader not in readers:
                raise ContractError(
                    f"{where}: reader '{a.reader}' is not in {key_csv.name} (its readers: {', '.join(readers)}); "
                    "is this file from another study's package?", path=path)
            pair = (a.reader, a.case)
            k = by_pair.get(pair)
            if k is None:
                raise ContractError(
                    f"{where}: case '{a.case}' is not one of reader {a.reader}'s cases in {key_csv.name}", path=path)
            if pair in seen:
                raise ContractError(
                    f"{where}: second answer of reader {a.reader} to case {a.case} (first in {seen[pair]})", path=path)
            seen[pair] = f"{path.name} {where}"
            ratings.append(Rating(
                reader=a.reader, case=a.case, image=(k.dataset, k.item), truth=k.truth, answer=a.answer,
                confidence=a.confidence, quality=a.quality, comment=a.comment, seconds=a.seconds,
            ))
    warnings = []
    for reader in readers:
        missing = [k.case for k in key if k.reader == reader and (reader, k.case) not in seen]
        if not missing:
            continue
        total = sum(1 for k in key if k.reader == reader)
        if len(missing) == total:
            msg = f"no answers from reader {reader} in the files given"
        else:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            msg = f"reader {reader} left {len(missing)} of {total} case(s) unanswered ({shown})"
        if not allow_incomplete:
            raise ContractError(f"{msg}; give every reader's complete answers.csv or pass --allow-incomplete",
                                path=key_csv)
        warnings.append(msg)
    return ratings, readers, warnings


# =============================================================================================
# Metrics
# =============================================================================================
@dataclass
class _Table:
    """Ratings as arrays (row i = rating i)."""

    reader: np.ndarray
    image: np.ndarray  # cluster index per row
    truth_syn: np.ndarray
    call_syn: np.ndarray
    confidence: np.ndarray
    quality: np.ndarray
    seconds: np.ndarray
    image_truth_syn: np.ndarray  # per cluster

    @classmethod
    def build(cls, ratings: Sequence[Rating]) -> _Table:
        images = list(dict.fromkeys(r.image for r in ratings))
        index = {im: i for i, im in enumerate(images)}
        truth_of = {r.image: r.truth == "synthetic" for r in ratings}
        return cls(
            reader=np.array([r.reader for r in ratings]),
            image=np.array([index[r.image] for r in ratings], dtype=int),
            truth_syn=np.array([r.truth == "synthetic" for r in ratings]),
            call_syn=np.array([r.answer == "synthetic" for r in ratings]),
            confidence=np.array([r.confidence for r in ratings], dtype=float),
            quality=np.array([r.quality for r in ratings], dtype=float),
            seconds=np.array([r.seconds for r in ratings], dtype=float),
            image_truth_syn=np.array([truth_of[im] for im in images]),
        )

    def point(self, rows: np.ndarray) -> dict[str, float | None]:
        """Point estimates on the ratings ``rows`` (indices; repeats allowed)."""
        t, c = self.truth_syn[rows], self.call_syn[rows]
        q = self.quality[rows]
        n_syn, n_real = int(t.sum()), int((~t).sum())
        q_real = float(q[~t].mean()) if n_real else None
        q_syn = float(q[t].mean()) if n_syn else None
        return {
            "accuracy": float(np.mean(t == c)) if rows.size else None,
            "sensitivity": float(np.mean(c[t])) if n_syn else None,
            "specificity": float(np.mean(~c[~t])) if n_real else None,
            "auc": stats.auc(t, stats.signed_confidence(c, self.confidence[rows])),
            "quality_real": q_real,
            "quality_synthetic": q_syn,
            "quality_difference": None if q_real is None or q_syn is None else q_syn - q_real,
        }


def _metric(value: float | None, ci: tuple[float, float] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value, "ci": None if ci is None else list(ci)}
    out.update(extra)
    return out


def _summary(table: _Table, rows: np.ndarray, cfg: ReviewScoreConfig, rng: np.random.Generator,
             *, single_reader: bool) -> dict[str, Any]:
    """Metrics of the ratings ``rows``: one reader (Wilson, tests) or pooled (case bootstrap)."""
    pt = table.point(rows)
    if single_reader:
        clusters = [np.array([r]) for r in rows]  # one answer per case: cases are the resampled units
        strata = table.truth_syn[rows]
    else:
        images = np.unique(table.image[rows])
        clusters = [rows[table.image[rows] == im] for im in images]
        strata = table.image_truth_syn[images]
    boot = stats.cluster_bootstrap(clusters, strata, table.point, n_boot=cfg.bootstrap,
                                   level=cfg.confidence_level, rng=rng)
    t, c = table.truth_syn[rows], table.call_syn[rows]
    n, n_syn, n_real = int(rows.size), int(t.sum()), int((~t).sum())
    correct, tp, tn = int(np.sum(t == c)), int(np.sum(c & t)), int(np.sum(~c & ~t))
    level = cfg.confidence_level
    if single_reader:
        accuracy = _metric(pt["accuracy"], stats.wilson_ci(correct, n, level), p_value=stats.binom_p(correct, n),
                           k=correct, n=n)
        sensitivity = _metric(pt["sensitivity"], stats.wilson_ci(tp, n_syn, level), k=tp, n=n_syn)
        specificity = _metric(pt["specificity"], stats.wilson_ci(tn, n_real, level), k=tn, n=n_real)
        q_p = stats.mann_whitney_p(table.quality[rows][t], table.quality[rows][~t])
    else:
        accuracy = _metric(pt["accuracy"], boot.get("accuracy"), k=correct, n=n)
        sensitivity = _metric(pt["sensitivity"], boot.get("sensitivity"), k=tp, n=n_syn)
        specificity = _metric(pt["specificity"], boot.get("specificity"), k=tn, n=n_real)
        q_p = None
    return {
        "n": n,
        "accuracy": accuracy,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "auc": _metric(pt["auc"], boot.get("auc")),
        "quality": {
            "real": _metric(pt["quality_real"], boot.get("quality_real"), n=n_real),
            "synthetic": _metric(pt["quality_synthetic"], boot.get("quality_synthetic"), n=n_syn),
            "difference": _metric(pt["quality_difference"], boot.get("quality_difference"), p_value=q_p),
        },
        "seconds_median": float(np.median(table.seconds[rows])) if n else None,
    }


def agreement(ratings: Sequence[Rating], readers: Sequence[str]) -> dict[str, Any]:
    """Fleiss' kappa over the images every reader answered; Cohen's kappa for each pair."""
    calls: dict[tuple[str, str], dict[str, str]] = {}
    for r in ratings:
        calls.setdefault(r.image, {})[r.reader] = r.answer
    present = [rd for rd in readers if any(rd in v for v in calls.values())]
    common = [im for im, v in calls.items() if all(rd in v for rd in present)]
    out: dict[str, Any] = {"readers": present, "n_cases": len(common)}
    if len(present) < 2 or not common:
        out["note"] = "agreement needs at least two readers who answered the same cases"
        return out
    counts = np.array([[sum(calls[im][rd] == cat for rd in present) for cat in ("real", "synthetic")] for im in common])
    fk = stats.fleiss_kappa(counts)
    out["fleiss_kappa"] = {"value": fk, "label": stats.kappa_label(fk)}
    pairs = {}
    for a, b in itertools.combinations(present, 2):
        ck = stats.cohen_kappa([calls[im][a] for im in common], [calls[im][b] for im in common])
        pairs[f"{a}/{b}"] = {"value": ck, "label": stats.kappa_label(ck)}
    out["pairwise_cohen_kappa"] = pairs
    if len(present) == 2:
        out["cohen_kappa"] = next(iter(pairs.values()))
    return out


def case_rows(ratings: Sequence[Rating]) -> list[dict[str, Any]]:
    """One row per image: how often it was called synthetic, mean quality, the readers' comments."""
    by: dict[tuple[str, str], list[Rating]] = {}
    for r in ratings:
        by.setdefault(r.image, []).append(r)
    out = []
    for (dataset, item), rs in by.items():
        out.append({
            "case": rs[0].case,
            "truth": rs[0].truth,
            "dataset": dataset,
            "item": item,
            "readers": len(rs),
            "called_synthetic": round(sum(r.answer == "synthetic" for r in rs) / len(rs), 4),
            "mean_confidence": round(float(np.mean([r.confidence for r in rs])), 4),
            "mean_quality": round(float(np.mean([r.quality for r in rs])), 4),
            "comments": " | ".join(f"{r.reader}: {r.comment}" for r in rs if r.comment.strip()),
        })
    return sorted(out, key=lambda d: (d["truth"], -d["called_synthetic"], d["case"]))


def _check_out_dir(out_dir: Path, key_csv: Path) -> None:
    """Refuse an output folder that is a file (or lies under one) or sits inside the reading packages."""
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"output folder {out_dir}: {existing} is a file, not a folder; choose a folder")
    if out_dir.resolve().is_relative_to((key_csv.parent / "readers").resolve()):
        raise UsageError(
            f"output folder {out_dir} lies inside the reading packages (readers/): the results reveal which "
            "cases are real; choose a folder outside readers/"
        )


# =============================================================================================
# API
# =============================================================================================
def score_review(
    key_csv: str | Path,
    answers: Sequence[str | Path],
    out_dir: str | Path,
    config: ReviewScoreConfig | None = None,
) -> ScoreResult:
    """Score ``answers`` against ``key_csv``; write results.json, report.md, report.html, cases.csv."""
    from imgsynth.review import report

    cfg = config or ReviewScoreConfig()
    out_dir = Path(out_dir)
    outputs = {(out_dir / name).resolve() for name in OUTPUT_FILES}
    for src in (key_csv, *answers):
        if Path(src).resolve() in outputs:
            raise UsageError(f"input {src} would be overwritten by the results; choose another output folder")
    _check_out_dir(out_dir, Path(key_csv))
    ratings, readers, warnings = match_answers(key_csv, answers, allow_incomplete=cfg.allow_incomplete)
    table = _Table.build(ratings)
    rng = np.random.default_rng(cfg.seed)
    answered = [rd for rd in readers if np.any(table.reader == rd)]
    per_reader = {
        rd: _summary(table, np.flatnonzero(table.reader == rd), cfg, rng, single_reader=True) for rd in answered
    }
    pooled = _summary(table, np.arange(len(ratings)), cfg, rng, single_reader=len(answered) == 1)
    n_real = int(np.sum(~table.image_truth_syn))
    results = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "inputs": {"key": str(key_csv), "answers": [str(a) for a in answers]},
        "settings": cfg.model_dump(mode="json"),
        "readers": answered,
        "n_cases": {"real": n_real, "synthetic": int(table.image_truth_syn.size - n_real)},
        "n_answers": len(ratings),
        "per_reader": per_reader,
        "pooled": pooled,
        "agreement": agreement(ratings, readers),
        "warnings": warnings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "cases.csv", _csv(case_rows(ratings)))
    atomic_write_text(out_dir / "report.md", report.markdown(results))
    atomic_write_text(out_dir / "report.html", report.html_report(results))
    atomic_write_json(out_dir / "results.json", results)
    return ScoreResult(out_dir=out_dir, results=results, warnings=warnings)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
