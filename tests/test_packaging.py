"""The Dockerfile, pyproject and setup scripts agree with each other and with the tree."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _docker_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_torch_requirement_admits_2_13() -> None:
    deps = [Requirement(d) for d in _pyproject()["project"]["dependencies"]]
    torch = next(r for r in deps if r.name == "torch")
    assert Version("2.13.0") in torch.specifier and Version("2.4.0") in torch.specifier
    assert Version("2.3.0") not in torch.specifier


def test_required_runtime_dependencies_declared() -> None:
    names = {Requirement(d).name.lower() for d in _pyproject()["project"]["dependencies"]}
    for name in ("monai", "einops", "diffusers", "accelerate", "pydicom", "nibabel", "torchmetrics",
                 "scikit-image", "safetensors", "pydantic", "pyyaml", "rich", "pylibjpeg"):
        assert name in names, name
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"dev", "azure", "data"} <= set(extras)


def test_dockerfile_copies_existing_paths_and_installs_the_project() -> None:
    instructions = _docker_instructions()
    copies = [shlex.split(rest) for op, rest in instructions if op == "COPY"]
    assert copies, "Dockerfile copies nothing"
    for args in copies:
        for src in args[:-1]:
            assert (REPO / src).exists(), f"Dockerfile copies missing path {src}"
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    # The project itself is installed from pyproject (so the image gets the same requirements) ...
    assert re.search(r'pip install "?\.(\[[a-z,]+\])?"?', runs)
    # ... after a torch build that satisfies pyproject's torch requirement.
    args = dict(rest.split("=", 1) for op, rest in instructions if op == "ARG" and "=" in rest)
    torch_req = next(Requirement(d) for d in _pyproject()["project"]["dependencies"] if d.startswith("torch"))
    assert Version(args["TORCH_VERSION"]) in torch_req.specifier
    entry = next(rest for op, rest in instructions if op == "ENTRYPOINT")
    assert "imgsynth" in entry
    for needed in ("pyproject.toml", "setup.py", "imgsynth", "configs"):
        assert any(needed in args for args in copies), f"Dockerfile does not copy {needed}"


def test_readme_has_exactly_two_quickstart_commands() -> None:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash|sh)\n(.*?)```", text, re.S)
    assert block, "README lacks a Quickstart code block"
    commands = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(commands) == 2, commands
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1].strip() in ci, ".ci/run must call the README's test command"


def test_builtin_configs_are_package_data() -> None:
    setup = (REPO / "setup.py").read_text()
    assert '"imgsynth.configs": "configs"' in setup
    from imgsynth.config import builtin_config_dir

    assert builtin_config_dir().resolve() == (REPO / "configs").resolve() or builtin_config_dir().is_dir()
