"""``imgsynth generate``: a valid sample set with the conditions asked for, image i independent of batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgsynth.batch import run_minibatches
from imgsynth.cli import main
from imgsynth.contracts import Dataset
from imgsynth.errors import UsageError
from imgsynth.generate import SampleSettings, generate, generate_items, item_seed, plan
from imgsynth.training.run import train
from imgsynth.utils.io import sha256_file
from tests.training.conftest import tiny_config, write_tiny_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gen")
    ds = write_tiny_dataset(root / "ds")
    train(ds.root, root / "run", tiny_config(steps=3))
    return root / "run"


def _arrays(ds: Dataset) -> list[np.ndarray]:
    return [np.load(ds.item_path(r)) for r in ds.rows]


def test_sample_set_is_valid_and_has_the_conditions_asked(run: Path, tmp_path: Path) -> None:
    out = generate(run, tmp_path / "s", n=5, conditions=["label=left"], steps=3, guidance=1.5, seed=4, batch_size=2)
    back = Dataset.read(out.root)  # validates dataset.json, manifest and every file
    assert back.info.splits == {"synthetic": 5} and [c.name for c in back.info.conditions] == ["label", "age"]
    assert [r["label"] for r in back.rows] == ["left"] * 5
    ages = [float(r["age"]) for r in back.rows]
    assert all(0 <= a <= 100 for a in ages) and len(set(ages)) == 5  # unset continuous: drawn per item
    assert [int(r["seed"]) for r in back.rows] == [item_seed(4, i) for i in range(5)]
    for r in back.rows:
        assert (back.root / r["png"]).is_file() and (back.root / r["nifti"]).is_file()
        assert r["split"] == "synthetic" and r["subject"] == r["id"]
    g = back.info.generator
    assert g is not None and (g["sampler"], g["steps"], g["guidance"], g["seed"]) == ("dpm++", 3, 1.5, 4)
    assert g["checkpoint"]["sha256"] == sha256_file(run / "weights" / "diffusion-ema.safetensors")
    assert g["run"] == str(run.resolve())


@pytest.mark.parametrize("sampler", ["dpm++", "ddpm"])
def test_image_i_does_not_depend_on_the_batch(run: Path, tmp_path: Path, sampler: str) -> None:
    kw = {"n": 3, "conditions": ["label=right"], "steps": 3, "seed": 1, "sampler": sampler, "formats": ()}
    one = generate(run, tmp_path / "b1", batch_size=1, **kw)
    three = generate(run, tmp_path / "b3", batch_size=3, **kw)
    for a, b in zip(_arrays(one), _arrays(three), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    other = generate(run, tmp_path / "seed2", batch_size=3, **{**kw, "seed": 2})
    assert not np.allclose(_arrays(other)[0], _arrays(three)[0], atol=1e-3)


def test_minibatch_entry_matches_the_api(run: Path, tmp_path: Path) -> None:
    from imgsynth.contracts import Condition

    conds = [Condition(name="label", type="categorical", categories=["left", "right"]),
             Condition(name="age", type="continuous", range=(0.0, 100.0))]
    requests = plan(conds, 4, {"label": "right"}, seed=9)
    results = run_minibatches(
        lambda batch: generate_items(batch, run_dir=str(run), out_dir=str(tmp_path / "mb"),
                                     settings=SampleSettings(steps=3, formats=())),
        requests, batch_size=3)
    assert [r.error for r in results] == [None] * 4
    api = generate(run, tmp_path / "api", n=4, conditions={"label": "right"}, steps=3, seed=9, formats=())
    for res, row in zip(results, api.rows, strict=True):
        np.testing.assert_allclose(np.load(tmp_path / "mb" / res.row["path"]), np.load(api.item_path(row)), atol=1e-5)


def test_cli_generate_and_its_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["generate", str(run), str(out), "--n", "2", "--condition", "label=right", "--condition", "age=40",
                 "--sampler", "ddim", "--steps", "2", "--seed", "7", "--formats", "png"]) == 0
    ds = Dataset.read(out)
    assert [(r["label"], float(r["age"])) for r in ds.rows] == [("right", 40.0)] * 2 and "nifti" not in ds.rows[0]
    capsys.readouterr()
    for args, message in [
        (["--condition", "sex=f"], "'sex' is not a condition of this model"),
        (["--condition", "label=middle"], "'middle' is not a category of 'label'"),
        (["--condition", "age=140"], "outside the trained range"),
        (["--sampler", "euler"], "--sampler 'euler' is not available"),
    ]:
        assert main(["generate", str(run), str(tmp_path / "bad"), "--n", "1", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert main(["generate", str(tmp_path / "no-run"), str(tmp_path / "x"), "--n", "1"]) == 1
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(UsageError, match="must not lie inside the run folder"):
        generate(run, run / "samples" / "x", n=1)


def test_defaults_are_recorded_as_used(run: Path) -> None:
    from imgsynth.generate import load_generator

    gen = load_generator(run, "cpu")
    assert gen.resolve_settings(None, None, None) == ("dpm++", 4, 2.0)  # the config's noise.steps / guidance
    assert gen.resolve_settings("ddpm", None, 1.0) == ("ddpm", 100, 1.0)  # DDPM: every training timestep
    with pytest.raises(UsageError, match="unknown sampler 'euler'"):
        gen.resolve_settings("euler", None, None)
