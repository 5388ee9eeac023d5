"""``run_demo``: every stage on built-in real data, resumable, with a summary of what it made.

The demo's own record is ``OUT_DIR/demo.json`` (mode, and per step its status, time and key
figures), rewritten atomically after every step. A step recorded complete is skipped when its
output folder still passes its contract check; a step that was interrupted is run again and
resumes inside its stage (de-identification, preprocessing, training and generation resume
item by item or from their last checkpoint). When a step runs, every later step that reads its
output runs again on a fresh folder.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsynth.contracts import CONTRACT_VERSION
from imgsynth.demo.plan import FULL, MODES, QUICK, Layout, Mode, check_nilearn, dicom_sources
from imgsynth.demo.steps import Context, Figures, Step, build_steps
from imgsynth.errors import ContractError, ImgsynthError, UsageError
from imgsynth.utils.io import atomic_write_json
from imgsynth.utils.log import get_logger

log = get_logger("demo")
STATE_FORMAT = "imgsynth-demo"


@dataclass
class StepResult:
    step: Step
    seconds: float
    skipped: bool
    figures: Figures
    folder: Path


@dataclass
class DemoResult:
    out_dir: Path
    mode: Mode
    results: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    commands: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        """Time of every step, those done by earlier runs included."""
        return round(sum(r.seconds for r in self.results), 1)


class DemoState:
    """``demo.json``: which steps are complete, how long they took, their key figures."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    @classmethod
    def open(cls, layout: Layout, mode: Mode) -> DemoState:
        path = layout.state
        if path.is_file():
            import json

            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ContractError(f"not valid JSON ({exc}); delete the folder to start over", path=path) from None
            if data.get("format") != STATE_FORMAT:
                raise UsageError(f"{layout.root} holds no demo (format {data.get('format')!r}); choose a new folder")
            if data.get("mode") != mode.name:
                other = MODES.get(str(data.get("mode")), FULL)
                flag = " --quick" if other is QUICK else " without --quick"
                raise UsageError(f"{layout.root} holds a {other.name} demo: run it{flag} to resume it, "
                                 "or choose another folder")
            return cls(path, data)
        if layout.root.exists() and any(layout.root.iterdir()):
            raise UsageError(f"{layout.root} exists and is not a demo folder (no demo.json); choose a new folder")
        data = {"format": STATE_FORMAT, "version": CONTRACT_VERSION, "mode": mode.name,
                "created": _now(), "stages": {}}
        state = cls(path, data)
        state.save()
        return state

    def record(self, key: str) -> dict[str, Any]:
        return self.data["stages"].get(key) or {}

    def set(self, key: str, **fields: Any) -> None:
        self.data["stages"][key] = {**self.record(key), **fields}
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        atomic_write_json(self.path, self.data)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def run_demo(
    out_dir: str | Path = "imgsynth-demo",
    *,
    quick: bool = False,
    threads: int | None = None,
    announce: Any = None,
) -> DemoResult:
    """Run the whole pipeline into ``out_dir`` (see README.txt there); resumes a previous run.

    ``announce(step, index, total, folder)`` is called before each step runs (the CLI prints a
    line); ``threads`` sets torch's intra-op threads for the whole run.
    """
    mode = QUICK if quick else FULL
    shown = str(out_dir)
    root = Path(out_dir).expanduser().absolute()
    layout = Layout(root)
    sources = dicom_sources()
    check_nilearn()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    state = DemoState.open(layout, mode)
    ctx = Context(layout=layout, mode=mode, sources=sources, shown_root=shown)
    steps = build_steps(mode)

    from imgsynth.demo.readme import write_readme

    write_readme(ctx, steps, None)
    result = DemoResult(out_dir=root, mode=mode)
    ran: set[str] = set()
    start = time.monotonic()
    for index, step in enumerate(steps, start=1):
        folder = step.folder(ctx)
        record = state.record(step.key)
        stale = bool(set(step.needs) & ran)
        if record.get("status") == "complete" and not stale:
            try:
                step.check(ctx)
                result.results.append(StepResult(step, float(record.get("seconds", 0.0)), True, step.figures(ctx), folder))
                continue
            except ImgsynthError as exc:
                log.warning("%s: output no longer complete (%s); running it again", step.key, exc)
                stale = True
        if stale and folder.exists():
            _remove_output(layout, folder)
            if step.key == "deid":
                layout.verify.unlink(missing_ok=True)
        if announce is not None:
            announce(step, index, len(steps), folder)
        state.set(step.key, status="running", started=_now())
        t, cpu = time.monotonic(), time.process_time()
        step.run(ctx)
        step.check(ctx)
        seconds, cpu = round(time.monotonic() - t, 1), round(time.process_time() - cpu, 1)
        figures = step.figures(ctx)
        state.set(step.key, status="complete", seconds=seconds, cpu_seconds=cpu, finished=_now(), figures=figures.values)
        ran.add(step.key)
        result.results.append(StepResult(step, seconds, False, figures, folder))
    result.seconds = round(time.monotonic() - start, 1)
    result.commands = [(s.title, s.commands(ctx)) for s in steps]
    state.data["total_seconds"] = result.total_seconds
    state.save()
    write_readme(ctx, steps, result)
    return result


def _remove_output(layout: Layout, folder: Path) -> None:
    """Delete a stale output folder of the demo (only the demo's own step folders)."""
    if folder.parent != layout.root or not folder.name[:1].isdigit():
        raise UsageError(f"refusing to delete {folder}: not a step folder of the demo")
    log.info("removing %s (made from inputs that were just rebuilt)", folder)
    shutil.rmtree(folder)
