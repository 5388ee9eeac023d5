"""End-to-end: `imgsynth evaluate` on real PneumoniaMNIST / AdrenalMNIST3D folders writes both report files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from imgsynth.cli import main
from imgsynth.contracts import (
    Dataset,
    ModelInfo,
    RunFolder,
    read_report,
    save_item,
    write_dataset,
)
from imgsynth.errors import UsageError
from imgsynth.evaluation import evaluate, evaluate_batch

from .conftest import TINY, stack, write_synthetic


@pytest.fixture(scope="module")
def tiny_run(chest: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding a small (untrained) MONAI KL autoencoder, laid out as `train` writes it."""
    from monai.networks.nets import AutoencoderKL
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("run")
    ae = {"channels": [8, 8], "latent_channels": 2, "num_res_blocks": 1, "attention_levels": [False, False],
          "norm_num_groups": 4, "with_nonlocal_attn": False}
    run = RunFolder(root)
    run.create(config_yaml=yaml.safe_dump({"kind": "train", "model": {"family": "ldm", "spatial_dims": 2, "autoencoder": ae}}),
               dataset=chest.info, model=ModelInfo(family="ldm", spatial_dims=2, stages={}, config_hash="0"), provenance={})
    torch.manual_seed(0)
    net = AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8), latent_channels=2, num_res_blocks=1,
                        attention_levels=(False, False), norm_num_groups=4, with_encoder_nonlocal_attn=False,
                        with_decoder_nonlocal_attn=False)
    # Keys prefixed with the stage's module name, as the training loop saves them.
    save_file({f"autoencoder.{k}": v for k, v in net.state_dict().items()}, str(run.weights_path("autoencoder", ema=True)))
    return root


