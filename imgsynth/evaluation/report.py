"""``report.html``: one self-contained page (inline CSS, base64 PNG, inline SVG; nothing fetched).

Sections: summary of headline numbers, warnings, metric tables with floors and intervals, real vs
synthetic image grids, intensity histograms in physical units, the closest synthetic/training
pairs, downstream and reconstruction tables, and the recipe of every number. All text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgsynth.contracts import Metric, Report
from imgsynth.utils.io import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.4em .8em;margin:.3em 0}
.flag{color:#b00020;font-weight:bold} .muted{color:#666;font-size:.9em}
.grid{display:flex;gap:2em;flex-wrap:wrap} figure{margin:0} figcaption{font-size:.9em;color:#444}
.pairs td{text-align:center} img{image-rendering:pixelated}
details pre{white-space:pre-wrap;font-size:.8em;background:#f8f8f8;padding:.6em}
"""

HEADLINE = ("FID", "KID", "FID_2.5d", "KID_2.5d", "FD_domain", "KD_domain", "FD_medicalnet", "precision.domain", "recall.domain",
            "diversity.ms_ssim", "memorization.fraction", "memorization.nn_distance_ratio", "downstream.tstr",
            "downstream.trtr", "downstream.ratio", "reconstruction.ssim", "reconstruction.psnr")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    a = abs(value)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _to_uint8(img2d: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    return (np.clip((img2d - lo) / max(hi - lo, 1e-12), 0, 1) * 255).round().astype(np.uint8)


def _views(item: np.ndarray) -> list[np.ndarray]:
    """2D: the image (first channel); 3D: central slices across D, H, W."""
    x = item[0]
    if x.ndim == 2:
        return [x]
    d, h, w = x.shape
    return [x[d // 2], x[:, h // 2], x[:, :, w // 2]]


def _tile(items: list[np.ndarray], window: tuple[float, float], cols: int = 8, pad: int = 2) -> np.ndarray:
    views = [np.concatenate([_to_uint8(v, window) for v in _views(it)], axis=1) if it.ndim == 4 else
             _to_uint8(_views(it)[0], window) for it in items]
    if not views:
        return np.zeros((8, 8), np.uint8)
    h = max(v.shape[0] for v in views)
    w = max(v.shape[1] for v in views)
    rows = math.ceil(len(views) / cols)
    canvas = np.full((rows * (h + pad) + pad, min(cols, len(views)) * (w + pad) + pad), 255, np.uint8)
    for k, v in enumerate(views):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + v.shape[0], pad + c * (w + pad) : pad + c * (w + pad) + v.shape[1]] = v
    return canvas


def png_data_uri(array: np.ndarray, min_width: int = 256) -> str:
    img = Image.fromarray(array)
    scale = max(1, min(8, min_width // max(1, array.shape[1])))
    if scale > 1:
        img = img.resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(array: np.ndarray, alt: str, min_width: int = 256) -> str:
    return f'<img src="{png_data_uri(array, min_width)}" alt="{esc(alt)}">'


def svg_histogram(hist: dict[str, Any], width: int = 640, height: int = 260) -> str:
    """Fraction of values per bin (log scale) for real held-out, real train and synthetic (inline SVG)."""
    edges = np.asarray(hist["edges"], dtype=float)
    centres = 0.5 * (edges[:-1] + edges[1:])
    widths = np.diff(edges)
    series = [("real_test", "#1f77b4", "real held-out"), ("real_train", "#7fb8e0", "real train"), ("synthetic", "#d62728", "synthetic")]
    floor_log = -5.0  # fractions below 1e-5 sit on the axis
    logs = {k: np.log10(np.clip(np.asarray(hist[k]) * widths, 10**floor_log, None)) for k, _, _ in series}
    left, bottom, right, upper = 50, height - 35, width - 10, 10

    def px(xv: float, yv: float) -> tuple[float, float]:
        x = left + (xv - edges[0]) / max(edges[-1] - edges[0], 1e-12) * (right - left)
        return x, bottom - (yv - floor_log) / -floor_log * (bottom - upper)

    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="intensity histogram">',
             f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
             f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{bottom}" stroke="#333"/>']
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = edges[0] + frac * (edges[-1] - edges[0])
        x, _ = px(value, floor_log)
        parts.append(f'<text x="{x:.1f}" y="{bottom + 15}" font-size="11" text-anchor="middle">{esc(fmt(float(value)))}</text>')
    for power in range(int(floor_log), 1):
        _, y = px(edges[0], power)
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">1e{power}</text>')
    parts.append(f'<text x="{(left + right) / 2}" y="{height - 3}" font-size="12" text-anchor="middle">'
                 f'value in {esc(hist.get("unit", ""))} (y: fraction of values per bin, log scale)</text>')
    for k, (key, colour, label) in enumerate(series):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (px(c, v) for c, v in zip(centres, logs[key], strict=True)))
        dash = ' stroke-dasharray="4 3"' if key == "real_train" else ""
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{pts}"/>')
        parts.append(f'<text x="{right - 110}" y="{upper + 14 + 14 * k}" font-size="12" fill="{colour}">{esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _metric_row(name: str, m: Metric) -> str:
    ci = f"[{fmt(m.ci[0])}, {fmt(m.ci[1])}]" if m.ci else ""
    r = m.recipe
    n = r.get("n_synthetic", r.get("n", r.get("n_test", "")))
    ext = r.get("extractor") or r.get("method") or r.get("network") or r.get("weights", "")
    if name.startswith("downstream"):
        ext = f"{r.get('network')} predicting '{r.get('condition')}' ({r.get('metric')}, {r.get('seeds')} seeds)"
    sha = r.get("weights_sha256")
    ext_text = f"{ext} (sha256 {str(sha)[:12]}...)" if sha else str(ext)
    note = f'<div class="muted">{esc(m.note)}</div>' if m.note else ""
    return (f"<tr><td>{esc(name)}</td><td class='num'>{esc(fmt(m.value))}</td><td class='num'>{esc(ci)}</td>"
            f"<td class='num'>{esc(fmt(m.floor))}</td><td class='num'>{esc(n)}</td><td>{esc(ext_text)}{note}</td></tr>")


def _table(metrics: dict[str, Metric], names: list[str]) -> str:
    if not names:
        return "<p class='muted'>none</p>"
    head = "<tr><th>metric</th><th>value</th><th>95% interval</th><th>floor (real vs real)</th><th>N</th><th>recipe</th></tr>"
    return "<table>" + head + "".join(_metric_row(n, metrics[n]) for n in names) + "</table>"


def build_html(report: Report, visuals: Any) -> str:
    m = report.metrics
    inputs = visuals.inputs
    cfg = report.extra
    window = (-1.0, 1.0)
    if inputs.info.intensity.kind == "none":
        lo, hi = np.percentile(inputs.real_train.images, [0.5, 99.5])
        window = (float(lo), float(hi))
    n_grid = report.inputs["config"]["report"]["grid_items"]
    body = [f"<h1>imgsynth evaluation report</h1><p class='muted'>real: {esc(report.inputs['real'])}<br>"
            f"synthetic: {esc(report.inputs['synthetic'])}<br>run: {esc(report.inputs.get('run') or '-')}<br>"
            f"counts: {esc(json.dumps(report.inputs['counts']))}; config hash {esc(report.inputs['config_hash'])}; "
            f"seed {esc(report.inputs['seed'])}; extractors {esc(', '.join(report.inputs['extractors']))}</p>"]
    body.append("<h2>Summary</h2>" + _table(m, [n for n in HEADLINE if n in m]))
    if report.warnings:
        body.append("<h2>Notes and warnings</h2>" + "".join(f"<div class='warn'>{esc(w)}</div>" for w in report.warnings))
    groups = [
        ("Feature-space distances", lambda n: n.split(".")[0][:2] in ("FI", "FD", "KI", "KD") or n.startswith(("precision", "recall"))),
        ("Diversity", lambda n: n.startswith("diversity")),
        ("Memorization", lambda n: n.startswith("memorization")),
        ("Physical validators", lambda n: n.startswith("validators")),
        ("Downstream (train on synthetic / real, test on real)", lambda n: n.startswith("downstream")),
        ("Autoencoder reconstruction (--run)", lambda n: n.startswith("reconstruction")),
    ]
    for title, pred in groups:
        names = [n for n in m if pred(n)]
        if names:
            body.append(f"<h2>{esc(title)}</h2>" + _table(m, names))
        if title.startswith("Memorization") and visuals.closest:
            body.append(_pairs(visuals, window))
        if title.startswith("Physical") and visuals.histograms:
            body.append(f"<h3>Intensity histograms in {esc(visuals.histograms.get('unit', ''))}</h3>" + svg_histogram(visuals.histograms))
    real_items = list(inputs.real_test.images[:n_grid])
    syn_items = list(inputs.synthetic.images[:n_grid])
    planes = " (central slices across D, H, W)" if inputs.spatial_dims == 3 else ""
    body.append("<h2>Images" + esc(planes) + "</h2><div class='grid'>"
                f"<figure>{_img(_tile(real_items, window), 'real held-out images')}<figcaption>real held-out (first {len(real_items)})</figcaption></figure>"
                f"<figure>{_img(_tile(syn_items, window), 'synthetic images')}<figcaption>synthetic (first {len(syn_items)})</figcaption></figure></div>")
    if visuals.reconstructions is not None:
        x, x_hat = visuals.reconstructions
        body.append("<h3>Reconstructions</h3><div class='grid'>"
                    f"<figure>{_img(_tile(list(x), window), 'originals')}<figcaption>real held-out</figcaption></figure>"
                    f"<figure>{_img(_tile(list(x_hat), window), 'reconstructions')}<figcaption>autoencoder reconstruction</figcaption></figure></div>")
    recipes = {name: metric.model_dump(mode="json") for name, metric in m.items()}
    body.append("<h2>Recipes</h2><details><summary>every metric with its recipe (as in report.json)</summary><pre>"
                + esc(json.dumps(recipes, indent=1, default=str)) + "</pre></details>")
    body.append("<details><summary>inputs and configuration</summary><pre>" + esc(json.dumps(report.inputs, indent=1, default=str))
                + "</pre></details>")
    timings = cfg.get("timings_s", {})
    body.append(f"<p class='muted'>timings (s): {esc(json.dumps(timings))}</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>imgsynth evaluation report</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def _pairs(visuals: Any, window: tuple[float, float]) -> str:
    inputs = visuals.inputs
    rows = ["<h3>Closest synthetic / training pairs</h3><table class='pairs'><tr><th>synthetic</th><th>nearest real train</th>"
            "<th>RMS distance</th><th>SSIM</th><th>alignment</th><th>flag</th></tr>"]
    for p in visuals.closest:
        s = _tile([inputs.synthetic.images[p["synthetic"]]], window, cols=1)
        t = _tile([inputs.real_train.images[p["train"]]], window, cols=1)
        flag = "<span class='flag'>likely copy</span>" if p["flagged"] else ""
        rows.append(f"<tr><td>{_img(s, 'synthetic', 96)}<div class='muted'>{esc(p['synthetic_id'])}</div></td>"
                    f"<td>{_img(t, 'train', 96)}<div class='muted'>{esc(p['train_id'])}</div></td>"
                    f"<td class='num'>{esc(fmt(p['distance']))}</td><td class='num'>{esc(fmt(p['ssim']))}</td>"
                    f"<td>{esc(p['alignment'])}</td><td>{flag}</td></tr>")
    return "".join(rows) + "</table>"


def write_html(out_dir: str | Path, report: Report, visuals: Any) -> Path:
    return atomic_write_text(Path(out_dir) / "report.html", build_html(report, visuals))
