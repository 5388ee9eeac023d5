"""The shipped action table is Table E.1-1 of the standard, freshly generated."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_keyword, dictionary_VR

from imgsynth.deid.profile import (
    CODE_MEANINGS,
    COMPOUND_ACTIONS,
    OPTION_CODES,
    TYPE_HINTS,
    Option,
    load_table,
)

REPO = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_deid_table", REPO / "scripts" / "gen_deid_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_table_matches_a_fresh_generation(shared_data: Path) -> None:
    gen = _generator()
    fresh = gen.render(gen.generate(shared_data / "dicom"))
    shipped = (REPO / "imgsynth" / "deid" / "profile_table.json").read_text(encoding="utf-8")
    assert shipped == fresh, "profile_table.json is stale: run python scripts/gen_deid_table.py"


def test_every_source_row_and_cell_is_shipped_verbatim(shared_data: Path) -> None:
    source = json.loads((shared_data / "dicom" / "confidentiality_profile_attributes.json").read_text())
    rows = {r.tag: r for r in load_table().rows}
    gen = _generator()
    assert len(source) == len(rows) == 621
    for src in source:
        row = rows[gen._pattern(src["tag"])]
        assert row.actions["basic"] == src["basicProfile"]
        for column, option in gen.OPTION_COLUMNS.items():
            assert row.actions.get(option) == src.get(column), (src["tag"], column)


def test_table_counts_match_the_standard_extract() -> None:
    """Counts stated in ../shared/data/dicom/README.md for DICOM 2024b."""
    rows = load_table().rows
    assert Counter(r.actions["basic"] for r in rows) == {
        "X": 384, "D": 92, "U": 54, "Z": 42, "X/D": 22, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2
    }
    assert Counter(r.actions.get("retain_long_full_dates") for r in rows)["K"] == 165
    assert Counter(r.actions.get("clean_descriptors") for r in rows)["C"] == 125
    assert Counter(r.actions.get("retain_uids") for r in rows)["K"] == 59


def test_keywords_and_vrs_agree_with_pydicom_dictionary() -> None:
    for row in load_table().rows:
        if row.tag == "private" or "x" in row.tag:
            continue
        tag = int(row.tag, 16)
        assert dictionary_keyword(tag) == row.keyword, row.tag
        assert dictionary_VR(tag) == row.vr, row.tag


def test_every_compound_row_has_a_type_hint() -> None:
    compound = {r.keyword for r in load_table().rows if r.actions["basic"] in COMPOUND_ACTIONS}
    assert compound <= set(TYPE_HINTS), sorted(compound - set(TYPE_HINTS))
    assert all(set(h.values()) <= {1, 2, 3} for h in TYPE_HINTS.values())


def test_method_codes_are_cid_7050() -> None:
    from pydicom.sr.codedict import codes

    cid = {c.value: c.meaning for c in codes.cid7050.concepts.values()}
    assert cid == CODE_MEANINGS
    assert set(OPTION_CODES.values()) <= set(cid)
    assert cid[OPTION_CODES[Option.RETAIN_SAFE_PRIVATE]] == "Retain Safe Private Option"
    assert cid[OPTION_CODES[Option.RETAIN_LONG_MODIFIED_DATES]].startswith("Retain Longitudinal Temporal Information Modified")


@pytest.mark.parametrize("tag,expected", [(0x60003000, "60xx3000"), (0x601E4000, "60xx4000"), (0x50020010, "50xxxxxx"),
                                          (0x00291010, "private"), (0x00100010, "00100010")])
def test_row_lookup_handles_repeating_groups_and_private(tag: int, expected: str) -> None:
    assert load_table().row(tag).tag == expected
