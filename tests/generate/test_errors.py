"""Every refusal of the generation command: one line naming the option, file or field, exit code 2
(usage) or 1 (a broken run folder), and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgsynth.cli import main
from imgsynth.generate.endpoint import EndpointSession, find_run


def _fail(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["generate", *args])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return code, err


def test_usage_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    csv = tmp_path / "c.csv"
    csv.write_text("count,label\n2,left\n")
    empty = tmp_path / "e.csv"
    empty.write_text("count,label\n0,left\n")
    (tmp_path / "file").write_text("x")
    cases = [
        (["--n", "1", "--format", "png,jpeg"], "unknown format 'jpeg' (choose from png, nifti, dicom)"),
        (["--n", "1", "--precision", "fp16"], "--precision 'fp16' must be fp32 or bf16"),
        (["--n", "1", "--dicom-modality", "US"], "--dicom-modality 'US' must be auto, CT, MR or SC"),
        (["--n", "1", "--format", "dicom", "--uid-root", "1.02.3"], "uid_root '1.02.3' must be a dotted numeric UID"),
        (["--n", "2", "--conditions-csv", str(csv)], "give either --n or a 'count' column"),
        (["--conditions-csv", str(empty)], "nothing to generate"),
        (["--conditions-csv", str(tmp_path / "missing.csv")], "conditions CSV not found"),
        (["--n", "1", "--sampler", "euler"], "--sampler 'euler' is not available for this model"),
        (["--n", "1", "--truncation", "0.5"], "--truncation does not apply to a ldm model"),
        (["--n", "1", "--masks-from", str(tmp_path)], "--masks-from: this model takes no mask condition"),
        (["--n", "1", "--evaluation", str(tmp_path)], "no report.json in the evaluation folder"),
    ]
    for extra, message in cases:
        code, err = _fail([str(tiny_run), out, *extra], capsys)
        assert code == 2 or "report.json" in message, (extra, code, err)
        assert message in err, (extra, err)
        assert not Path(out).exists(), extra  # refused before anything is written
    code, err = _fail([str(tiny_run), str(tmp_path / "file"), "--n", "1"], capsys)
    assert code == 2 and "exists and is not a folder" in err


def test_checkpoint_errors(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    code, err = _fail([str(tmp_path / "nowhere"), out, "--n", "1"], capsys)
    assert code == 1 and "run folder not found" in err
    code, err = _fail([str(tmp_path), out, "--n", "1"], capsys)
    assert code == 2 and "CHECKPOINT must be a run folder, RUN/checkpoints/<stage>[/step-N]" in err
    # A checkpoint folder copied out of its run, and one a crash left without state.json.
    ckpts = tiny_run / "checkpoints" / "diffusion"
    latest = ckpts / (ckpts / "latest").read_text().strip()
    broken = tmp_path / "run" / "checkpoints" / "diffusion" / latest.name
    shutil.copytree(latest, broken)
    (broken / "state.json").unlink()
    code, err = _fail([str(broken), out, "--n", "1"], capsys)
    assert "incomplete checkpoint (state.json or ema.safetensors missing)" in err
    (broken / "state.json").write_text((latest / "state.json").read_text())
    code, err = _fail([str(broken), out, "--n", "1"], capsys)
    assert code == 2 and "is not a run folder (no model.json)" in err


def test_endpoint_environment_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_run: Path) -> None:
    from imgsynth.errors import ContractError, UsageError

    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(UsageError, match="AZUREML_MODEL_DIR is not set"):
        EndpointSession.from_environment()
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    monkeypatch.delenv("AZUREML_BI_OUTPUT_PATH", raising=False)
    monkeypatch.delenv("IMGSYNTH_GENERATE_OUT_DIR", raising=False)
    with pytest.raises(UsageError, match="AZUREML_BI_OUTPUT_PATH .* is not set"):
        EndpointSession.from_environment()
    monkeypatch.setenv("AZUREML_BI_OUTPUT_PATH", str(tmp_path / "o"))
    with pytest.raises(ContractError, match="expected one run folder .* found 0"):
        EndpointSession.from_environment()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "run").symlink_to(tiny_run)
    assert find_run(tmp_path / "m") == tmp_path / "m" / "run"
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("IMGSYNTH_GENERATE_BATCH_SIZE", "many")
    with pytest.raises(UsageError, match=r"\$IMGSYNTH_GENERATE_BATCH_SIZE='many' is not a valid int"):
        EndpointSession.from_environment()
