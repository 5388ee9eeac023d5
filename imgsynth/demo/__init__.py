"""``imgsynth demo``: the whole pipeline on real data that installed packages ship, in minutes on a CPU.

``run_demo(out_dir, quick=...)`` is the Python API (see ``runner.py``); ``steps.py`` holds one step
per stage output folder, each calling its stage's Python API; ``plan.py`` the folder layout, the
configs of each mode and where the built-in data lie; ``readme.py`` the README.txt it writes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":
        from imgsynth.demo.runner import run_demo

        return run_demo
    raise AttributeError(f"module 'imgsynth.demo' has no attribute {name!r}")
