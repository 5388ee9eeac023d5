from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import (
    AnswerRow,
    Condition,
    Dataset,
    DatasetInfo,
    Intensity,
    KeyRow,
    Metric,
    ModelInfo,
    Report,
    RunFolder,
    StageStatus,
    read_answers,
    read_key,
    read_report,
    save_item,
    write_answers,
    write_dataset,
    write_key,
    write_report,
)
from imgsynth.errors import ContractError


def _info() -> DatasetInfo:
    return DatasetInfo(
        spatial_dims=2,
        shape=[1, 8, 8],
        spacing=[1.0, 1.0],
        intensity=Intensity(kind="ct_window", low=-160.0, high=240.0, unit="HU", params={"center": 40, "width": 400}),
        conditions=[
            Condition(name="plane", type="categorical", categories=["axial", "coronal"]),
            Condition(name="position", type="continuous", range=(0.0, 1.0)),
            Condition(name="tissue", type="mask", channels=2),
        ],
    )


def _make(root: Path, n: int = 4) -> Dataset:
    rows = []
    for i in range(n):
        save_item(root, f"items/{i:04d}.npy", np.full((1, 8, 8), i / n, np.float32))
        save_item(root, f"masks/{i:04d}.npy", np.zeros((2, 8, 8), np.float32))
        rows.append(
            {"id": f"{i:04d}", "path": f"items/{i:04d}.npy", "split": "train" if i else "test", "subject": f"s{i % 2}",
             "plane": "axial", "position": i / n, "tissue": f"masks/{i:04d}.npy"}
        )
    return write_dataset(root, _info(), rows)


def test_dataset_round_trip(tmp_path: Path) -> None:
    written = _make(tmp_path)
    ds = Dataset.read(tmp_path)
    assert ds.info == written.info
    assert ds.info.splits == {"test": 1, "train": 3}
    assert [r["id"] for r in ds.rows] == ["0000", "0001", "0002", "0003"]
    assert ds.load(ds.rows[2]).shape == (1, 8, 8) and ds.load(ds.rows[2])[0, 0, 0] == pytest.approx(0.5)
    assert ds.condition_values(ds.rows[1]) == {"plane": "axial", "position": 0.25, "tissue": "masks/0001.npy"}
    assert ds.load_mask(ds.rows[0], "tissue").shape == (2, 8, 8)
    assert len(ds.split("train")) == 3
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_intensity_inverts_inside_window() -> None:
    inten = _info().intensity
    hu = np.array([-160.0, -100.5, 0.0, 40.0, 239.5, 240.0])
    np.testing.assert_allclose(inten.to_physical(inten.to_model(hu)), hu, atol=1e-3)
    assert inten.to_model(np.array([-1000.0, 3000.0])).tolist() == [-1.0, 1.0]
    none = Intensity(kind="none", unit="HU")
    np.testing.assert_array_equal(none.to_physical(none.to_model(hu)), hu.astype(np.float32))
    with pytest.raises(ValueError, match="low < high"):
        Intensity(kind="minmax", low=1.0, high=1.0)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.replace("plane,", "plain,"), "missing column"),
        (lambda t: t.replace(",axial,", ",sagittal,", 1), "not a category of 'plane'"),
        (lambda t: t.replace(",train,", ",training,", 1), "split 'training'"),
        (lambda t: t.replace("0001,items", "0000,items", 1), "duplicate id"),
        (lambda t: t.replace("items/0002.npy", "../0002.npy", 1), "must be relative"),
        (lambda t: t.replace("items/0003.npy", "items/9999.npy", 1), "item file 'items/9999.npy' is missing"),
        (lambda t: t.replace(",0.25,", ",quarter,", 1), "not a number"),
        (lambda t: t.replace("subject,", "subject,extra_col,", 1), "unknown column"),
    ],
)
def test_malformed_manifest_is_rejected(tmp_path: Path, mutate, message: str) -> None:
    _make(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(mutate(manifest.read_text()))
    with pytest.raises(ContractError, match=message) as err:
        Dataset.read(tmp_path)
    assert "manifest.csv" in str(err.value) and "\n" not in str(err.value)


def test_dataset_json_version_and_schema(tmp_path: Path) -> None:
    _make(tmp_path)
    info_path = tmp_path / "dataset.json"
    data = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**data, "version": 99}))
    with pytest.raises(ContractError, match="contract version 99"):
        Dataset.read(tmp_path)
    info_path.write_text(json.dumps({**data, "format": "something"}))
    with pytest.raises(ContractError, match="expected format 'imgsynth-dataset'"):
        Dataset.read(tmp_path)
    info_path.write_text(json.dumps({**data, "shape": [1, 8]}))
    with pytest.raises(ContractError, match="dataset.json"):
        Dataset.read(tmp_path)
    info_path.write_text("{not json")
    with pytest.raises(ContractError, match="not valid JSON"):
        Dataset.read(tmp_path)
    with pytest.raises(ContractError, match="dataset folder not found"):
        Dataset.read(tmp_path / "nope")


