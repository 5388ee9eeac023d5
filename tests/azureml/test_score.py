"""score.py runs locally exactly as a batch endpoint calls it: init(), then run() on lists of CSV files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from imgsynth.contracts import Dataset
from imgsynth.generate import generate, item_seed
from imgsynth.generate.endpoint import collect

AZ = Path(__file__).resolve().parents[2] / "azureml"


def _load_score():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("score", AZ / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_contract(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    model_dir = tmp_path / "azureml-models" / "imgsynth-run" / "3"  # a registered folder: the run below it
    model_dir.mkdir(parents=True)
    (model_dir / "run").symlink_to(tiny_run)
    out = tmp_path / "job-output"
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("AZUREML_BI_OUTPUT_PATH", str(out))
    monkeypatch.setenv("IMGSYNTH_GENERATE_FORMATS", "png,dicom")
    monkeypatch.setenv("IMGSYNTH_GENERATE_BATCH_SIZE", "3")
    monkeypatch.setenv("IMGSYNTH_GENERATE_STEPS", "2")
    inputs = tmp_path / "requests"
    inputs.mkdir()
    (inputs / "a.csv").write_text("count,seed,label,age\n2,11,left,40\n1,12,right,\n", encoding="utf-8")
    (inputs / "b.csv").write_text("count,seed,label\n2,13,right\n", encoding="utf-8")
    (inputs / "bad.csv").write_text("count,colour\n1,red\n", encoding="utf-8")

    score = _load_score()
    score.init()
    first = score.run([str(inputs / "a.csv"), str(inputs / "bad.csv")])
    second = score.run([str(inputs / "b.csv")])
    assert isinstance(first, pd.DataFrame) and list(first.columns[:4]) == ["id", "request_file", "request_line", "seed"]
    ok = first[first["error"].isna()] if "error" in first else first
    assert len(ok) == 3 and len(second) == 2
    assert first[first["request_file"] == "bad.csv"]["error"].str.contains("column 'colour'").all()
    assert list(ok["request_line"]) == [2, 2, 3] and list(ok["label"]) == ["left", "left", "right"]
    assert [int(s) for s in ok["seed"]] == [item_seed(11, 0), item_seed(11, 1), item_seed(12, 0)]
    for _, row in pd.concat([ok, second]).iterrows():
        assert (out / row["path"]).is_file() and (out / row["png"]).is_file() and (out / row["dicom"]).is_file()

    # The same images as the command line makes for that row (sample j: seed item_seed(row seed, j)).
    cli = generate(tiny_run, tmp_path / "cli", n=2, conditions=["label=left", "age=40"], seed=11, steps=2, formats=())
    for j, row in enumerate(ok.iloc[:2].itertuples()):
        np.testing.assert_allclose(np.load(out / row.path), np.load(cli.item_path(cli.rows[j])), atol=1e-5)

    # A retried mini-batch makes the same samples under the same ids; the folder becomes a sample set.
    again = score.run([str(inputs / "b.csv")])
    assert list(again["id"]) == list(second["id"])
    ds = collect(out)
    assert len(ds.rows) == 5 and Dataset.read(out).info.splits == {"synthetic": 5}
    assert sorted(r["id"] for r in ds.rows) == sorted([*ok["id"], *second["id"]])
