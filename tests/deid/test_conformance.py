"""Conformance generated from Table E.1-1: every row, every option column, top level and nested.

One dataset holds every attribute the table names (each with a distinct value of its VR), once at
top level and once inside an item of a sequence the table does not list. It is de-identified under
the Basic Profile alone and under each option; each attribute must then show the action the table
asks for (compound actions resolved as documented, by the attribute's type in the IOD).
"""

from __future__ import annotations

import copy

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from imgsynth.deid.actions import Deidentifier
from imgsynth.deid.config import DeidConfig
from imgsynth.deid.dates import shift_value
from imgsynth.deid.profile import COMPOUND_ACTIONS, Option, load_table, resolve

from .conftest import KEY

NEST = 0x00082218  # Anatomic Region Sequence: not in Table E.1-1, so its items are walked as they are
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
ROWS = [r for r in load_table().rows if r.tag != "private" and "x" not in r.tag and not r.tag.startswith("0000")
        and not r.tag.startswith("0002")]


def _value(tag: int, vr: str) -> object:
    """A distinct, valid value of ``vr`` for ``tag`` that holds no date, phone or e-mail pattern."""
    word = f"V{tag:08X}"
    if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "UR"):
        return word
    return {
        "PN": f"{word}^Q", "DA": "20200115", "DT": "20200115101010", "TM": "101010", "AS": "045Y", "DS": "12.5",
        "IS": "42", "UI": f"1.2.826.0.1.3680043.9.{tag}", "US": 7, "SS": -7, "UL": 7, "SL": -7, "FL": 1.5, "FD": 1.5,
        "OB": b"\x01\x02", "OW": b"\x01\x02", "UN": b"\x01\x02",
    }[vr]


def _item() -> Dataset:
    item = Dataset()
    item.CodeValue = "CV1"
    item.CodingSchemeDesignator = "DCM"
    return item


def _fill(ds: Dataset) -> None:
    for row in ROWS:
        tag = int(row.tag, 16)
        value = Sequence([_item()]) if row.vr == "SQ" else _value(tag, row.vr)
        ds.add(DataElement(tag, row.vr, value))


@pytest.fixture(scope="module")
def source() -> Dataset:
    ds = Dataset()
    _fill(ds)
    nested = Dataset()
    _fill(nested)
    ds.add(DataElement(NEST, "SQ", Sequence([nested])))
    ds.SOPClassUID = CTImageStorage  # a classic image IOD: compound actions use the "*" types
    return ds


def _expected(row_action: str, keyword: str, parent: str | None) -> str:
    if row_action in COMPOUND_ACTIONS:
        return resolve(row_action, keyword, (f"in:{parent}",) if parent else ())
    return row_action


def _check(out: Dataset, src: Dataset, options: frozenset[Option], nested: bool, deid: Deidentifier) -> list[str]:
    problems = []
    keys = deid.keys
    offset = keys.date_offset_days("id\x00V00100021\x00V00100020", 365, 3650)
    for row in ROWS:
        tag = int(row.tag, 16)
        want = _expected(row.action(options), row.keyword, "AnatomicRegionSequence" if nested else None)
        orig = src[tag].value
        where = f"{row.keyword} ({row.tag}) {'nested' if nested else 'top'} {sorted(options)}: want {want}"
        if tag == PATIENT_ID or (tag == PATIENT_NAME and not nested):  # keyed pseudonyms (a D value)
            got = str(out[tag].value)
            if not got.startswith("ANON") or got == str(orig):
                problems.append(f"{where}, got {got!r}")
            continue
        if want == "X":
            if tag in out:
                problems.append(f"{where}, still present")
            continue
        if tag not in out:
            problems.append(f"{where}, removed")
            continue
        got = out[tag].value
        if row.vr == "SQ":
            ok = len(got) == 0 if want == "Z" else len(got) == 1 and got[0].CodeValue == "CV1"
        elif want == "Z":
            ok = got in (None, "", b"") or (hasattr(got, "__len__") and len(got) == 0)
        elif want == "D":
            ok = got not in (None, "", b"") and got != orig
        elif want == "U":
            ok = got == keys.uid(str(orig))
        elif want == "K":
            ok = got == orig
        elif want == "C" and row.vr in ("DA", "DT"):
            ok = got == shift_value(row.vr, str(orig), offset)
        elif want == "C" and row.vr == "AE":
            ok = got == "AE" + keys.token("ae-title", str(orig), 14)
        elif want == "C":  # text without identifying values, and binary data, stay as they are
            ok = got == orig
        else:
            ok = False
        if not ok:
            problems.append(f"{where}, got {got!r} from {orig!r}")
    return problems


OPTION_SETS = [frozenset()] + [frozenset({o}) for o in Option] + [
    frozenset({Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_LONG_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS}),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "+".join(sorted(o)) or "basic")
def test_every_row_gets_the_action_the_standard_asks(source: Dataset, options: frozenset[Option]) -> None:
    from imgsynth.deid.keys import Keyring

    deid = Deidentifier(DeidConfig(options=sorted(options)), Keyring(KEY))
    out = copy.deepcopy(source)
    deid.deidentify(out)
    problems = _check(out, source, options, False, deid)
    problems += _check(out[NEST].value[0], source[NEST].value[0], options, True, deid)
    assert not problems, f"{len(problems)} attribute(s) wrong:\n" + "\n".join(problems[:30])


def test_compound_actions_follow_the_iod_type() -> None:
    # Type 3 removes, Type 2 empties, Type 1 replaces; unknown: the alternative valid in any IOD.
    assert resolve("X/Z/D", "DeviceSerialNumber", ()) == "X"
    assert resolve("X/Z/D", "DeviceSerialNumber", ("enhanced",)) == "D"
    assert resolve("Z/D", "ContentDate", ()) == "Z"
    assert resolve("Z/D", "ContentDate", ("sr",)) == "D"
    assert resolve("X/Z/U*", "SourceImageSequence", ("in:DerivationImageSequence", "enhanced")) == "U"
    assert resolve("X/D", "RTPlanDate", ("rt",)) == "D"  # Type 2, but only X or D offered
    assert resolve("X/Z", "SomeFutureAttribute", ()) == "Z"
    assert resolve("X/Z/D", "SomeFutureAttribute", ()) == "D"
    assert resolve("U", "SOPInstanceUID", ()) == "U"


def test_options_override_the_basic_profile_and_clean_beats_keep() -> None:
    row = load_table().row(0x00181200)  # Date of Last Calibration: X; device identity K; modified dates C
    assert row.action(frozenset()) == "X"
    assert row.action(frozenset({Option.RETAIN_DEVICE_IDENTITY})) == "K"
    assert row.action(frozenset({Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_LONG_MODIFIED_DATES})) == "C"
