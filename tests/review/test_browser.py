"""A real headless Chromium reads a package from file://: answers, reload, export, score; viewer; XSS; CSP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgsynth.contracts import Dataset, read_answers, read_key
from imgsynth.review import export_review, score_review
from imgsynth.review.config import ReviewExportConfig, ReviewScoreConfig
from tests.conftest import require_tool

from .conftest import blobs_2d, make_dataset, minmax_intensity
from .test_export import decode_case, study_of

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require_tool("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page of a fresh browser context; records errors and every non-file request."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 800})
        self.context.route("http*://**", lambda route: route.abort())
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.remote: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: None if r.url.startswith(("file:", "blob:", "data:")) else self.remote.append(r.url))
        self.failures: dict[str, str] = {}
        self.page.on("requestfailed", lambda r: self.failures.__setitem__(r.url, r.failure or ""))

    def open(self, index: Path) -> Any:
        self.page.goto(index.as_uri())
        self.page.wait_for_function("() => window.imgsynthReady === true")
        self.page.wait_for_function("() => document.getElementById('loading').hidden")
        return self.page


def answer_plan(key_rows: list, reader: str) -> list[dict[str, Any]]:
    """Deterministic answers: correct for the first four cases, wrong after; confidence/quality cycle."""
    plan = []
    for i, k in enumerate(r for r in key_rows if r.reader == reader):
        wrong = {"real": "synthetic", "synthetic": "real"}
        plan.append({
            "case": k.case, "truth": k.truth, "answer": k.truth if i < 4 else wrong[k.truth],
            "confidence": i % 5 + 1, "quality": (i + 2) % 5 + 1,
            "comment": 'blurry, "odd" edges\nsecond line' if i == 1 else "",
        })
    return plan


def read_with_browser(session: Page, reader_dir: Path, plan: list[dict[str, Any]], tmp: Path) -> Path:
    page = session.open(reader_dir / "index.html")
    n = len(plan)
    assert page.text_content("#progress-text") == f"0 of {n} answered"
    for i, a in enumerate(plan):
        assert page.text_content("#case-title").endswith(a["case"]) and page.text_content("#case-title").startswith(
            f"Case {i + 1} of {n}")
        page.check(f"input[name=answer][value={a['answer']}]")
        page.check(f"input[name=confidence][value='{a['confidence']}']")
        if a["comment"]:
            page.fill("#comment", a["comment"])
        if i == 2:  # saving an incomplete answer is refused with a message
            page.click("#next")
            assert "Choose real or synthetic, confidence and quality first" in page.text_content("#form-status")
        page.check(f"input[name=quality][value='{a['quality']}']")
        page.click("#next")
        assert page.text_content("#progress-text") == f"{i + 1} of {n} answered"
    # Answers survive a reload (localStorage, keyed by this package).
    page.reload()
    page.wait_for_function("() => window.imgsynthReady === true")
    assert page.text_content("#progress-text") == f"{n} of {n} answered"
    page.click("#case-list li:nth-child(2) button")
    assert page.is_checked(f"input[name=answer][value={plan[1]['answer']}]")
    assert page.input_value("#comment") == plan[1]["comment"]
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    assert download.suggested_filename == "answers.csv"
    target = tmp / f"answers-{reader_dir.name}.csv"
    download.save_as(target)
    assert page.text_content("#export-status") == f"Exported {n} answers. Thank you!"
    return target


def test_read_reload_export_and_score(browser: Any, pair_2d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_2d
    out = tmp_path / "review"
    export_review(real, synth, out, ReviewExportConfig(n_real=3, n_synthetic=3, readers=2, seed=11))
    key = read_key(out / "key.csv")
    files, plans = [], {}
    session = Page(browser)
    for reader in ("R01", "R02"):
        plans[reader] = answer_plan(key, reader)
        files.append(read_with_browser(session, out / "readers" / reader, plans[reader], tmp_path))
    assert session.errors == [] and session.remote == []
    # A browser that lost its storage (another computer) continues from the exported file.
    fresh = Page(browser)
    page = fresh.open(out / "readers" / "R01" / "index.html")
    assert page.text_content("#progress-text") == "0 of 6 answered"
    page.set_input_files("#import-file", str(files[1]))  # R02's file: nothing of it belongs here
    page.wait_for_function("() => document.getElementById('export-status').textContent !== ''")
    assert page.text_content("#export-status") == "Restored 0 answers (6 rows of another reader or study ignored)."
    page.set_input_files("#import-file", str(files[0]))
    page.wait_for_function("() => document.getElementById('export-status').textContent.startsWith('Restored 6')")
    assert page.text_content("#progress-text") == "6 of 6 answered"
    page.click("#case-list li:nth-child(2) button")
    assert page.input_value("#comment") == plans["R01"][1]["comment"]
    fresh.context.close()
    # The exported files follow the answers contract and hold exactly what was clicked.
    for path, reader in zip(files, ("R01", "R02"), strict=True):
        rows = read_answers(path)
        assert [(r.reader, r.case, r.answer, r.confidence, r.quality, r.comment) for r in rows] == [
            (reader, a["case"], a["answer"], a["confidence"], a["quality"], a["comment"]) for a in plans[reader]]
        assert all(r.seconds >= 0 for r in rows)
    # Scoring gives the figures the plan implies: 4 of 6 correct per reader.
    res = score_review(out / "key.csv", files, tmp_path / "scores", ReviewScoreConfig(bootstrap=200)).results
    for reader in ("R01", "R02"):
        plan = plans[reader]
        syn = [a for a in plan if a["truth"] == "synthetic"]
        rea = [a for a in plan if a["truth"] == "real"]
        m = res["per_reader"][reader]
        assert m["accuracy"]["value"] == pytest.approx(4 / 6)
        assert m["sensitivity"]["value"] == pytest.approx(np.mean([a["answer"] == "synthetic" for a in syn]))
        assert m["specificity"]["value"] == pytest.approx(np.mean([a["answer"] == "real" for a in rea]))
        assert m["quality"]["real"]["value"] == pytest.approx(np.mean([a["quality"] for a in rea]))
    calls = {r: {a["case"]: a["answer"] for a in plans[r]} for r in plans}
    same = np.mean([calls["R01"][c] == calls["R02"][c] for c in calls["R01"]])
    assert res["agreement"]["n_cases"] == 6 and res["agreement"]["cohen_kappa"]["value"] is not None
    assert same == pytest.approx(np.mean([a["answer"] == calls["R02"][a["case"]] for a in plans["R01"]]))
    session.context.close()


def test_viewer_window_level_slices_and_pixels(browser: Any, pair_3d: tuple[Path, Path], tmp_path: Path) -> None:
    real, synth = pair_3d
    out = tmp_path / "review"
    export_review(real, synth, out, ReviewExportConfig(n_real=1, n_synthetic=1, readers=1, seed=2))
    rdir = out / "readers" / "R01"
    study = study_of(rdir)
    session = Page(browser)
    page = session.open(rdir / "index.html")
    assert page.text_content("#slice-text") == "slice 7 / 12"
    assert page.text_content("#wl-text") == "W 400 / L 40 HU"
    page.uncheck("#smooth")
    # Canvas pixels are the stored HU through the window: grey = clip((HU - (L - W/2)) / W) * 255.
    _, stored = decode_case(rdir / "cases" / f"{study['cases'][0]['id']}.js")
    geo = page.evaluate("({w: document.getElementById('canvas').width, h: document.getElementById('canvas').height})")
    rows, cols = stored.shape[1:]
    k = min(geo["w"] / (cols * study["spacing"][2]), geo["h"] / (rows * study["spacing"][1]))
    x0 = (geo["w"] - cols * study["spacing"][2] * k) / 2
    y0 = (geo["h"] - rows * study["spacing"][1] * k) / 2

    def grey(r: int, c: int) -> int:
        px = int(x0 + (c + 0.5) * study["spacing"][2] * k)
        py = int(y0 + (r + 0.5) * study["spacing"][1] * k)
        return page.evaluate(
            f"document.getElementById('canvas').getContext('2d').getImageData({px}, {py}, 1, 1).data[0]")

    for r, c in ((0, 0), (4, 3), (9, 5)):
        expect = np.clip((stored[6, r, c] - (40 - 200)) / 400 * 255, 0, 255)
        assert abs(grey(r, c) - expect) <= 1.0
    # Slices: keys and wheel; presets; drag changes window/level; zoom.
    page.keyboard.press("ArrowDown")
    assert page.text_content("#slice-text") == "slice 8 / 12"
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => document.getElementById('slice-text').textContent === 'slice 7 / 12'")
    assert page.text_content("#value-text").endswith(" HU") and "(" in page.text_content("#value-text")
    page.click("#presets button:has-text('Lung')")
    assert page.text_content("#wl-text") == "W 1500 / L -600 HU"
    assert abs(grey(4, 3) - np.clip((stored[6, 4, 3] - (-600 - 750)) / 1500 * 255, 0, 255)) <= 1.0
    # Drag right widens the window, drag down raises the level (400 px span the full range).
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 20, steps=4)
    page.mouse.up()
    assert page.text_content("#wl-text") == "W 1540 / L -580 HU"
    page.click("#zoom-in")
    page.keyboard.press("w")
    assert session.errors == [] and session.remote == []
    session.context.close()


def test_markup_in_study_text_shows_as_text_and_csp_blocks_remote(browser: Any, tmp_path: Path) -> None:
    evil = '<b>bold</b><img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    rng = np.random.default_rng(4)
    cats = [f"{evil} label", "normal"]
    real = make_dataset(tmp_path / "real", blobs_2d(3, 12, rng), split="test", intensity=minmax_intensity(),
                        categories=cats, labels=[cats[0]] * 3)
    synth = make_dataset(tmp_path / "synth", blobs_2d(3, 12, rng), split="synthetic", intensity=minmax_intensity(),
                         categories=cats, labels=[cats[0]] * 3)
    assert Dataset.read(real.root).rows[0]["label"] == cats[0]
    out = tmp_path / "review"
    export_review(real.root, synth.root, out, ReviewExportConfig(
        n_real=2, n_synthetic=2, readers=1, seed=0, title=f"Study {evil}", instructions=f"Read {evil} carefully",
        show_conditions=["label"]))
    session = Page(browser)
    page = session.open(out / "readers" / "R01" / "index.html")
    assert page.evaluate("window.__xss") is None
    assert page.text_content("#title") == f"Study {evil}"
    assert page.title() == f"Study {evil}"
    assert page.text_content("#instructions") == f"Read {evil} carefully"
    assert page.text_content("#labels dd") == cats[0] and page.text_content("#labels dt") == "label"
    assert page.evaluate("document.querySelectorAll('b, img, header script, main script').length") == 0
    # The Content-Security-Policy refuses anything from outside the package folder.
    csp = page.evaluate("document.querySelector('meta[http-equiv=Content-Security-Policy]').content")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    directive = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', e => resolve(e.effectiveDirective));
        const s = document.createElement('script'); s.src = 'https://cdn.example.com/x.js'; document.head.appendChild(s);
    })""")
    assert directive == "script-src-elem"
    page.wait_for_timeout(100)
    assert session.remote == ["https://cdn.example.com/x.js"], session.remote  # only the one injected above ...
    assert session.failures.get(session.remote[0]) == "csp", session.failures  # ... stopped by the CSP
    assert page.evaluate("window.__xss") is None
    raw = json.loads((out / "review.json").read_text())
    assert raw["settings"]["title"] == f"Study {evil}"  # kept verbatim for the study team
    session.context.close()
