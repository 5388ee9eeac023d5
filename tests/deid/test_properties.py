"""Property: identifying values planted anywhere (standard or private attributes, any VR that can
hold them, any nesting depth) never survive de-identification: the residual-PHI scan finds nothing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imgsynth.deid import anonymize_tree, verify_tree
from imgsynth.deid.verify import collect_inputs, scan_output

from .conftest import make_ct, write

# Standard attributes that can hold text, dates or names (not the file meta, command group,
# character set, UIDs, or attributes whose values pydicom or the file structure interpret).
_SKIP = {0x00080005, 0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00020010}
STANDARD = sorted(
    tag for tag, (vr, vm, _name, _retired, keyword) in DicomDictionary.items()
    if vr in {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "DA"} and keyword and tag >> 16 not in (0, 2)
    and tag not in _SKIP and tag >> 16 != 0x7FE0
)
SEQUENCES = [0x00082218, 0x00081115, 0x0040A730, 0x00081140, 0x00400275, 0x00540016, 0x00081250]
MAX_LEN = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "DA": 8}
CONSONANTS = "BCDFGHJKLMNPQRSTVWXZ"

names = st.text(alphabet=CONSONANTS, min_size=6, max_size=9)
ids = st.builds(lambda a, n: f"{a}{n}", st.text(alphabet=CONSONANTS, min_size=2, max_size=3),
                st.integers(100000, 99999999))
placement = st.tuples(
    st.one_of(st.sampled_from(STANDARD).map(lambda t: ("std", t)),
              st.tuples(st.sampled_from([0x0009, 0x0011, 0x0019, 0x0029, 0x0043, 0x7FD1]), st.integers(0x10, 0xFF),
                        st.integers(0, 0xFF), st.sampled_from(["LO", "SH", "UT", "UN", "OB"])).map(lambda p: ("private", p))),
    st.lists(st.sampled_from(SEQUENCES), max_size=3),  # the sequences the value is nested in
    st.sampled_from(["family", "id", "full", "birth"]),
)


def _value(vr: str, what: str, family: str, given_: str, pid: str) -> str:
    if vr == "DA" or what == "birth":
        return "19580723" if vr in ("DA", "LO", "LT", "UT", "ST", "UC", "UN", "OB", "SH") else family
    text = {"family": family, "id": pid, "full": f"{given_} {family}"}[what]
    if vr == "PN":
        return f"{family}^{given_}" if what == "full" else text
    if vr in ("AE", "CS", "SH"):
        return text[:16] if what != "full" else family
    return f"seen {text} today"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=names, given_=names, pid=ids, plants=st.lists(placement, min_size=1, max_size=4))
def test_planted_identifiers_never_survive(family: str, given_: str, pid: str, plants: list, keyring) -> None:  # noqa: ANN001
    ds = make_ct(PatientName=f"{family}^{given_}", PatientID=pid, PatientBirthDate="19580723")
    wheres = []
    for (kind, spec), nesting, what in plants:
        target, prefix = ds, ""
        for seq_tag in nesting:
            if seq_tag not in target:
                target.add_new(seq_tag, "SQ", Sequence([Dataset()]))
            item = target[seq_tag].value[0]
            prefix += f"({seq_tag >> 16:04X},{seq_tag & 0xFFFF:04X})[0]/"
            target = item
        if kind == "std":
            tag, vr = spec, DicomDictionary[spec][0]
            target.add_new(tag, vr, _value(vr, what, family, given_, pid))
        else:
            group, block, element, vr = spec
            target.private_block(group, f"ACME {block}", create=True).add_new(element, vr, None)
            tag = (group << 16) | (target.private_block(group, f"ACME {block}").block_start + element)
            value = _value(vr, what, family, given_, pid)
            target[tag].value = value.encode() if vr in ("UN", "OB") else value
        wheres.append(f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})")
    with tempfile.TemporaryDirectory() as tmp:
        src = write(ds, Path(tmp) / "in" / "x.dcm")
        # The planted values are visible to the scan in the input itself ...
        index, _, _ = collect_inputs([src.parent])
        seen = {h.where for h in scan_output(src, "x.dcm", index)}
        assert set(wheres) <= seen, set(wheres) - seen
        # ... and nowhere in the de-identified output.
        summary = anonymize_tree(src.parent, Path(tmp) / "out", keyring=keyring)
        assert summary.counts["done"] == 1, summary.results
        result = verify_tree(Path(tmp) / "out", src.parent)
        assert result.hits == [], [h.line() for h in result.hits]
