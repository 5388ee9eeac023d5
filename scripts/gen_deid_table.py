"""Generate ``imgsynth/deid/profile_table.json`` from the DICOM standard's own tables.

Inputs (machine-readable extracts of the standard, see ``../shared/data/dicom/README.md``):

* ``confidentiality_profile_attributes.json``: PS3.15 Annex E Table E.1-1, one row per attribute
  (or attribute pattern) with the Basic Profile action and one column per option;
* ``attributes.json``: the PS3.6 data dictionary, for each attribute's keyword, VR and VM.

The output keeps every row and every cell of Table E.1-1 verbatim (actions such as ``X/Z/D`` are
resolved at run time, see ``imgsynth/deid/README.md``), adds the keyword, VR, VM and retired flag
from PS3.6, and records the SHA-256 of both sources. Usage::

    python scripts/gen_deid_table.py [--source ../shared/data/dicom] [--out imgsynth/deid/profile_table.json]
    python scripts/gen_deid_table.py --check     # exit 1 if the shipped table differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "dicom"
DEFAULT_OUT = REPO / "imgsynth" / "deid" / "profile_table.json"
TABLE_FILE = "confidentiality_profile_attributes.json"
DICT_FILE = "attributes.json"

# Table E.1-1 option columns (keys of the source file) -> option names used by imgsynth.
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
ACTIONS = {"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
_TAG = re.compile(r"^\(([0-9A-FX]{4}),([0-9A-FX]{4})\)$")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pattern(tag: str) -> str:
    """``(0010,0010)`` -> ``00100010``; ``(60XX,3000)`` -> ``60xx3000``; private row -> ``private``."""
    if tag == PRIVATE_ROW:
        return "private"
    m = _TAG.match(tag.strip().upper())
    if not m:
        raise ValueError(f"unexpected tag {tag!r} in Table E.1-1")
    return (m.group(1) + m.group(2)).lower()


def _dictionary_entry(pattern: str, dictionary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Keyword, VR, VM and retired flag from PS3.6 (pydicom's dictionary for the command group)."""
    entry = dictionary.get(pattern)
    if entry is not None:
        vr = entry["valueRepresentation"] or ""
        return {"keyword": entry["keyword"], "vr": vr, "vm": entry["valueMultiplicity"], "retired": entry["retired"] == "Y"}
    if pattern == "private":
        return {"keyword": "", "vr": "", "vm": "", "retired": False}
    if "x" not in pattern:  # the command group (0000,xxxx) is in PS3.7, not PS3.6; pydicom has both
        from pydicom.datadict import dictionary_keyword, dictionary_VM, dictionary_VR

        tag = int(pattern, 16)
        return {"keyword": dictionary_keyword(tag), "vr": dictionary_VR(tag), "vm": dictionary_VM(tag), "retired": False}
    return {"keyword": "", "vr": "", "vm": "", "retired": pattern.startswith("50")}


def generate(source: Path) -> dict[str, Any]:
    table_path, dict_path = source / TABLE_FILE, source / DICT_FILE
    rows_in = json.loads(table_path.read_text(encoding="utf-8"))
    dictionary = {_pattern(e["tag"]) if _TAG.match(e["tag"].upper()) else e["tag"]: e
                  for e in json.loads(dict_path.read_text(encoding="utf-8"))}
    rows = []
    for row in rows_in:
        pattern = _pattern(row["tag"])
        actions = {"basic": row["basicProfile"]}
        for column, option in OPTION_COLUMNS.items():
            if column in row:
                actions[option] = row[column]
        bad = [a for a in actions.values() if a not in ACTIONS]
        if bad:
            raise ValueError(f"row {row['tag']}: unknown action(s) {bad}")
        name = " ".join(row["name"].split("\n")[0].split())
        rows.append({"tag": pattern, "name": name, **_dictionary_entry(pattern, dictionary),
                     "in_std_iod": row["stdCompIOD"] == "Y", "actions": actions})
    rows.sort(key=lambda r: r["tag"])
    tags = [r["tag"] for r in rows]
    if len(set(tags)) != len(tags):
        raise ValueError("duplicate tags in Table E.1-1")
    return {
        "format": "imgsynth-deid-profile-table",
        "version": 1,
        "source": {
            "table": "DICOM PS3.15 Annex E Table E.1-1",
            "dictionary": "DICOM PS3.6 Table 6-1",
            "table_file": TABLE_FILE,
            "table_sha256": _sha256(table_path),
            "dictionary_file": DICT_FILE,
            "dictionary_sha256": _sha256(dict_path),
        },
        "options": OPTION_COLUMNS,
        "rows": rows,
    }


def render(table: dict[str, Any]) -> str:
    """Stable text: one row per line, so that a diff shows which attribute changed."""
    head = {k: v for k, v in table.items() if k != "rows"}
    lines = [json.dumps(r, sort_keys=False, ensure_ascii=False) for r in table["rows"]]
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
    return text + ',\n "rows": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the two standard JSON files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    if not (args.source / TABLE_FILE).is_file():
        print(f"error: {args.source / TABLE_FILE} not found; pass --source FOLDER", file=sys.stderr)
        return 2
    text = render(generate(args.source))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from a fresh generation'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(json.loads(text)['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
