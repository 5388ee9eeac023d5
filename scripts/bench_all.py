"""Run every stage benchmark (``scripts/bench_*.py``) and write ``BENCHMARKS.md``.

    python scripts/bench_all.py                    # each benchmark with its default options
    python scripts/bench_all.py --quick            # smaller options: minutes in all
    python scripts/bench_all.py --only deid,train --timeout 300 --out /tmp/BENCHMARKS.md

Each benchmark runs in its own process (its own process group, so a timeout ends it and every
process it started), one after the other, with a per-benchmark time limit. Every figure the
benchmarks print is a ratio against a baseline measured side by side in that same run (bare
loops, reference libraries, the slow sampler...); this script keeps their printed lines verbatim,
picks the ratio lines for the summary table and describes the machine (CPU model, cores, RAM,
load, torch version, date, commit). A benchmark that fails, times out or is missing is reported as
such in the table; the others go on. ``BENCHMARKS.md`` is rewritten after each benchmark, so an
interrupted run still leaves the figures measured so far.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# The benchmarks: order, quick options, the data each reads (cited per the shared data READMEs)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    quick: tuple[str, ...] = ()
    data: tuple[str, ...] = ()


BENCHES = (
    # deid and preprocess keep the corpus / volume sizes their issues' figures are quoted at (fewer rounds).
    Bench("deid", "bench_deid.py", ("--files", "2000", "--repeats", "2"), ("pydicom",)),
    Bench("preprocess", "bench_preprocess.py", ("--repeats", "1", "--loader-repeats", "3"), ("chris_t1", "mni152")),
    Bench("train", "bench_train.py", ("--steps", "16", "--reps", "1", "--ddpm-steps", "250"), ("pneumonia",)),
    Bench("stylegan2", "bench_stylegan2.py", ("--resolutions", "32", "64", "--repeats", "3"), ("pneumonia",)),
    Bench("generate", "bench_generate.py", ("--images", "8"), ()),
    Bench("evaluate", "bench_evaluate.py", ("--synthetic", "1000", "--features", "1000"), ("pneumonia",)),
    Bench("review", "bench_review.py", ("--cases", "20", "--readers", "2", "--size3d", "64"), ("pneumonia",)),
)

DATA = {
    "pydicom": ("pydicom's test files and pydicom-data (installed packages, MIT licence; the files the demo "
                "de-identifies)", None),
    "chris_t1": ("`chris_t1.nii.gz`, a real T1 brain MRI (MRIcron's sample image, BSD-2-Clause): Rorden C, Brett M. "
                 "Stereotaxic display of brain lesions. Behavioural Neurology 12, 191-200 (2000). Used when "
                 "`../shared/data/volumes/` is present, else nilearn's MNI152 template", "volumes/chris_t1.nii.gz"),
    "mni152": ("nilearn's MNI152 T1 template (MNI ICBM152 2009a nonlinear symmetric; Fonov et al., NeuroImage 2009 "
               "and 2011)", None),
    "pneumonia": ("PneumoniaMNIST (MedMNIST v2, CC BY 4.0): Yang J et al. MedMNIST v2. Scientific Data 10, 41 (2023); "
                  "Kermany DS et al. Cell 172(5), 2018. Used when `../shared/data/medmnist/` is present, else "
                  "random images of the same shape", "medmnist/pneumoniamnist.npz"),
}

RATIO_LINE = re.compile(r"ratio|overhead|speed-?up|\bvs\b|target|\d(\.\d+)?x\b|frames at", re.IGNORECASE)


@dataclass
class Outcome:
    bench: Bench
    argv: list[str]
    status: str = "not run"  # ok | failed (rc N) | timed out | missing | not run | interrupted
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    figures: list[str] = field(default_factory=list)


def discover(only: set[str] | None) -> list[Bench]:
    """The registered benchmarks, then any other ``scripts/bench_*.py`` (run with its defaults)."""
    known = {b.script for b in BENCHES}
    extra = [Bench(p.stem.removeprefix("bench_"), p.name) for p in sorted((REPO / "scripts").glob("bench_*.py"))
             if p.name not in known and p.name != "bench_all.py"]
    benches = [*BENCHES, *extra]
    return [b for b in benches if only is None or b.name in only]


def run_one(bench: Bench, quick: bool, timeout: float) -> Outcome:
    script = REPO / "scripts" / bench.script
    argv = [sys.executable, str(script), *(bench.quick if quick else ())]
    out = Outcome(bench, argv)
    if not script.is_file():
        out.status = "missing"
        return out
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out.stdout, out.stderr = proc.communicate(timeout=timeout)
        out.status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out.stdout, out.stderr = proc.communicate()
        out.status = f"timed out ({timeout:.0f} s)"
    except KeyboardInterrupt:
        _kill_group(proc)
        out.stdout, out.stderr = proc.communicate()
        out.status = "interrupted"
    finally:
        out.seconds = round(time.monotonic() - start, 1)
        out.figures = [line.strip() for line in out.stdout.splitlines() if RATIO_LINE.search(line)]
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    """End the benchmark and every process it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "not installed"


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    try:
        import torch

        torch_text = f"{torch.__version__} (CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'})"
    except ImportError:
        torch_text = "not installed"
    return {
        "CPU": _cpu_model(),
        "cores": f"{cores} ({usable} usable by this process)",
        "RAM": _ram_gib(),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.1f}" for x in load),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "torch": torch_text,
        "numpy / monai / pydicom": f"{_version('numpy')} / {_version('monai')} / {_version('pydicom')}",
        "imgsynth commit": _commit(),
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