@pytest.fixture(scope="module")
def chest_eval(chest: Dataset, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """CLI run: synthetic = 3 planted training copies (exact, flipped, shifted) + perturbed val images."""
    tmp = tmp_path_factory.mktemp("chest-eval")
    train, val = stack(chest, "train"), stack(chest, "val")
    rng = np.random.default_rng(0)
    noisy = np.clip(val[:27] + rng.normal(0, 0.08, val[:27].shape), -1, 1)
    images = [train[0], train[1][..., ::-1], np.roll(train[2], 1, axis=1), *noisy]
    labels = [r["label"] for r in chest.split("train")[:3]] + [r["label"] for r in chest.split("val")[:27]]
    ids = [f"sample-{k}" for k in range(30)]
    ids[1] = "<b>copy&1</b>"  # text that must be escaped in the HTML
    syn = write_synthetic(tmp / "synthetic", chest, images, labels, ids)
    out = tmp / "evaluation"
    args = ["evaluate", "--real", str(chest.root), "--synthetic", str(syn.root), str(out), "--run", str(tiny_run),
            "--config", "evaluate_quick", "--set", f"features.domain.cache_dir={tmp / 'cache'}"]
    for s in TINY:
        args += ["--set", s]
    code = main(args)
    return out, code


def test_cli_writes_report_json_with_recipes_and_floors(chest_eval: tuple[Path, int]) -> None:
    out, code = chest_eval
    assert code == 0
    report = read_report(out)  # validates the contract
    m = report.metrics
    for name in ("FD_domain", "KD_domain", "precision.domain", "recall.domain", "diversity.ms_ssim", "memorization.fraction",
                 "memorization.nn_distance_ratio", "validators.intensity_w1", "downstream.tstr", "downstream.trtr",
                 "downstream.ratio", "downstream.mixed", "reconstruction.ssim", "reconstruction.ms_ssim", "reconstruction.psnr"):
        assert name in m, name
    fd = m["FD_domain"]
    assert fd.value is not None and fd.value >= 0 and fd.floor is not None and fd.ci is not None
    assert len(fd.recipe["weights_sha256"]) == 64 and fd.recipe["n_synthetic"] == 30 and fd.recipe["seed"] == 0
    assert fd.recipe["heldout_split"] == "test" and "resize" in fd.recipe and "preprocessing" in fd.recipe
    assert "FID" not in m and "KID" not in m  # no standard Inception weights: never called FID
    mem = m["memorization.fraction"]
    assert mem.value == pytest.approx(3 / 30) and mem.recipe["threshold"] > 0 and "quantile" in mem.recipe["method"]
    flagged = {f["synthetic"] for f in report.extra["memorization"]["flagged"]}
    assert flagged == {"sample-0", "<b>copy&1</b>", "sample-2"}
    assert m["downstream.ratio"].value == pytest.approx(m["downstream.tstr"].value / m["downstream.trtr"].value)
    assert m["diversity.ms_ssim"].note.startswith("MS-SSIM used 2 of 5 scales")
    assert m["reconstruction.ssim"].recipe["weights"] == "autoencoder-ema.safetensors"
    assert any("feature extractors used: domain" in w for w in report.warnings)
    assert any("biased upward" in w for w in report.warnings)  # small-N warning
    assert (out / "domain-encoder.safetensors").is_file()


def test_report_html_is_self_contained_and_escaped(chest_eval: tuple[Path, int]) -> None:
    out, _ = chest_eval
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<b>copy" not in text and "&lt;b&gt;copy&amp;1&lt;/b&gt;" in text
    for section in ("Summary", "Closest synthetic / training pairs", "Intensity histograms in", "Reconstructions", "Recipes"):
        assert section in text, section
    assert "<svg" in text and "likely copy" in text


def test_3d_evaluation_with_a_missing_test_split(adrenal: Dataset, tmp_path: Path) -> None:
    # A real dataset without a test split: the val split becomes the held-out set, and the report says so.
    rows = [r for r in adrenal.rows if r["split"] in ("train", "val")]
    real_rows = []
    for r in rows:
        rel = save_item(tmp_path / "real", r["path"], adrenal.load(r))
        real_rows.append({**r, "path": rel})
    real = write_dataset(tmp_path / "real", adrenal.info, real_rows)
    syn = write_synthetic(tmp_path / "syn", adrenal, list(stack(adrenal, "test")[:10]),
                          [r["label"] for r in adrenal.split("test")[:10]])
    (syn.root / syn.rows[9]["path"]).write_bytes(b"not an array")  # one unreadable item: listed, skipped, exit 3
    overrides = [*TINY, f"features.domain.cache_dir={tmp_path / 'cache'}", "features.domain.batch_size=8",
                 "memorization.max_shift=1", "downstream.max_train=8"]
    res = evaluate(real.root, syn.root, tmp_path / "out", "evaluate_quick", overrides=overrides)
    m = res.report.metrics
    assert res.exit_code == 3 and (tmp_path / "out" / "report.html").is_file()
    assert [x["id"] for x in res.report.extra["skipped"]] == ["sample-0009"] and res.report.inputs["counts"]["synthetic"] == 9
    assert any("no 'test' split" in w and "'val' split" in w for w in res.report.warnings)
    assert m["FD_domain"].recipe["heldout_split"] == "val" and m["FD_domain"].value is not None
    assert "3D CNN" in m["FD_domain"].recipe["extractor"]
    assert "2 of 5 scales" in m["diversity.ms_ssim"].note
    assert np.isfinite(m["memorization.nn_distance_ratio"].value)
    assert m["downstream.trtr"].recipe["train_sizes"] == {"tstr": 8, "trtr": 8, "mixed": 16}


def test_usage_errors_exit_2(chest: Dataset, adrenal: Dataset, tmp_path: Path) -> None:
    code = main(["evaluate", "--real", str(chest.root), "--synthetic", str(adrenal.root), str(tmp_path / "o")])
    assert code == 2
    code = main(["evaluate", "--real", str(chest.root), "--synthetic", str(chest.root), str(tmp_path / "o"),
                 "--set", "memorization.percentil=2"])
    assert code == 2
    with pytest.raises(UsageError, match="outside"):
        evaluate(chest.root, chest.root, chest.root / "evaluation", "evaluate_quick")
    results = evaluate_batch([{"real": chest.root, "synthetic": adrenal.root, "out_dir": tmp_path / "b"}])
    assert results[0]["status"] == "failed" and results[0]["exit_code"] == 2 and "3D" in results[0]["error"]


def test_dry_run_prints_the_resolved_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["evaluate", "--real", "r", "--synthetic", "s", str(tmp_path), "--config", "evaluate_quick", "--dry-run",
                 "--set", "downstream.seeds=2"])
    data = yaml.safe_load(capsys.readouterr().out)
    assert code == 0 and data["kind"] == "evaluate" and data["downstream"]["seeds"] == 2
    assert data["features"]["domain"]["steps"] == 150
    assert json.dumps(data)  # plain data
