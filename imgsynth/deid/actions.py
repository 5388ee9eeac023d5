"""Apply the profile to one dataset, everywhere in it.

:class:`Deidentifier` walks every element of a dataset, of every item of every sequence at any
depth, decides each element's action (Table E.1-1 under the chosen options; the policy of
``README.md`` for attributes the table does not list; the private-attribute policy) and applies it.
Elements it keeps unchanged stay as read (raw bytes), so pixel data and every untouched value are
written back byte for byte. Text it keeps is cleaned of the file's identifying values at the end
of the walk, once all of them are known.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from pydicom.datadict import dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary
from pydicom.valuerep import VR as VR_

import imgsynth
from imgsynth.deid.config import DeidConfig
from imgsynth.deid.dates import shift_value
from imgsynth.deid.files import text_value
from imgsynth.deid.keys import Keyring
from imgsynth.deid.phi import (
    DUMMY_DATE,
    NUMBER_STRING_VRS,
    TEXT_VRS,
    VOCABULARY_TAGS,
    Kind,
    Needle,
    NeedleIndex,
    keeps_class_uid,
    row_kind,
    scrub,
    values_of,
)
from imgsynth.deid.private import SafePrivate, parse_safe_tag, safe_index
from imgsynth.deid.profile import (
    BASIC_PROFILE_CODE,
    CLEAN_PIXEL_DATA_CODE,
    CODE_MEANINGS,
    COMPOUND_ACTIONS,
    OPTION_CODES,
    Option,
    Row,
    load_table,
    resolve,
)
from imgsynth.errors import ConfigError, InputError

PATIENT_ID = 0x00100020
PATIENT_NAME = 0x00100010
ISSUER_OF_PATIENT_ID = 0x00100021
PATIENT_BIRTH_DATE = 0x00100030
OVERLAY_DATA = 0x60003000
CURVE_DATA = 0x50000000
TIME_VRS = frozenset({"DA", "DT", "TM"})
# Dummy values (action D), consistent with each VR.
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: dict[str, object] = {
    "DA": DUMMY_DATE, "DT": DUMMY_DATE + "000000", "TM": "000000", "AS": "000Y", "DS": "0", "IS": "0",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0, "AT": 0, "UR": "urn:anonymized",
}
# Multi-frame IODs built on functional groups and the Enhanced General Equipment module.
ENHANCED_SOP_CLASSES = frozenset(
    "1.2.840.10008.5.1.4.1.1." + s
    for s in ("2.1", "2.2", "4.1", "4.3", "4.4", "12.1.1", "12.2.1", "13.1.3", "13.1.4", "13.1.5", "30", "66.4",
              "66.7", "77.1.6", "128.1", "130", "6.2", "14.1", "14.2", "4.2", "2.3", "6.3")
)
_VALID_VRS = frozenset(str(v) for v in VR_)
_SIMPLE_CHARSETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"}


class Entry(NamedTuple):
    """What the profile says about one standard tag."""

    action: str | None  # table action (possibly compound) or None: not in Table E.1-1
    vr: str  # dictionary VR ("" when unknown)
    keyword: str
    kind: Kind | None
    retained_by: frozenset[Option]
    known: bool  # in the DICOM data dictionary
    needs_value: bool  # the Basic Profile replaces it with a dummy (D): IODs need a value


@dataclass
class FileState:
    """Per-file state of one walk."""

    contexts: tuple[str, ...]
    simple_charset: bool  # text can be decoded from raw bytes directly (ASCII, Latin-1, UTF-8)
    text_codec: str = "latin-1"
    date_offset: int | None = None
    needles: NeedleIndex = field(default_factory=NeedleIndex)
    counts: Counter = field(default_factory=Counter)
    to_clean: list[tuple[Dataset, int, str, bool, bool]] = field(default_factory=list)
    uids: dict[str, str] = field(default_factory=dict)
    pseudonyms: dict[str, tuple[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What de-identifying one dataset did (no identifying value in ``counts``/``warnings``)."""

    counts: dict[str, int]
    warnings: list[str]
    uids: dict[str, str]  # original -> new (only kept for the mapping file)
    pseudonyms: dict[str, tuple[str, str]]  # kind -> (original, pseudonym)


