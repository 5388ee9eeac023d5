"""Every Azure ML asset loads and validates offline with azure.ai.ml (extra `azure`)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

azure_ml = pytest.importorskip("azure.ai.ml", reason="azure-ai-ml not installed (extra 'azure')")

AZ = Path(__file__).resolve().parents[2] / "azureml"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore")


def _validated(entity) -> None:  # noqa: ANN001
    validate = getattr(entity, "_validate", None)
    if validate is None:
        return
    try:
        result = validate(raise_error=False)
    except TypeError:  # some entities validate without that keyword
        result = validate()
    if result is not None and hasattr(result, "passed"):
        assert result.passed, result.error_messages


def test_environment_builds_from_the_repository_dockerfile() -> None:
    env = azure_ml.load_environment(AZ / "environment.yml")
    assert (AZ / env.build.path / env.build.dockerfile_path).resolve() == (AZ.parent / "Dockerfile").resolve()


def test_distributed_training_job() -> None:
    job = azure_ml.load_job(AZ / "train-job.yml")
    _validated(job)
    assert job.distribution.type == "pytorch"
    assert job.resources.instance_count > 1
    script = re.search(r"bash (\S+)", job.command).group(1)
    assert (AZ.parent / script).is_file()
    launcher = (AZ.parent / script).read_text()
    for needed in ("accelerate launch", "--num_machines", "--machine_rank", "MASTER_ADDR", "scripts/train.py"):
        assert needed in launcher


def test_deid_preprocess_parallel_pipeline() -> None:
    job = azure_ml.load_job(AZ / "deid-preprocess-pipeline.yml")
    _validated(job)
    assert type(job.jobs["deid"]).__name__ == "Parallel"
    task = job.jobs["deid"].task
    assert (AZ.parent / task.entry_script).is_file()


def test_batch_endpoint_and_deployment() -> None:
    endpoint = azure_ml.load_batch_endpoint(AZ / "batch-endpoint.yml")
    deployment = azure_ml.load_batch_deployment(AZ / "batch-deployment.yml")
    assert deployment.endpoint_name == endpoint.name
    assert (AZ / deployment.code_configuration.scoring_script).is_file()
    assert deployment.mini_batch_size >= 1 and deployment.output_action == "append_row"


def test_distributed_generation_job() -> None:
    job = azure_ml.load_job(AZ / "generate-job.yml")
    _validated(job)
    assert job.distribution.type == "pytorch" and job.resources.instance_count > 1
    script = re.search(r"bash (\S+)", job.command).group(1)
    launcher = (AZ.parent / script).read_text()
    for needed in ("accelerate launch", "--num_machines", "--machine_rank", "MASTER_ADDR", "-m imgsynth generate"):
        assert needed in launcher


def test_launch_scripts_are_valid_bash() -> None:
    import subprocess

    for script in ("launch_train.sh", "launch_generate.sh"):
        proc = subprocess.run(["bash", "-n", str(AZ / script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_deid_job_arguments_are_what_the_entry_script_reads() -> None:
    """The parallel task's program_arguments parse with deid_entry's parser; its config is built in."""
    import importlib.util
    import shlex

    from imgsynth.config import builtin_config_names

    job = azure_ml.load_job(AZ / "deid-preprocess-pipeline.yml")
    task = job.jobs["deid"].task
    spec = importlib.util.spec_from_file_location("deid_entry", AZ / "deid_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    argv = shlex.split(re.sub(r"\$\{\{[^}]+\}\}", "/mnt/x", task.program_arguments))
    args = entry._args(argv)
    assert (args.input_root, args.output, args.key_file) == ("/mnt/x", "/mnt/x", "/mnt/x")
    assert args.config in builtin_config_names()
    assert "outputs.audit" in task.append_row_to  # audit lines never land among the DICOM files
    preprocess = job.jobs["preprocess"].command
    assert preprocess.startswith("imgsynth preprocess ")
    assert re.search(r"--config (\S+)", preprocess).group(1) in builtin_config_names()


def test_batch_deployment_settings_are_read_by_the_endpoint() -> None:
    from imgsynth.generate import endpoint

    deployment = azure_ml.load_batch_deployment(AZ / "batch-deployment.yml")
    source = Path(endpoint.__file__).read_text()
    for name in deployment.environment_variables:
        assert name.startswith(endpoint.ENV_PREFIX) and f'"{name.removeprefix(endpoint.ENV_PREFIX)}"' in source, name


def test_extras_and_image_carry_what_azure_ml_needs() -> None:
    """The 'azure' extra (installed by the Dockerfile the environment builds) has the SDK, MLflow and
    pandas (score.py's DataFrame); 'dev' has what these tests need."""
    import tomllib

    from packaging.requirements import Requirement

    extras = tomllib.loads((AZ.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: {Requirement(r).name for r in v} for k, v in extras.items()}
    assert {"azure-ai-ml", "mlflow", "pandas"} <= names["azure"]
    assert {"azure-ai-ml", "pandas"} <= names["dev"]
    docker = (AZ.parent / "Dockerfile").read_text()
    assert re.search(r'pip install "?\.\[[a-z,]*azure[a-z,]*\]"?', docker), "the image must install the 'azure' extra"
    assert re.search(r"^COPY azureml ", docker, re.M), "the image must carry the Azure ML scripts"


def test_code_snapshot_sends_code_not_data() -> None:
    """Jobs upload the repository (code: ..); .amlignore (gitignore syntax) keeps data out of it."""
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")

    def uploaded(path: str) -> bool:
        proc = subprocess.run([git, "-c", f"core.excludesFile={AZ.parent / '.amlignore'}", "check-ignore", "-q",
                               "--no-index", path], cwd=AZ.parent, capture_output=True)
        return proc.returncode == 1

    for path in ("imgsynth/cli.py", "azureml/score.py", "azureml/launch_train.sh", "scripts/train.py",
                 "configs/ldm_2d.yaml", "pyproject.toml"):
        assert uploaded(path), path
    for path in ("runs/chest/weights/unet.safetensors", "data/CT0001.dcm", "samples/manifest.csv", "tests/conftest.py"):
        assert not uploaded(path), path
