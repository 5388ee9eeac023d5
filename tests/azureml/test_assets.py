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