_STRING_VRS = frozenset({*TEXT_VRS, "DA", "DT", "TM", "UI", "DS", "IS"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW"})
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # Float, Double Float and Pixel Data


def _dictionary_vr(t: int) -> str:
    """The data dictionary's VR of a tag; UN for private and unknown tags."""
    try:
        return dictionary_VR(t)
    except KeyError:
        return "UN"


def _value(ds: Dataset, t: int, elem: DataElement | RawDataElement, vr: str, st: FileState) -> object:
    """An element's value; string values of raw elements are decoded without converting them."""
    if isinstance(elem, RawDataElement):
        if st.simple_charset and vr in _STRING_VRS and elem.value is not None:
            return elem.value.decode(st.text_codec, "replace").rstrip(" \x00")
        return ds[t].value
    return elem.value


_UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")


def _is_uid(text: str) -> bool:
    return not text or (len(text) <= 64 and _UID_SYNTAX.fullmatch(text) is not None)


def _element(ds: Dataset, t: int) -> DataElement | RawDataElement | None:
    """``ds.get_item(t)`` without converting ``t`` to a Tag (the dataset's own dict looked up)."""
    elem = ds._dict.get(t)
    if isinstance(elem, RawDataElement) and elem.value is None:
        return ds.get_item(t)  # a deferred value: read it
    return elem


def _vr_of(elem: DataElement | RawDataElement, entry: Entry) -> str:
    vr = elem.VR
    if not vr or vr == "UN" or " or " in vr:
        vr = entry.vr or vr or "UN"
    if " or " in vr:
        vr = vr[:2]
    return vr


def iod_contexts(ds: Dataset) -> tuple[str, ...]:
    """The IOD family contexts of :data:`~imgsynth.deid.profile.TYPE_HINTS` for a dataset."""
    sop = text_value(ds, 0x00080016)
    out = []
    if sop in ENHANCED_SOP_CLASSES or 0x52009229 in ds._dict or 0x52009230 in ds._dict:  # functional groups
        out.append("enhanced")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.88."):
        out.append("sr")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.481."):
        out.append("rt")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.9."):
        out.append("waveform")
    if sop.startswith("1.2.840.10008.5.1.4.1.1.11."):
        out.append("presentation")
    if sop in ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130") or text_value(ds, 0x00080060) == "PT":
        out.append("pet")
    return tuple(out)


class Deidentifier:
    """PS3.15 Annex E de-identification of datasets under one config and one key."""

    def __init__(self, config: DeidConfig, keyring: Keyring) -> None:
        self.config = config
        self.keys = keyring
        self.options = frozenset(config.options)
        self.table = load_table()
        self.overrides = self._parse_overrides(config.actions)
        extra = tuple(
            SafePrivate(e.creator, *parse_safe_tag(e.tag), e.vr, e.name) for e in config.private.safe
        )
        self.safe_private = safe_index(extra) if self._row_action(self.table.private_row) == "C" else {}
        self.drop_overlays = self._row_action(self.table.row(OVERLAY_DATA)) == "X"
        self.drop_curves = self._row_action(self.table.row(CURVE_DATA)) == "X"
        self.full_dates = Option.RETAIN_LONG_FULL_DATES in self.options
        self.modified_dates = Option.RETAIN_LONG_MODIFIED_DATES in self.options
        self._decided: dict[tuple[int, str | None, tuple[str, ...], bool], tuple[Entry, str, str]] = {}

    # -- the action table under this config -------------------------------------------------
    def _row_action(self, row: Row | None) -> str | None:
        return None if row is None else row.action(self.options)

    def _parse_overrides(self, actions: dict[str, str]) -> dict[int, str]:
        from pydicom.datadict import tag_for_keyword

        out: dict[int, str] = {}
        for key, action in actions.items():
            if key.startswith("("):
                tag = int(key[1:5] + key[6:10], 16)
            else:
                found = tag_for_keyword(key)
                if found is None:
                    raise ConfigError(f"actions: '{key}' is not a DICOM keyword; use the keyword or (gggg,eeee)")
                tag = found
            out[tag] = action
        return out

    @functools.lru_cache(maxsize=8192)  # noqa: B019  (one Deidentifier per process)
    def entry(self, tag: int) -> Entry:
        row = self.table.row(tag)
        try:
            vr, _vm, _name, _retired, keyword = get_entry(tag)
            known = True
        except KeyError:
            vr, keyword, known = "", "", False
        if row is not None and row.tag != "private":
            keyword = keyword or row.keyword
            vr = vr or row.vr
        action = self._row_action(row) if row is not None else None
        action = self.overrides.get(tag, action)
        kind = row_kind(row) if row is not None else (Kind.NAME if vr == "PN" else None)
        retained = row.retained_by if row is not None else frozenset()
        needs_value = row is not None and "D" in row.actions["basic"]
        return Entry(action, vr, keyword, kind, retained, known, needs_value)

    # -- public ------------------------------------------------------------------------------
    def deidentify(self, ds: Dataset, *, pixels_cleaned: bool = False) -> Outcome:
        """De-identify ``ds`` in place (file meta is the caller's: see :mod:`imgsynth.deid.files`)."""
        charset_text = text_value(ds, 0x00080005)
        state = FileState(
            contexts=iod_contexts(ds), simple_charset=charset_text in _SIMPLE_CHARSETS,
            text_codec="utf-8" if charset_text == "ISO_IR 192" else "latin-1",
        )
        patient_key = self._patient_key(ds)
        if self.modified_dates:
            state.date_offset = self.keys.date_offset_days(
                patient_key, self.config.dates.min_shift_days, self.config.dates.max_shift_days
            )
        self._walk(ds, state, (), patient_key)
        state.needles.prune()
        self._clean_text(state)
        self._check_binary(ds, state)
        self._mark(ds, pixels_cleaned)
        return Outcome(dict(state.counts), state.warnings, state.uids, state.pseudonyms)

    def patient_pseudonym(self, patient_key: str) -> str:
        return self.config.pseudonym_prefix + self.keys.token("patient", patient_key, 16 - len(self.config.pseudonym_prefix))

    def _patient_key(self, ds: Dataset) -> str:
        """What identifies the patient of ``ds`` (pseudonyms and date offsets derive from it)."""
        pid = text_value(ds, PATIENT_ID)
        if pid:
            return f"id\x00{text_value(ds, ISSUER_OF_PATIENT_ID)}\x00{pid}"
        name = text_value(ds, PATIENT_NAME)
        if name:
            return f"name\x00{name}\x00{text_value(ds, PATIENT_BIRTH_DATE)}"
        study = text_value(ds, 0x0020000D)
        return f"study\x00{study}" if study else f"instance\x00{text_value(ds, 0x00080018)}"

    # -- the walk ----------------------------------------------------------------------------
    def _walk(
        self, ds: Dataset, st: FileState, parents: tuple[str, ...], patient_key: str | None, dummy_text: bool = False
    ) -> None:
        """Apply the profile to every element of ``ds``; ``dummy_text``: inside a sequence whose
        action is D, free text the table does not list is replaced by a dummy, not cleaned."""
        contexts = (f"in:{parents[-1]}", *st.contexts) if parents else st.contexts
        private: list[int] = []
        decided = self._decided
        if len(decided) > 100_000:  # bounded memory over any number of files
            decided.clear()
        counts = st.counts
        for tag, elem in list(ds._dict.items()):  # (tag, element as stored: raw until converted)
            t = int(tag)
            group = t >> 16
            if group & 1:
                private.append(t)
                continue
            if t & 0xFFFF == 0 or group in (0x0000, 0x0002):  # group lengths; command / meta group in a dataset
                del ds[tag]
                st.counts["X"] += 1
                continue
            if (0x6000 <= group <= 0x601E and self.drop_overlays) or (0x5000 <= group <= 0x501E and self.drop_curves):
                del ds[tag]  # removing Overlay/Curve Data removes the whole group that describes it
                st.counts["X"] += 1
                continue
            if isinstance(elem, RawDataElement) and elem.value is None:
                elem = ds.get_item(tag)  # a deferred value: read it
            key = (t, elem.VR, contexts, dummy_text)
            decision = decided.get(key)
            if decision is None:
                decision = decided[key] = self._decide(t, elem, contexts, dummy_text)
            entry, vr, action = decision
            if t in VOCABULARY_TAGS:
                st.needles.add_vocabulary(_value(ds, t, elem, vr, st))
            if entry.kind is not None and action != "K" and not entry.retained_by & self.options:
                st.needles.add_value(vr, _value(ds, t, elem, vr, st), Needle(entry.kind, entry.keyword, entry.retained_by))
            if action == "K" and vr != "SQ":  # most elements: kept as read
                counts["K"] += 1
                continue
            if vr == "SQ" and action in ("X", "Z"):  # its values are gone, but may be echoed elsewhere
                self._collect_needles(ds[t].value, st, entry.keyword or f"{t:08X}")
            if action in ("Z", "D") and (t == PATIENT_ID or (t == PATIENT_NAME and patient_key is not None)):
                self._pseudonymise(ds, t, vr, st, patient_key)  # a dummy value that stays the same per patient
                continue
            self._apply(ds, t, elem, vr, action, entry, st, parents, dummy_text)
        if private:
            self._private(ds, private, st)

    def _collect_needles(self, items: Sequence, st: FileState, keyword: str) -> None:
        """The identifying values inside the items of a sequence being removed or emptied, at any
        depth, so that the text kept elsewhere is cleaned of them too."""
        contexts = (f"in:{keyword}", *st.contexts)
        for item in items or ():
            for tag, elem in list(item._dict.items()):
                t = int(tag)
                if t >> 16 & 1 or t & 0xFFFF == 0:
                    continue  # private (removed with the item) and group lengths
                if isinstance(elem, RawDataElement) and elem.value is None:
                    elem = item.get_item(tag)
                entry, vr, action = self._decide(t, elem, contexts, False)
                if vr == "SQ":
                    self._collect_needles(item[t].value, st, entry.keyword or f"{t:08X}")
                elif entry.kind is not None and action != "K" and not entry.retained_by & self.options:
                    st.needles.add_value(vr, _value(item, t, elem, vr, st), Needle(entry.kind, entry.keyword, entry.retained_by))

    def _decide(
        self, t: int, elem: DataElement | RawDataElement, contexts: tuple[str, ...], dummy_text: bool
    ) -> tuple[Entry, str, str]:
        """(entry, VR, action) of one tag in one place; the same for every file, so memoised."""
        if isinstance(elem, RawDataElement) and elem.VR is not None and elem.VR not in _VALID_VRS:
            raise InputError(f"({t >> 16:04X},{t & 0xFFFF:04X}) has an unknown value representation: cannot be checked or kept")
        entry = self.entry(t)
        vr = _vr_of(elem, entry)
        action = entry.action
        if action is None:
            action = self._unlisted_action(entry, vr, dummy_text)
        elif action in COMPOUND_ACTIONS:
            action = resolve(action, entry.keyword, contexts)
        return entry, vr, action

    def _unlisted_action(self, entry: Entry, vr: str, dummy_text: bool) -> str:
        """Policy for standard attributes that Table E.1-1 does not list (see README.md)."""
        if vr == "SQ":
            return "K"
        if vr == "UI":
            if keeps_class_uid(entry.keyword):
                return "KU"  # a class or transfer syntax: kept, if it is a UID at all
            return "K" if Option.RETAIN_UIDS in self.options else "U?"
        if vr in TIME_VRS:
            return "K" if self.full_dates else "C" if self.modified_dates else "X"
        if vr == "PN":
            return "Z"
        if dummy_text and vr in ("LT", "ST", "UT"):
            return "D"
        if vr in TEXT_VRS or vr in NUMBER_STRING_VRS:
            free_text = vr not in ("CS", "AS", "IS", "DS", "AE")
            return "X" if free_text and self.config.unlisted_text == "remove" else "S"
        if not entry.known and vr == "UN":
            return "X"  # an unknown public attribute whose content cannot be checked
        return "K"

    def _apply(
        self, ds: Dataset, t: int, elem: DataElement | RawDataElement, vr: str, action: str, entry: Entry,
        st: FileState, parents: tuple[str, ...], dummy_text: bool,
    ) -> None:
        if action == "X":
            del ds[t]
        elif action == "Z":
            self._set_empty(ds, t, elem, vr)
        elif vr == "SQ" and action in ("K", "D", "U", "C"):
            for item in ds[t].value:
                self._walk(item, st, (*parents, entry.keyword or f"{t:08X}"), None, dummy_text or action == "D")
            action = "K" if action == "D" else action
        elif action == "D":
            if vr == "UI":
                self._map_uids(ds, t, st, only_instances=False)
            else:
                self._set_dummy(ds, t, vr)
        elif action == "KU":
            value = _element(ds, t).value
            values = value.decode("latin-1").split("\\") if isinstance(value, bytes) else values_of(value)
            action = "K"
            if not all(_is_uid(v.strip(" \x00")) for v in values):
                self._map_uids(ds, t, st, only_instances=False)  # free text where a UID belongs: replaced
                st.warnings.append(f"({t >> 16:04X},{t & 0xFFFF:04X}) is not a UID: replaced by a keyed UID")
                action = "U"
        elif action in ("U", "U?"):
            action = "U" if self._map_uids(ds, t, st, only_instances=action == "U?") else "K"
        elif action == "C":
            self._clean(ds, t, vr, st, entry.needs_value)
        elif action == "S":
            st.to_clean.append((ds, t, vr, False, False))
            action = "K"
        st.counts[action] += 1

    # -- element operations ------------------------------------------------------------------
    @staticmethod
    def _set_empty(ds: Dataset, t: int, elem: DataElement | RawDataElement, vr: str) -> None:
        if vr == "SQ":
            ds[t] = DataElement(t, "SQ", Sequence())
        elif isinstance(elem, RawDataElement):
            ds._dict[t] = elem._replace(value=b"", length=0)  # a public, non-pixel element already there
        else:
            ds[t] = DataElement(t, vr, None)

    @staticmethod
    def _set_dummy(ds: Dataset, t: int, vr: str) -> None:
        if vr in DUMMY_BY_VR:
            value: object = DUMMY_BY_VR[vr]
        elif vr in TEXT_VRS:
            value = DUMMY_TEXT
        else:  # OB, OW, UN, ...
            value = b"\x00\x00"
        ds[t] = DataElement(t, vr if vr != "UN" else "OB", value)

    def _map_uids(self, ds: Dataset, t: int, st: FileState, *, only_instances: bool) -> bool:
        """Replace the UIDs of one element (U); returns False when nothing needed replacing."""
        value = _element(ds, t).value
        values = (value.decode("latin-1").split("\\") if isinstance(value, bytes) else values_of(value)) or [""]
        if only_instances and all(v.strip() in UID_dictionary or not v.strip() for v in values):
            return False
        new = []
        for v in values:
            v = v.strip().rstrip("\x00")
            if not v or (only_instances and v in UID_dictionary):
                new.append(v)
                continue
            mapped = self.keys.uid(v)
            st.uids[v] = mapped
            if only_instances:
                st.needles.add_value("UI", v, Needle(Kind.UID, f"{t:08X}"))
            new.append(mapped)
        ds[t] = DataElement(t, "UI", new if len(new) > 1 else new[0])
        return True

    def _pseudonymise(self, ds: Dataset, t: int, vr: str, st: FileState, patient_key: str | None) -> None:
        original = str(_value(ds, t, ds.get_item(t), vr, st) or "").strip()
        if patient_key is not None:  # top level: the file's patient
            pseudo = self.patient_pseudonym(patient_key)
        elif original:  # an ID inside a sequence: its own keyed pseudonym
            pseudo = self.patient_pseudonym(f"id\x00\x00{original}")
        else:
            pseudo = ""
        kind = "patient_id" if t == PATIENT_ID else "patient_name"
        st.pseudonyms[kind] = (original, pseudo)
        ds[t] = DataElement(t, vr if vr in ("LO", "PN") else ("LO" if t == PATIENT_ID else "PN"), pseudo)
        st.counts["D"] += 1

    def _clean(self, ds: Dataset, t: int, vr: str, st: FileState, needs_value: bool) -> None:
        """Action C: dates shift, AE titles get keyed pseudonyms, text loses identifying values."""
        if vr in TIME_VRS:
            value = ds[t].value
            if not value or vr == "TM":
                return
            if st.date_offset is None:  # C on a date without the Modified Dates option (an override)
                st.date_offset = self.keys.date_offset_days("unknown", self.config.dates.min_shift_days, self.config.dates.max_shift_days)
            text = "\\".join(values_of(value))
            try:
                ds[t] = DataElement(t, vr, shift_value(vr, text, st.date_offset))
            except ValueError:
                ds[t] = DataElement(t, vr, None)
                st.warnings.append(f"({t >> 16:04X},{t & 0xFFFF:04X}) {vr} not a valid date: emptied")
        elif vr == "AE":
            value = str(ds[t].value or "").strip()
            if value:
                ds[t] = DataElement(t, "AE", "AE" + self.keys.token("ae-title", value, 14))
        elif vr in TEXT_VRS:
            st.to_clean.append((ds, t, vr, True, needs_value))

    def _check_binary(self, ds: Dataset, st: FileState) -> None:
        """Refuse a file whose kept binary elements (lookup tables, waveforms, documents, ...; pixel
        data aside) hold one of its identifying values: bytes cannot be cleaned like text."""
        if not st.needles:
            return
        codecs = [st.text_codec]
        for tag, elem in ds._dict.items():
            t = int(tag)
            vr = elem.VR or _dictionary_vr(t)  # (implicit VR: the element's VR is the dictionary's)
            if vr == "SQ" or (isinstance(elem, DataElement) and isinstance(elem.value, Sequence)):
                for item in ds[t].value or ():
                    self._check_binary(item, st)
                continue
            if vr not in _BINARY_VRS or t in _PIXEL_TAGS:
                continue
            data = elem.value
            if isinstance(data, bytes) and data:
                for _offset, needle in st.needles.find_bytes(data, self.options, codecs):
                    raise InputError(f"({t >> 16:04X},{t & 0xFFFF:04X}) holds the value of {needle.source or needle.kind} "
                                     "in binary data, which cannot be cleaned")

    def _clean_text(self, st: FileState) -> None:
        """Remove the file's identifying values from the text kept (and patterns from descriptors)."""
        for ds, t, vr, descriptor, needs_value in st.to_clean:
            elem = _element(ds, t)
            if elem is None:
                continue
            if not descriptor and not st.needles:
                continue
            if isinstance(elem, RawDataElement) and st.simple_charset and elem.value is not None:
                raw_text = elem.value.decode(st.text_codec, "replace")
                if not descriptor and not st.needles.find_text(raw_text):
                    continue
            value = ds[t].value
            if value is None or value == "":
                continue
            values = values_of(value)
            cleaned, removed = [], 0
            for v in values:
                if vr in NUMBER_STRING_VRS:
                    hit = bool(st.needles.find_text(v))
                    cleaned.append("" if hit else v)
                    removed += hit
                else:
                    new, n = scrub(v, st.needles, descriptor=descriptor)
                    cleaned.append(new)
                    removed += n
            if removed:
                st.counts["cleaned"] += 1
                if all(not v for v in cleaned):
                    # Nothing left: a dummy keeps a required attribute valid (numbers are emptied).
                    if needs_value or vr not in NUMBER_STRING_VRS:
                        self._set_dummy(ds, t, vr)
                    else:
                        ds[t] = DataElement(t, vr, None)
                else:
                    ds[t] = DataElement(t, vr, cleaned if len(cleaned) > 1 else cleaned[0])

    def _private(self, ds: Dataset, private: list[int], st: FileState) -> None:
        """Remove private attributes, except the safe list under Retain Safe Private."""
        keep_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], str] = {}
        if self.safe_private:
            for t in private:
                if 0x10 <= t & 0xFFFF <= 0xFF:
                    value = ds[t].value
                    creators[(t >> 16, t & 0xFF)] = (value if isinstance(value, str) else str(value or "")).strip().upper()
        for t in private:
            element = t & 0xFFFF
            if 0x10 <= element <= 0xFF:
                continue
            group = t >> 16
            creator = creators.get((group, element >> 8)) if element >= 0x1000 else None
            safe = self.safe_private.get((creator, group, element & 0xFF)) if creator else None
            if safe is not None:
                elem = ds.get_item(t)
                if elem.VR in (None, "UN", safe.vr):
                    keep_blocks.add((group, element >> 8))
                    st.counts["K"] += 1
                    if safe.vr in TEXT_VRS or safe.vr in NUMBER_STRING_VRS:
                        st.to_clean.append((ds, t, safe.vr, False, False))
                    continue
            del ds[t]
            st.counts["X"] += 1
            st.counts["private_removed"] += 1
        for t in private:
            if 0x10 <= t & 0xFFFF <= 0xFF and (t >> 16, t & 0xFF) not in keep_blocks:
                del ds[t]
                st.counts["X"] += 1

    # -- de-identification attributes (PS3.15 E.3) --------------------------------------------
    def method_codes(self, pixels_cleaned: bool = False) -> list[str]:
        codes_ = [BASIC_PROFILE_CODE] + ([CLEAN_PIXEL_DATA_CODE] if pixels_cleaned else [])
        return codes_ + sorted(OPTION_CODES[o] for o in self.options)

    @functools.cache  # noqa: B019  (built once per Deidentifier; the elements are only ever written)
    def _marks(self, pixels_cleaned: bool) -> tuple[DataElement, ...]:
        """PatientIdentityRemoved, DeidentificationMethod (+ code sequence) and
        LongitudinalTemporalInformationModified, the same for every file of a run."""
        items = []
        for code in self.method_codes(pixels_cleaned):
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = CODE_MEANINGS[code]
            items.append(item)
        dates = "UNMODIFIED" if self.full_dates else "MODIFIED" if self.modified_dates else "REMOVED"
        return (
            DataElement(0x00120062, "CS", "YES"),
            DataElement(0x00120063, "LO", f"imgsynth {imgsynth.__version__} PS3.15 Annex E"[:64]),
            DataElement(0x00120064, "SQ", Sequence(items)),
            DataElement(0x00280303, "CS", dates),
        )

    def _mark(self, ds: Dataset, pixels_cleaned: bool) -> None:
        for elem in self._marks(pixels_cleaned):
            ds._dict[elem.tag] = elem  # public, not pixel data, items without US/SS: no bookkeeping needed
        if pixels_cleaned and "BurnedInAnnotation" in ds:
            ds.BurnedInAnnotation = "NO"
