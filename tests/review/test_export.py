"""Reading-package export: layout, blinding, pixel fidelity, resume, errors, DICOM option."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pydicom.fileset
import pytest

from imgsynth.cli import main
from imgsynth.contracts import Dataset, Intensity, read_key
from imgsynth.errors import UsageError
from imgsynth.review import export_review, write_case_batch
from imgsynth.review.config import ReviewExportConfig
from imgsynth.review.export import CaseJob
from imgsynth.review.select import ID_ALPHABET, ID_LENGTH
from tests.conftest import require_tool

from .conftest import blobs_2d, make_dataset, minmax_intensity


def decode_case(path: Path) -> tuple[str, np.ndarray]:
    """(case id, stored values) of a ``cases/<id>.js`` file."""
    text = path.read_text(encoding="ascii")
    assert text.startswith("imgsynthCase(") and text.endswith(");\n")
    payload = json.loads(text[len("imgsynthCase(") : -3])
    dtype = "<i2" if payload["dtype"] == "int16" else "<u2"
    return payload["id"], np.frombuffer(base64.b64decode(payload["data"]), dtype=dtype).reshape(payload["shape"])


def study_of(reader_dir: Path) -> dict:
    text = (reader_dir / "study.js").read_text()
    return json.loads(text[len("window.IMGSYNTH_STUDY = ") : -2])


def cfg(**kw) -> ReviewExportConfig:  # noqa: ANN003
    return ReviewExportConfig(**{"n_real": 5, "n_synthetic": 5, "readers": 3, "seed": 7, **kw})


def test_layout_key_and_blinding(pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    out = tmp_path / "review"
    result = export_review(real, synth, out, cfg(show_conditions=["label"]))
    assert result.exit_code == 0 and result.readers == ["R01", "R02", "R03"]
    assert sorted(p.name for p in out.iterdir()) == ["key.csv", "readers", "review.json"]
    key = read_key(out / "key.csv")
    assert len(key) == 30
    real_ds, synth_ds = Dataset.read(real), Dataset.read(synth)
    test_ids = {r["id"] for r in real_ds.split("test")}
    orders = {}
    for reader in result.readers:
        rows = [k for k in key if k.reader == reader]
        orders[reader] = [k.case for k in rows]
        assert sum(k.truth == "real" for k in rows) == 5 and sum(k.truth == "synthetic" for k in rows) == 5
        assert {k.item for k in rows if k.truth == "real"} <= test_ids  # test split only
        rdir = out / "readers" / reader
        assert sorted(p.name for p in rdir.iterdir()) == ["README.txt", "app.js", "cases", "index.html", "study.js", "style.css"]
        study = study_of(rdir)
        assert [c["id"] for c in study["cases"]] == orders[reader] and study["reader"] == reader
        for c in study["cases"]:
            k = next(r for r in rows if r.case == c["id"])
            ds = real_ds if k.truth == "real" else synth_ds
            assert c["labels"] == [["label", next(r for r in ds.rows if r["id"] == k.item)["label"]]]
    # Same cases for every reader, each in its own random order; ids are random tokens.
    assert len({frozenset(o) for o in orders.values()}) == 1
    assert len({tuple(o) for o in orders.values()}) == 3
    assert all(re.fullmatch(f"[{ID_ALPHABET}]{{{ID_LENGTH}}}", c) for c in orders["R01"])
    # Blinding: every case file has the same size, no source path or item id leaks into a package.
    case_files = sorted((out / "readers").glob("*/cases/*.js"))
    assert len(case_files) == 30 and len({f.stat().st_size for f in case_files}) == 1
    assert len({f.stat().st_mtime_ns for f in (out / "readers").rglob("*")}) == 1
    for f in (out / "readers").rglob("*"):
        if f.is_file() and f.suffix != ".js" or f.name == "study.js":
            text = f.read_text()
            assert str(real) not in text and str(synth) not in text and "key.csv" not in text
    study = study_of(out / "readers" / "R01")
    assert set(study) == {"format", "version", "package", "reader", "title", "instructions", "spatial_dims", "shape",
                          "spacing", "unit", "dtype", "slope", "intercept", "range", "presets", "cases"}
    # Pixels: the stored values decode to the item's physical values, real and synthetic alike.
    for k in key[:10]:
        ds = real_ds if k.truth == "real" else synth_ds
        row = next(r for r in ds.rows if r["id"] == k.item)
        cid, stored = decode_case(out / "readers" / k.reader / "cases" / f"{k.case}.js")
        assert cid == k.case and stored.dtype == np.uint16
        physical = stored * study["slope"] + study["intercept"]
        np.testing.assert_allclose(physical, ds.info.intensity.to_physical(ds.load(row)[0]), atol=study["slope"])
    info = json.loads((out / "review.json").read_text())
    assert info["seed"] == 7 and info["counts"]["real_splits"] == {"test": 5} and info["skipped"] == []


def test_real_split_fallback_resume_and_conflicts(pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    out = tmp_path / "review"
    result = export_review(real, synth, out, cfg(n_real=10, readers=1))
    assert "real cases: the 'test' split could not provide 10 case(s); drew from test, train" in result.notes
    info = json.loads((out / "review.json").read_text())
    assert info["counts"]["real_splits"] == {"test": 8, "train": 2}
    stamp = (out / "key.csv").stat().st_mtime_ns
    again = export_review(real, synth, out, cfg(n_real=10, readers=1))
    assert again.already_done and (out / "key.csv").stat().st_mtime_ns == stamp
    unseeded = export_review(real, synth, out, cfg(n_real=10, readers=1, seed=None))
    assert unseeded.already_done and unseeded.seed == 7
    with pytest.raises(UsageError, match=r"other settings \(n_real\); packages may have been handed out"):
        export_review(real, synth, out, cfg(n_real=9, readers=1))


def test_interrupted_export_is_rebuilt_and_foreign_folders_refused(pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    out = tmp_path / "review"
    partial = tmp_path / ".review.partial"
    (partial / "readers" / "R01").mkdir(parents=True)
    (partial / "readers" / "R01" / "half.js").write_text("imgsynthCase(")
    out.mkdir()  # an empty folder is fine
    export_review(real, synth, out, cfg(readers=1))
    assert not partial.exists() and not (out / "readers" / "R01" / "half.js").exists()
    assert sorted(p.name for p in out.iterdir()) == ["key.csv", "readers", "review.json"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="exists and is not an empty folder or a review export"):
        export_review(real, synth, tmp_path / "other", cfg())
    (out / "review.json").write_text("{not json")
    with pytest.raises(UsageError, match="unreadable review.json"):
        export_review(real, synth, out, cfg(readers=1))


def test_builtin_review_config_loads() -> None:
    from imgsynth.config import load_config

    conf = load_config("review_turing")
    assert (conf.export.n_real, conf.export.readers, conf.export.dicom, conf.score.bootstrap) == (50, 3, True, 5000)


def test_export_errors_are_one_line_usage_errors(pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    with pytest.raises(UsageError, match=r"channel 1 does not exist \(real has 1, synthetic 1\)"):
        export_review(real, synth, tmp_path / "e", cfg(channel=1))
    with pytest.raises(UsageError, match="modality CT needs Hounsfield units"):
        export_review(real, synth, tmp_path / "f", cfg(modality="CT"))
    with pytest.raises(UsageError, match="has no item in splits val"):
        export_review(real, synth, tmp_path / "g", cfg(real_splits=["val"]))
    with pytest.raises(UsageError, match=r"need 11 synthetic case\(s\) but only 10 usable item\(s\) exist"):
        export_review(real, synth, tmp_path / "a", cfg(n_synthetic=11))
    with pytest.raises(UsageError, match="must lie outside the input dataset"):
        export_review(real, synth, real / "review", cfg())
    with pytest.raises(UsageError, match="--show-condition 'age' is not a categorical/continuous condition"):
        export_review(real, synth, tmp_path / "b", cfg(show_conditions=["age"]))
    big = make_dataset(tmp_path / "big", blobs_2d(6, 20, np.random.default_rng(0)), split="synthetic",
                       intensity=minmax_intensity())
    with pytest.raises(UsageError, match=r"real items are \[16, 16\] but synthetic items \[20, 20\]"):
        export_review(real, big.root, tmp_path / "c", cfg())
    other = make_dataset(tmp_path / "hu", blobs_2d(6, 16, np.random.default_rng(0)), split="synthetic",
                         intensity=Intensity(kind="minmax", low=0, high=1, unit="HU"))
    with pytest.raises(UsageError, match="unit '' differs from synthetic 'HU'"):
        export_review(real, other.root, tmp_path / "d", cfg())
    vol = make_dataset(tmp_path / "vol", np.zeros((2, 4, 4, 4), np.float32), split="synthetic",
                       intensity=minmax_intensity())
    with pytest.raises(UsageError, match="real dataset is 2D but synthetic is 3D"):
        export_review(real, vol.root, tmp_path / "h", cfg(n_synthetic=2))
    assert not any((tmp_path / n).exists() for n in "abcdefgh")
    assert not list(tmp_path.glob(".*.partial"))


def test_unreadable_item_is_skipped_and_reported(pair_2d: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    real, synth = pair_2d
    (real / "items" / "00002.npy").write_bytes(b"not an array")  # a test-split item
    out = tmp_path / "review"
    code = main(["review", "export", "--real", str(real), "--synthetic", str(synth), str(out), "--n-real", "8",
                 "--n-synthetic", "3", "--readers", "1", "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 3
    assert "wrote 1 reading package(s) of 11 cases" in captured.out and "drew from test, train" in captured.out
    assert "skipped item 00002:" in captured.err and "cannot read item" in captured.err
    key = read_key(out / "key.csv")
    assert "00002" not in {k.item for k in key if k.truth == "real"} and len(key) == 11
    assert json.loads((out / "review.json").read_text())["skipped"][0][0] == "00002"


def test_case_batch_entry_reports_failures_without_raising(pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    export_review(real, synth, tmp_path / "review", cfg(readers=1))
    ds = Dataset.read(real)
    from imgsynth.review import images

    spec = images.display_spec(ds.info, value_range=(0.0, 255.0))
    job = CaseJob(case_id="AAAAA", dataset_root=str(real), info=ds.info.model_dump(mode="json"), row=ds.rows[0],
                  spec=spec, reader_dirs=(str(tmp_path / "pkg"),))
    missing = dataclasses.replace(job, case_id="CCCCC", row={**ds.rows[1], "path": "items/none.npy"})
    ok, bad = write_case_batch([job, missing])
    assert ok.ok and ok.files == 1 and (tmp_path / "pkg" / "cases" / "AAAAA.js").is_file()
    assert not bad.ok and "cannot read item" in bad.error


def test_3d_ct_with_dicom_one_study_per_reader(pair_3d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_3d
    out = tmp_path / "review"
    export_review(real, synth, out, ReviewExportConfig(n_real=2, n_synthetic=2, readers=2, seed=3, dicom=True))
    key = read_key(out / "key.csv")
    study = study_of(out / "readers" / "R01")
    assert study["spatial_dims"] == 3 and study["unit"] == "HU" and study["dtype"] == "int16"
    assert study["shape"] == [12, 10, 6] and study["spacing"] == pytest.approx([2.5, 0.9, 0.8])  # axial slices
    assert [p["name"] for p in study["presets"]][:3] == ["Dataset", "Brain", "Subdural"]
    dciodvfy = require_tool("dciodvfy")

    def errors(path: Path) -> list[str]:
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        return [ln for ln in run.stderr.splitlines() if ln.startswith("Error")]

    studies = {}
    headers = {}
    for reader in ("R01", "R02"):
        rows = [k for k in key if k.reader == reader]
        media = out / "readers" / reader / "dicom"
        assert errors(media / "DICOMDIR") == []
        fileset = pydicom.fileset.FileSet(pydicom.dcmread(media / "DICOMDIR"))
        assert len(fileset) == 4 * 12
        assert str(fileset.ID) == f"REVIEW_{reader}"
        assert len(fileset.find_values("StudyInstanceUID")) == 1  # one study per reader
        uids = set()
        for pos, k in enumerate(rows, start=1):
            files = sorted((media / "PT000000" / "ST000000" / f"SE{pos - 1:06d}").iterdir())
            assert len(files) == 12
            for f in files if reader == "R01" else files[:1]:
                assert errors(f) == [], f
            ds = pydicom.dcmread(files[5])
            uids.add(ds.StudyInstanceUID)
            assert ds.SeriesNumber == pos and ds.SeriesDescription == f"REVIEW case {k.case}"
            assert ds.PatientName.family_name == "REVIEW" and "SYNTHETIC" not in str(ds.PatientName)
            _, stored = decode_case(out / "readers" / reader / "cases" / f"{k.case}.js")
            np.testing.assert_array_equal(ds.pixel_array, stored[ds.InstanceNumber - 1])
            headers.setdefault(k.truth, ds)
        assert len(uids) == 1
        studies[reader] = uids.pop()
    assert studies["R01"] != studies["R02"]
    # A real and a synthetic case carry the same header apart from identifiers and pixel statistics.
    differ = {"SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SeriesNumber", "SeriesDescription",
              "PixelData", "SmallestImagePixelValue", "LargestImagePixelValue"}
    a, b = headers["real"], headers["synthetic"]
    assert {e.keyword for e in a} == {e.keyword for e in b}
    assert [e.keyword for e in a if e.keyword not in differ and e.value != b[e.tag].value] == []


def test_medmnist_real_cases_keep_their_pixels(shared_data: Path, tmp_path: Path) -> None:
    """Real chest X-rays (PneumoniaMNIST, imported by the data stage) keep their exact uint8 values."""
    from imgsynth.data.medmnist import import_medmnist

    npz = shared_data / "medmnist" / "pneumoniamnist.npz"
    real = import_medmnist(npz, tmp_path / "real", size=28, max_per_split=6)
    synth = make_dataset(tmp_path / "synth", blobs_2d(4, 28, np.random.default_rng(2)), split="synthetic",
                         intensity=minmax_intensity(), categories=["normal", "pneumonia"], spacing=[1.0, 1.0])
    out = tmp_path / "review"
    export_review(real.root, synth.root, out, ReviewExportConfig(n_real=6, n_synthetic=4, readers=1, seed=0,
                                                                 show_conditions=["label"]))
    raw = np.load(npz)["test_images"]
    study = study_of(out / "readers" / "R01")
    reals = [k for k in read_key(out / "key.csv") if k.truth == "real"]
    assert len(reals) == 6 and all(k.item.startswith("pneumoniamnist-test-") for k in reals)
    for k in reals:
        _, stored = decode_case(out / "readers" / "R01" / "cases" / f"{k.case}.js")
        np.testing.assert_array_equal(np.rint(stored * study["slope"] + study["intercept"]), raw[int(k.item[-5:])])


def test_cli_export_with_config_file(pair_2d: tuple[Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    real, synth = pair_2d
    conf = tmp_path / "study.yaml"
    conf.write_text("kind: review\nexport:\n  n_real: 3\n  n_synthetic: 2\n  readers: 2\n  title: Chest study\n")
    out = tmp_path / "review"
    assert main(["review", "export", "--real", str(real), "--synthetic", str(synth), str(out), "--config", str(conf),
                 "--readers", "1", "--seed", "5"]) == 0
    assert "wrote 1 reading package(s) of 5 cases" in capsys.readouterr().out
    assert study_of(out / "readers" / "R01")["title"] == "Chest study"
    conf.write_text("kind: review\nexport:\n  n_reals: 3\n")
    assert main(["review", "export", "--real", str(real), "--synthetic", str(synth), str(tmp_path / "x"),
                 "--config", str(conf)]) == 2
    assert "did you mean 'export.n_real'" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "field"), [("--n-real=-1", "'n_real'"), ("--readers=100000", "'readers'"),
                                               ("--modality=XX", "'modality'")])
def test_out_of_range_options_are_one_line_usage_errors(
    pair_2d: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, field: str
) -> None:
    real, synth = pair_2d
    code = main(["review", "export", str(tmp_path / "out"), "--real", str(real), "--synthetic", str(synth), option])
    err = capsys.readouterr().err
    assert code == 2
    assert f"command line: {field}" in err and "internal error" not in err and "pydantic" not in err
    assert not (tmp_path / "out").exists()
