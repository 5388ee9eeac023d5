"""``scripts/bench_all.py``: a failing, hanging or missing benchmark is a row of the table, not a crash."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_all():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("bench_all", REPO / "scripts" / "bench_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_all"] = module
    spec.loader.exec_module(module)
    return module


def _script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(body)
    return str(path)  # absolute: joined onto scripts/ it stays itself


def test_outcomes_of_ok_failing_hanging_and_missing_benchmarks(bench_all, tmp_path: Path) -> None:  # noqa: ANN001
    ok = bench_all.Bench("ok", _script(tmp_path, "bench_ok.py", (
        "print('corpus: 10 files')\n"
        "print('ratio imgsynth / bare loop:  0.91  (target >= 0.85)')\n"
        "print('dpm++        20      16       1.234          12.5x')\n")), data=("pneumonia",))
    failing = bench_all.Bench("failing", _script(tmp_path, "bench_fail.py", (
        "import sys\nprint('speed-up 2 workers / 1 worker: 1.70')\nsys.exit('PneumoniaMNIST not found')\n")))
    hanging = bench_all.Bench("hanging", _script(tmp_path, "bench_hang.py", (
        "import subprocess, sys, time\n"
        "print('started', flush=True)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n")))
    missing = bench_all.Bench("missing", str(tmp_path / "bench_missing.py"))

    outcomes = [bench_all.run_one(b, False, 20.0) for b in (ok, failing, missing)]
    start = time.monotonic()
    outcomes.append(bench_all.run_one(hanging, False, 3.0))
    assert time.monotonic() - start < 30  # the whole process group was ended at the limit

    by_name = {o.bench.name: o for o in outcomes}
    assert by_name["ok"].status == "ok"
    assert by_name["ok"].figures == ["ratio imgsynth / bare loop:  0.91  (target >= 0.85)",
                                     "dpm++        20      16       1.234          12.5x"]
    assert by_name["failing"].status == "failed (rc 1)" and by_name["failing"].figures == [
        "speed-up 2 workers / 1 worker: 1.70"]
    assert by_name["missing"].status == "missing"
    assert by_name["hanging"].status == "timed out (3 s)" and "started" in by_name["hanging"].stdout

    text = bench_all.render(outcomes, bench_all.machine(), quick=False, timeout=20.0, finished=True)
    assert "| [ok](#ok) | ok |" in text and "ratio imgsynth / bare loop:  0.91" in text
    assert "| [failing](#failing) | failed (rc 1) |" in text and "PneumoniaMNIST not found" in text
    assert "| [hanging](#hanging) | timed out (3 s) |" in text and "| [missing](#missing) | missing |" in text
    assert "Kermany" in text  # the data a benchmark read is cited
    for key in ("CPU", "cores", "RAM", "torch", "date (UTC)"):
        assert f"| {key} |" in text


def test_every_stage_benchmark_script_is_registered(bench_all) -> None:  # noqa: ANN001
    names = [b.name for b in bench_all.discover(None)]
    for stage in ("deid", "preprocess", "train", "stylegan2", "generate", "evaluate", "review"):
        if (REPO / "scripts" / f"bench_{stage}.py").is_file():
            assert stage in names
    assert "all" not in names
    assert bench_all.discover({"deid"})[0].name == "deid"
