"""The reading package: a static folder that opens from a USB stick with no server and no network.

Layout of ``readers/<reader>/``::

    index.html      the page (strict Content-Security-Policy: only this folder's own files)
    app.js          viewer (window/level, zoom, pan, slices) and answer form
    style.css
    study.js        reader id, case list in this reader's order, window presets, encoding
    cases/<id>.js   one case each: its 16-bit pixels, base64 in a script (a page opened from
                    file:// cannot read back the pixels of an image file, a script it can)
    README.txt      how to read and return the answers
    dicom/          (optional) the same cases as one DICOM study: DICOMDIR + PT000000/ST000000/
                    SE00000k/IM..., series k = case k+1 of this reader's list

Case files are the same size for every case of a review and name nothing but the case id.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgsynth.review.images import DisplaySpec
from imgsynth.utils.io import atomic_write_text

PACKAGE_FORMAT = "imgsynth-review-package"
PACKAGE_VERSION = 1
ASSETS = ("app.js", "style.css")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'none'; font-src 'none'; media-src 'none'; object-src 'none'; frame-src 'none'; "
    "worker-src 'none'; base-uri 'none'; form-action 'none'"
)


def asset_text(name: str) -> str:
    return importlib.resources.files("imgsynth.review").joinpath("assets", name).read_text(encoding="utf-8")


def study_config(
    *,
    package_id: str,
    reader: str,
    case_ids: Sequence[str],
    labels: Mapping[str, Sequence[tuple[str, str]]],
    spec: DisplaySpec,
    title: str,
    instructions: str,
) -> dict[str, Any]:
    """What ``study.js`` gives the page (all of it shown as text, never as markup)."""
    return {
        "format": PACKAGE_FORMAT,
        "version": PACKAGE_VERSION,
        "package": package_id,
        "reader": reader,
        "title": title,
        "instructions": instructions,
        "spatial_dims": spec.spatial_dims,
        "shape": list(spec.shape),
        "spacing": list(spec.spacing),
        "unit": spec.unit,
        "dtype": spec.dtype,
        "slope": spec.encoding.slope,
        "intercept": spec.encoding.intercept,
        "range": list(spec.value_range),
        "presets": [{"name": p.name, "center": p.center, "width": p.width} for p in spec.presets],
        "cases": [{"id": c, "labels": [list(kv) for kv in labels.get(c, ())]} for c in case_ids],
    }


def _js_json(obj: Any) -> str:
    """JSON that is also safe JavaScript source (ASCII only, no '</' sequences)."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")


def case_script(case_id: str, stored: np.ndarray) -> str:
    """``cases/<id>.js``: the case's stored 16-bit values, little-endian, base64."""
    little = stored.astype(stored.dtype.newbyteorder("<"), copy=False)
    payload = {
        "id": case_id,
        "shape": [int(s) for s in stored.shape],
        "dtype": "int16" if stored.dtype.kind == "i" else "uint16",
        "data": base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii"),
    }
    return f"imgsynthCase({_js_json(payload)});\n"


def index_html(title: str, reader: str) -> str:
    template = asset_text("index.html")
    return (
        template.replace("{{CSP}}", html.escape(CSP, quote=False))
        .replace("{{TITLE}}", html.escape(title, quote=True))
        .replace("{{READER}}", html.escape(reader, quote=True))
    )


def readme_text(title: str, reader: str, n_cases: int, dicom: bool) -> str:
    lines = [
        title,
        "=" * min(len(title), 78),
        "",
        f"Reader {reader}: {n_cases} cases.",
        "",
        "1. Open index.html in a current browser (Chrome, Edge, Firefox or Safari). It needs no",
        "   network and no installation; the folder can stay on the USB stick.",
        "2. For each case choose real or synthetic, your confidence (1 = guess, 5 = certain) and",
        "   the image quality (1 = non-diagnostic, 5 = excellent). A comment is optional.",
        "   Mouse: drag = window/level, wheel = slices (3D), Ctrl+wheel = zoom, Shift+drag = pan.",
        "3. Answers are kept in this browser on this computer, also after closing it. When you are",
        "   done, press 'Export answers.csv' and send that file back.",
        "4. Exporting now and then is a good backup: on another computer, or if the browser forgot",
        "   your answers, press 'Import...' and choose your last answers.csv to continue.",
    ]
    if dicom:
        lines += [
            "",
            "The dicom/ folder holds the same cases as one DICOM study (a file-set with a DICOMDIR) to",
            "import into a PACS or open in a DICOM viewer: series k is case k of your list.",
        ]
    return "\n".join(lines) + "\n"


def write_static(
    reader_dir: Path, *, study: Mapping[str, Any], title: str, reader: str, n_cases: int, dicom: bool
) -> None:
    """Everything of a reader's package except the case files."""
    reader_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(reader_dir / "index.html", index_html(title, reader))
    for name in ASSETS:
        atomic_write_text(reader_dir / name, asset_text(name))
    atomic_write_text(reader_dir / "study.js", f"window.IMGSYNTH_STUDY = {_js_json(dict(study))};\n")
    atomic_write_text(reader_dir / "README.txt", readme_text(title, reader, n_cases, dicom))