def test_write_dataset_rejects_bad_rows(tmp_path: Path) -> None:
    save_item(tmp_path, "a.npy", np.zeros((1, 8, 8), np.float32))
    row = {"id": "a", "path": "a.npy", "split": "train", "subject": "s", "plane": "axial", "position": 2.0,
           "tissue": "a.npy"}
    write_dataset(tmp_path, _info(), [row])  # position outside range is allowed (range documents typical span)
    with pytest.raises(ContractError, match="unknown column"):
        write_dataset(tmp_path, _info(), [{**row, "bogus": 1}])
    with pytest.raises(ContractError, match="not a category"):
        write_dataset(tmp_path / "x", _info(), [{**row, "plane": "oblique"}])
    assert not (tmp_path / "x" / "manifest.csv").exists()
    with pytest.raises(ValueError, match="categories"):
        Condition(name="c", type="categorical")
    with pytest.raises(ValueError, match="reserved"):
        Condition(name="split", type="continuous", range=(0, 1))


def test_run_folder_round_trip(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    model = ModelInfo(family="ldm", spatial_dims=2, stages={"autoencoder": StageStatus(), "diffusion": StageStatus()},
                      config_hash="abc")
    run.create(config_yaml="kind: train\n", dataset=_info(), model=model, provenance={"git_commit": None})
    run.log_metrics({"stage": "autoencoder", "kimg": 0.5, "step": 10, "loss": 0.2, "lr": 1e-4})
    with pytest.raises(ContractError, match="lacks kimg"):
        run.log_metrics({"stage": "autoencoder", "step": 1})
    again = RunFolder.read(tmp_path / "run")
    assert again.model_info() == model and again.dataset_info() == _info()
    assert again.metrics("autoencoder")[0]["loss"] == 0.2 and again.metrics("diffusion") == []
    assert again.weights_path("diffusion", ema=True).name == "diffusion-ema.safetensors"
    with open(run.metrics_path, "a") as fh:  # a crash mid-line leaves a partial record: ignored
        fh.write('{"stage": "autoenc')
    assert len(again.metrics()) == 1
    (tmp_path / "run" / "model.json").write_text('{"format": "imgsynth-run", "version": 1}')
    with pytest.raises(ContractError, match="model.json"):
        RunFolder.read(tmp_path / "run")


def test_report_round_trip(tmp_path: Path) -> None:
    report = Report(
        inputs={"real": "r", "synthetic": "s"},
        metrics={"FD_domain": Metric(value=1.5, recipe={"extractor": "domain", "n": 100}, floor=0.7, ci=(1.2, 1.8))},
    )
    write_report(tmp_path, report)
    assert read_report(tmp_path) == report
    (tmp_path / "report.json").write_text(json.dumps({"format": "imgsynth-report", "version": 2}))
    with pytest.raises(ContractError, match="version 2"):
        read_report(tmp_path)


def test_review_key_and_answers(tmp_path: Path) -> None:
    key = [KeyRow(reader="r1", case="c01", truth="real", dataset="real", item="0001"),
           KeyRow(reader="r1", case="c02", truth="synthetic", dataset="synthetic", item="0007")]
    write_key(tmp_path / "key.csv", key)
    assert read_key(tmp_path / "key.csv") == key
    with pytest.raises(ContractError, match="beside readers"):
        write_key(tmp_path / "readers" / "r1" / "key.csv", key)
    answers = [AnswerRow(reader="r1", case="c01", answer="real", confidence=4, quality=5, comment="a, \"b\"", seconds=3.5)]
    write_answers(tmp_path / "answers.csv", answers)
    assert read_answers(tmp_path / "answers.csv") == answers
    (tmp_path / "bad.csv").write_text("reader,case,answer,confidence,quality,comment,seconds\nr1,c01,maybe,4,5,,1\n")
    with pytest.raises(ContractError, match="line 2: 'answer'"):
        read_answers(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("reader,case,answer\n")
    with pytest.raises(ContractError, match="missing column"):
        read_answers(tmp_path / "bad2.csv")