# ---------------------------------------------------------------------------------------------
# BENCHMARKS.md
# ---------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(outcomes: list[Outcome], info: dict[str, str], quick: bool, timeout: float, finished: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `python scripts/bench_all.py" + (" --quick" if quick else "") + "`, which runs every stage "
        "benchmark (`scripts/bench_*.py`) in its own process, one after the other, "
        f"each limited to {timeout:.0f} s. Every figure is a ratio against a baseline measured side by side in the "
        "same run, on the same machine (a bare hand-written loop, a reference library, the slow sampler, ...), so "
        "the ratios compare across machines far better than the absolute times. Each benchmark's docstring says "
        "what exactly it measures; its printed lines are kept verbatim below.",
        "",
    ]
    if not finished:
        lines += ["**This run did not finish: the benchmarks not yet run are marked so.**", ""]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in info.items()]
    load = float(info["load average at start (1/5/15 min)"].split(" / ")[0])
    cores = int(info["cores"].split()[0] or 1)
    if load > cores:
        lines += ["", f"The machine was shared (load {load:.1f} on {cores} cores) while this ran: absolute times are "
                  "slower than on an idle machine; the ratios, measured side by side, are affected much less."]
    lines += ["", "## Summary", "", "| benchmark | status | time | ratios printed (each against its baseline in the same run) |",
              "| --- | --- | --- | --- |"]
    for o in outcomes:
        figs = "<br>".join(_cell(f) for f in o.figures[:8]) or "-"
        lines.append(f"| [{o.bench.name}](#{o.bench.name}) | {o.status} | {o.seconds:.0f} s | {figs} |")
    lines.append("")
    for o in outcomes:
        lines += [f"## {o.bench.name}", ""]
        shown = " ".join(["python", *(Path(a).relative_to(REPO).as_posix() if a.startswith(str(REPO)) else a
                                      for a in o.argv[1:])])
        lines += [f"`{shown}`: {o.status}, {o.seconds:.0f} s.", ""]
        if o.bench.data:
            lines.append("Data: " + "; ".join(_data_text(k) for k in o.bench.data) + ".")
            lines.append("")
        if o.stdout.strip():
            lines += ["```", o.stdout.strip(), "```", ""]
        if o.status not in ("ok", "not run", "missing") and o.stderr.strip():
            tail = "\n".join(o.stderr.strip().splitlines()[-15:])
            lines += ["Last lines of its error output:", "", "```", tail, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _data_text(key: str) -> str:
    text, rel = DATA[key]
    if rel is not None:
        text += " (present in this run)" if (SHARED / rel).is_file() else " (absent in this run: fallback used)"
    return text


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's smaller options (see BENCHES)")
    p.add_argument("--only", help="comma-separated benchmark names (deid,preprocess,train,stylegan2,generate,evaluate,review)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per benchmark (default 900)")
    p.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args(argv)
    only = {s.strip() for s in args.only.split(",")} if args.only else None
    benches = discover(only)
    if not benches:
        p.error(f"no benchmark named {sorted(only or [])}")
    info = machine()
    outcomes = [Outcome(b, [sys.executable, str(REPO / "scripts" / b.script), *(b.quick if args.quick else ())])
                for b in benches]
    finished = False
    try:
        for i, bench in enumerate(benches):
            print(f"[{i + 1}/{len(benches)}] {bench.name}: running (limit {args.timeout:.0f} s)", flush=True)
            outcomes[i] = run_one(bench, args.quick, args.timeout)
            if outcomes[i].status == "interrupted":
                raise KeyboardInterrupt
            print(f"[{i + 1}/{len(benches)}] {bench.name}: {outcomes[i].status} in {outcomes[i].seconds:.0f} s", flush=True)
            for line in outcomes[i].figures:
                print(f"    {line}", flush=True)
            write(args.out, render(outcomes, info, args.quick, args.timeout, finished=False))
        finished = True
    except KeyboardInterrupt:
        print("interrupted: writing the figures measured so far", flush=True)
    write(args.out, render(outcomes, info, args.quick, args.timeout, finished))
    print(f"wrote {args.out}")
    bad = [o.bench.name for o in outcomes if o.status != "ok"]
    return 0 if finished and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
