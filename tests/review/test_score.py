"""Scoring returned answers: figures against scikit-learn / hand counts, and every answer-file error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from imgsynth.cli import main
from imgsynth.contracts import AnswerRow, KeyRow, write_answers, write_key
from imgsynth.errors import ContractError, UsageError
from imgsynth.review import score_review, stats
from imgsynth.review.config import ReviewScoreConfig

CASES = ["C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"]
TRUTH = ["real"] * 4 + ["synthetic"] * 4
# reader -> (answer, confidence, quality) per case
ANSWERS = {
    "R01": [("real", 5, 4), ("real", 4, 4), ("synthetic", 2, 3), ("real", 3, 5),
            ("synthetic", 4, 2), ("synthetic", 5, 3), ("real", 2, 2), ("synthetic", 3, 3)],
    "R02": [("real", 3, 4), ("real", 2, 5), ("real", 4, 4), ("real", 5, 4),
            ("real", 1, 3), ("synthetic", 1, 2), ("real", 3, 4), ("real", 2, 3)],
}


def write_study(tmp: Path, readers: dict[str, list[tuple[str, int, int]]] = ANSWERS) -> tuple[Path, list[Path]]:
    key = tmp / "key.csv"
    write_key(key, [KeyRow(reader=r, case=c, truth=t, dataset="ds-" + t, item=c)  # type: ignore[arg-type]
                    for r in readers for c, t in zip(CASES, TRUTH, strict=True)])
    files = []
    for r, rows in readers.items():
        path = tmp / f"answers-{r}.csv"
        write_answers(path, [AnswerRow(reader=r, case=c, answer=a, confidence=cf, quality=q,  # type: ignore[arg-type]
                                       comment=f"note, \"{c}\"" if c == "C3" else "", seconds=12.5)
                             for c, (a, cf, q) in zip(CASES, rows, strict=True)])
        files.append(path)
    return key, files


def expected(rows: list[tuple[str, int, int]]) -> dict[str, float]:
    truth = np.array([t == "synthetic" for t in TRUTH])
    call = np.array([a == "synthetic" for a, _, _ in rows])
    conf = np.array([c for _, c, _ in rows])
    qual = np.array([q for _, _, q in rows], dtype=float)
    return {
        "accuracy": float(np.mean(truth == call)),
        "sensitivity": float(np.mean(call[truth])),
        "specificity": float(np.mean(~call[~truth])),
        "auc": float(roc_auc_score(truth, np.where(call, conf, -conf))),
        "q_real": float(qual[~truth].mean()),
        "q_syn": float(qual[truth].mean()),
    }


def test_figures_match_hand_counts_and_scikit_learn(tmp_path: Path) -> None:
    key, files = write_study(tmp_path)
    result = score_review(key, files, tmp_path / "out", ReviewScoreConfig(bootstrap=300, seed=1))
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res == json.loads(json.dumps(result.results))
    assert result.exit_code == 0 and res["readers"] == ["R01", "R02"]
    assert res["n_cases"] == {"real": 4, "synthetic": 4} and res["n_answers"] == 16
    r1, r2 = res["per_reader"]["R01"], res["per_reader"]["R02"]
    assert (r1["accuracy"]["value"], r1["sensitivity"]["value"], r1["specificity"]["value"]) == (0.75, 0.75, 0.75)
    assert (r2["accuracy"]["value"], r2["sensitivity"]["value"], r2["specificity"]["value"]) == (0.625, 0.25, 1.0)
    for rd, m in (("R01", r1), ("R02", r2)):
        e = expected(ANSWERS[rd])
        assert m["auc"]["value"] == pytest.approx(e["auc"], abs=1e-12)
        assert m["quality"]["real"]["value"] == pytest.approx(e["q_real"])
        assert m["quality"]["synthetic"]["value"] == pytest.approx(e["q_syn"])
        assert m["quality"]["difference"]["value"] == pytest.approx(e["q_syn"] - e["q_real"])
        lo, hi = stats.wilson_ci(round(e["accuracy"] * 8), 8, 0.95)
        assert m["accuracy"]["ci"] == [pytest.approx(lo), pytest.approx(hi)]
        assert m["accuracy"]["p_value"] == pytest.approx(stats.binom_p(round(e["accuracy"] * 8), 8))
        assert m["seconds_median"] == 12.5
    pooled = res["pooled"]
    all_rows = ANSWERS["R01"] + ANSWERS["R02"]
    truth = np.array([t == "synthetic" for t in TRUTH * 2])
    call = np.array([a == "synthetic" for a, _, _ in all_rows])
    conf = np.array([c for _, c, _ in all_rows])
    assert pooled["accuracy"]["value"] == pytest.approx(11 / 16)
    assert pooled["auc"]["value"] == pytest.approx(roc_auc_score(truth, np.where(call, conf, -conf)), abs=1e-12)
    lo, hi = pooled["accuracy"]["ci"]
    assert 0.0 <= lo < 11 / 16 < hi <= 1.0
    # Agreement: Cohen's for the pair (scikit-learn), Fleiss' from the count table.
    a1 = [a for a, _, _ in ANSWERS["R01"]]
    a2 = [a for a, _, _ in ANSWERS["R02"]]
    agr = res["agreement"]
    assert agr["n_cases"] == 8
    assert agr["cohen_kappa"]["value"] == pytest.approx(cohen_kappa_score(a1, a2), abs=1e-12)
    counts = np.array([[(x == "real") + (y == "real"), (x == "synthetic") + (y == "synthetic")] for x, y in zip(a1, a2, strict=True)])
    assert agr["fleiss_kappa"]["value"] == pytest.approx(stats.fleiss_kappa(counts), abs=1e-12)
    # Reports and the per-case table.
    md = (tmp_path / "out" / "report.md").read_text()
    assert "0.688" in md and "0.750" in md and "Cohen's kappa R01/R02" in md
    cases = (tmp_path / "out" / "cases.csv").read_text().splitlines()
    assert cases[0] == "case,truth,dataset,item,readers,called_synthetic,mean_confidence,mean_quality,comments"
    c3 = next(line for line in cases if line.startswith("C3,"))
    assert ",0.5," in c3 and 'R01: note, ""C3""' in c3


def test_three_readers_fleiss_and_report_escapes_markup(tmp_path: Path) -> None:
    readers = dict(ANSWERS)
    readers["<script>alert(1)</script>"] = [("synthetic", 3, 3)] * 4 + [("synthetic", 4, 2)] * 4
    key, files = write_study(tmp_path, readers)
    res = score_review(key, files, tmp_path / "out", ReviewScoreConfig(bootstrap=200)).results
    calls = [[a for a, _, _ in readers[r]] for r in readers]
    counts = np.array([[sum(c[i] == cat for c in calls) for cat in ("real", "synthetic")] for i in range(8)])
    assert res["agreement"]["fleiss_kappa"]["value"] == pytest.approx(stats.fleiss_kappa(counts), abs=1e-12)
    assert len(res["agreement"]["pairwise_cohen_kappa"]) == 3 and "cohen_kappa" not in res["agreement"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def _answers(path: Path, rows: list[tuple[str, str]]) -> Path:
    write_answers(path, [AnswerRow(reader=r, case=c, answer="real", confidence=3, quality=3, seconds=1.0)
                         for r, c in rows])
    return path


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("R01", c) for c in CASES[:-1]], "reader R01 left 1 of 8 case(s) unanswered (C8); give every reader"),
        ([("R01", c) for c in CASES] + [("R01", "C2")], "answer 9: second answer of reader R01 to case C2"),
        ([("R09", "C1")], "answer 1: reader 'R09' is not in key.csv (its readers: R01, R02)"),
        ([("R01", "ZZZZZ")], "answer 1: case 'ZZZZZ' is not one of reader R01's cases in key.csv"),
    ],
)
def test_answers_not_matching_the_key_one_line_errors(tmp_path: Path, rows: list[tuple[str, str]], message: str) -> None:
    key, files = write_study(tmp_path)
    bad = _answers(tmp_path / "bad.csv", rows)
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        score_review(key, [bad, files[1]], tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_reader_and_allow_incomplete(tmp_path: Path) -> None:
    key, files = write_study(tmp_path)
    with pytest.raises(ContractError, match="no answers from reader R02 in the files given"):
        score_review(key, files[:1], tmp_path / "out")
    partial = _answers(tmp_path / "p.csv", [("R02", c) for c in CASES[:6]])
    result = score_review(key, [files[0], partial], tmp_path / "out",
                          ReviewScoreConfig(bootstrap=0, allow_incomplete=True))
    assert result.exit_code == 3
    assert result.results["pooled"]["auc"]["ci"] is None and result.results["per_reader"]["R01"]["accuracy"]["ci"]
    assert "Pooled accuracy 0.714 (0.5 is chance)." in (tmp_path / "out" / "report.md").read_text()
    assert result.warnings == ["reader R02 left 2 of 8 case(s) unanswered (C7, C8)"]
    assert result.results["per_reader"]["R02"]["n"] == 6 and result.results["agreement"]["n_cases"] == 6
    assert "unanswered" in (tmp_path / "out" / "report.md").read_text()


def test_unusable_inputs(tmp_path: Path) -> None:
    key, files = write_study(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("reader,case,answer,confidence,quality,comment,seconds\n")
    with pytest.raises(ContractError, match="empty.csv: holds no answers"):
        score_review(key, [empty], tmp_path / "out")
    with pytest.raises(UsageError, match="give at least one answers.csv"):
        score_review(key, [], tmp_path / "out")
    with pytest.raises(UsageError, match="would be overwritten by the results"):
        score_review(key, [files[0], tmp_path / "cases.csv"], tmp_path)
    blank = tmp_path / "blank-key.csv"
    blank.write_text("reader,case,truth,dataset,item\n")
    with pytest.raises(ContractError, match="key.csv lists no case"):
        score_review(blank, files, tmp_path / "out")


def test_cli_score_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, files = write_study(tmp_path)
    out = tmp_path / "res"
    assert main(["review", "score", str(key), *map(str, files), str(out), "--bootstrap", "200"]) == 0
    assert "Pooled accuracy 0.688" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "report.html", "cases.csv"}
    assert main(["review", "score", str(key), str(out)]) == 2
    assert "needs KEY_CSV, at least one ANSWERS.csv and OUT_DIR" in capsys.readouterr().err
    assert main(["review", "score", str(key), str(files[0]), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no answers from reader R02" in err
    files[1].write_text(files[1].read_text().replace("R02,C1,real,3,4", "R02,C1,real,7,4"))
    assert main(["review", "score", str(key), *map(str, files), str(out)]) == 1
    assert "'confidence'" in capsys.readouterr().err


def test_output_folder_that_is_a_file_or_inside_readers_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, files = write_study(tmp_path)
    (tmp_path / "readers" / "R01").mkdir(parents=True)
    for out, message in [(key, "is a file, not a folder"), (files[0] / "x", "is a file, not a folder"),
                         (tmp_path / "readers" / "R01" / "res", "lies inside the reading packages")]:
        assert main(["review", "score", str(key), *map(str, files), str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "internal error" not in err
    assert not (tmp_path / "readers" / "R01" / "res").exists()
    assert main(["review", "score", str(key), *map(str, files), str(tmp_path / "o"), "--bootstrap", "100000000"]) == 2
    assert "'bootstrap'" in capsys.readouterr().err
