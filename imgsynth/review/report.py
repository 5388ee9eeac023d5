"""The short human report of a scored reader study, as Markdown and as self-contained HTML."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

Table = tuple[list[str], list[list[str]]]

HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _with_ci(m: dict[str, Any], digits: int = 3) -> str:
    text = _num(m.get("value"), digits)
    ci = m.get("ci")
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci and m.get("value") is not None else text


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def summary_sentence(results: dict[str, Any]) -> str:
    pooled = results["pooled"]
    acc = pooled["accuracy"]
    level = int(round(100 * results["settings"]["confidence_level"]))
    n_readers = len(results["readers"])
    head = (
        f"{n_readers} reader{'s' if n_readers != 1 else ''} rated {results['n_cases']['real']} real and "
        f"{results['n_cases']['synthetic']} synthetic cases ({results['n_answers']} answers). "
    )
    ci = acc.get("ci")
    if acc.get("value") is None:
        return head
    if not ci:
        return f"{head}Pooled accuracy {_with_ci(acc)} (0.5 is chance)."
    figure = f"Pooled accuracy {_with_ci(acc)} ({level}% CI; 0.5 is chance)"
    if ci[0] > 0.5:
        verdict = "readers told synthetic from real images better than chance."
    elif ci[1] < 0.5:
        verdict = "readers took synthetic images for real (and real for synthetic) more often than chance."
    else:
        verdict = "readers could not tell synthetic from real images better than chance."
    return f"{head}{figure}: {verdict}"


def tables(results: dict[str, Any]) -> list[tuple[str, str, Table]]:
    """(heading, explanation, table) sections shared by both renderings."""
    rows_sets = [(rd, m) for rd, m in results["per_reader"].items()]
    if len(rows_sets) > 1:
        rows_sets.append(("pooled", results["pooled"]))
    level = int(round(100 * results["settings"]["confidence_level"]))

    detect = (
        ["reader", "answers", "accuracy", "p (vs 0.5)", "sensitivity", "specificity", "AUC", "median s"],
        [[rd, str(m["n"]), _with_ci(m["accuracy"]), _p(m["accuracy"].get("p_value")), _with_ci(m["sensitivity"]),
          _with_ci(m["specificity"]), _with_ci(m["auc"]), _num(m["seconds_median"], 1)] for rd, m in rows_sets],
    )
    quality = (
        ["reader", "real", "synthetic", "synthetic - real", "p (Mann-Whitney)"],
        [[rd, _with_ci(m["quality"]["real"], 2), _with_ci(m["quality"]["synthetic"], 2),
          _with_ci(m["quality"]["difference"], 2), _p(m["quality"]["difference"].get("p_value"))]
         for rd, m in rows_sets],
    )
    agr = results["agreement"]
    agree_rows = []
    if "fleiss_kappa" in agr:
        agree_rows.append(["Fleiss' kappa (all readers)", _num(agr["fleiss_kappa"]["value"]), agr["fleiss_kappa"]["label"]])
        for pair, k in agr["pairwise_cohen_kappa"].items():
            agree_rows.append([f"Cohen's kappa {pair}", _num(k["value"]), k["label"]])
    agreement = (["statistic", "value", "Landis & Koch"], agree_rows or [[agr.get("note", "n/a"), "", ""]])
    return [
        ("Telling synthetic from real",
         f"Synthetic is the positive class. Brackets: {level}% confidence intervals (Wilson for one reader, "
         "bootstrap over cases for the pooled row); AUC from the call signed by its confidence.", detect),
        ("Agreement between readers",
         f"On the {agr.get('n_cases', 0)} case(s) every reader answered (real/synthetic calls).", agreement),
        ("Image quality (1-5)",
         f"Mean quality; brackets: {level}% bootstrap intervals over cases.", quality),
    ]


def markdown(results: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["# Reader study results", "", summary_sentence(results), ""]
    for heading, note, (head, rows) in tables(results):
        lines += [f"## {heading}", "", note, "", "| " + " | ".join(map(cell, head)) + " |",
                  "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
        lines.append("")
    if results["warnings"]:
        lines += ["## Warnings", ""] + [f"- {cell(w)}" for w in results["warnings"]] + [""]
    lines += ["Per-case figures: `cases.csv`; every number with its interval: `results.json`.", ""]
    return "\n".join(lines)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = html.escape
    out = ["<table><thead><tr>", *[f"<th>{esc(h)}</th>" for h in head], "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def html_report(results: dict[str, Any]) -> str:
    esc = html.escape
    body = [f"<h1>Reader study results</h1><p>{esc(summary_sentence(results))}</p>"]
    for heading, note, (head, rows) in tables(results):
        body.append(f"<h2>{esc(heading)}</h2><p class='note'>{esc(note)}</p>{_html_table(head, rows)}")
    if results["warnings"]:
        body.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in results["warnings"]) + "</ul>")
    body.append("<p class='note'>Per-case figures: cases.csv; every number with its interval: results.json.</p>")
    style = (
        "body{font:14px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;"
        "text-align:left}th{background:#f3f3f3}.note{color:#555}"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{esc(HTML_CSP, quote=False)}\">"
        f"<title>Reader study results</title><style>{style}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
