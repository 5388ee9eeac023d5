"""Identifying values: which attributes hold them, how they are matched, and text cleaning.

The same code serves both sides of the promise "nothing identifying survives":

* de-identification collects the identifying values of each file before removing them, then
  cleans every text value it keeps (attributes outside Table E.1-1, kept private attributes,
  descriptors under Clean Descriptors) of those values;
* the residual-PHI scan (``deid verify``) collects the identifying values of every input and looks
  for them in every element and in the raw bytes of every output.

Matching works on tokens (runs of letters and digits; dotted numbers such as UIDs are one token), case
insensitive, so ``SMITH^JOHN`` is found in ``"seen by Dr. John Smith"``. Values shorter than
:data:`MIN_NEEDLE_CHARS` characters, and placeholder words (:data:`PLACEHOLDERS`), are not searched:
they occur everywhere by chance and identify no one.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from pydicom.valuerep import PersonName

from imgsynth.deid.dates import date_tokens
from imgsynth.deid.profile import Option, Row

MIN_NEEDLE_CHARS = 4
MIN_NUMBER_DIGITS = 6
MIN_UID_CHARS = 7
TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
NUMBER_STRING_VRS = frozenset({"DS", "IS"})
DATE_VRS = frozenset({"DA", "DT"})
# Values written by de-identification itself, and placeholders found in already-anonymised data.
DUMMY_DATE = "19000101"
PLACEHOLDERS = frozenset(
    {"ANONYMIZED", "ANONYMISED", "ANONYMOUS", "ANON", "UNKNOWN", "NONE", "NULL", "REMOVED", "DELETED",
     "DUMMY", "REDACTED", "NAME", "PATIENT", "TEST", "NOT", "GIVEN", "NA", "N", "A", DUMMY_DATE, "00000000"}
)

_TOKEN = re.compile(r"\d+(?:\.\d+)+|[^\W_]+")
_TOKEN_BYTES = re.compile(rb"\d+(?:\.\d+)+|[A-Z0-9]+")
_TOKEN_CHARS = re.compile(rb"[A-Z0-9.]")
_TOKEN_RUN = re.compile(rb"[A-Z0-9.]*\Z")  # the token characters just before a place
_MAX_BACK = 256  # how far back a token may start (longer runs: tokenized from the start of the data)
_UID_LIKE = re.compile(r"^\d+(?:\.\d+)+$")
_COMPOUND = re.compile(r"[-'\u2019]")  # joins the parts of a double-barrelled or O'- name
# Patterns removed from descriptors under Clean Descriptors (in addition to the file's own values).
_DESCRIPTOR_PATTERNS = re.compile(
    r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"  # dates such as 2004-08-26, 26/08/2004
    r"|\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"  # 20040826
    r"|\+?\(?\d[\d ().-]{7,}\d"  # phone numbers
    r"|\b[\w.+-]+@[\w-]+\.[\w.-]+\b"  # e-mail addresses
)


# Equipment and coding attributes: their values are public vocabulary (vendor, model and coding
# scheme names). An institution value found inside them is a vendor name, not an identifier (test
# data often puts the vendor in Institution Name), so it is not searched for.
VOCABULARY_KEYWORDS = frozenset(
    {"Manufacturer", "ManufacturerModelName", "SoftwareVersions", "CodingSchemeDesignator", "CodingSchemeName",
     "CodingSchemeResponsibleOrganization", "CodeMeaning"}
)
VOCABULARY_TAGS = frozenset({0x00080070, 0x00081090, 0x00181020, 0x00080102, 0x00080115, 0x00080116, 0x00080104})


class Kind(StrEnum):
    NAME = "name"
    ID = "id"
    CONTACT = "contact"
    INSTITUTION = "institution"
    UID = "uid"
    DATE = "date"


_CONTACT = re.compile(r"(Address|Telephone|Telecom|Residence|Location|Email|Phone)")
_INSTITUTION = re.compile(r"(Institution|Department|Organization|Issuer|Sponsor|Center|Committee|Site|Service)")
_ID = re.compile(r"(ID|IDs|Number|Numbers|Identifier|Locator|Identification|Value)$")
_NAME = re.compile(r"(Name|Names|Owner|Author|Label)$")


def row_kind(row: Row) -> Kind | None:
    """The kind of identifying value a Table E.1-1 attribute holds, or None for descriptors etc.

    Descriptors (the rows Clean Descriptors may keep) are free text, not identifiers: the
    identifiers they may contain are found through the names and IDs of the same file.
    """
    vr = row.vr
    if vr == "PN":
        return Kind.NAME
    if vr == "UI":
        return Kind.UID
    if vr in DATE_VRS:
        return Kind.DATE
    if vr not in TEXT_VRS or "clean_descriptors" in row.actions or not row.keyword:
        return None
    kw = row.keyword
    if _CONTACT.search(kw):
        return Kind.CONTACT
    if _INSTITUTION.search(kw):
        return Kind.INSTITUTION
    if _ID.search(kw):
        return Kind.ID
    if _NAME.search(kw):
        return Kind.NAME
    return None


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.upper())


@dataclass(frozen=True)
class Needle:
    """One identifying value: what it is, where it came from, and the options that keep it."""

    kind: Kind
    source: str  # keyword (or tag) of the attribute it was read from
    retained_by: frozenset[Option] = frozenset()

    def applies(self, options: frozenset[Option]) -> bool:
        """Whether an output made with ``options`` must not contain this value."""
        if self.retained_by & options:
            return False
        return not (self.kind is Kind.DATE and options & {Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES})


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    needle: Needle


class NeedleIndex:
    """Identifying values indexed for token matching (text), whole-value matching (UIDs, dates)."""

    def __init__(self, *, given_names_alone: bool = True) -> None:
        # False: of a person name, search the family name alone and the full name, not a given
        # name alone (JOHN is in "St. John's Memorial"); de-identification cleans all of them.
        self.given_names_alone = given_names_alone
        self.single: dict[str, Needle] = {}
        self.multi: dict[str, list[tuple[tuple[str, ...], Needle]]] = {}
        self.uids: dict[str, Needle] = {}
        self.dates: dict[str, Needle] = {}
        self.wide: dict[str, Needle] = {}  # non-ASCII values, for the raw-byte scan
        self.vocabulary: set[tuple[str, ...]] = set()
        self._probes: frozenset[str] | None = None
        self._byte_probes: tuple[tuple[bytes, ...], dict[str, bytes | None]] = ((), {})

    @property
    def probes(self) -> frozenset[str]:
        """Substrings that any match contains (rebuilt after each change of the index)."""
        if self._probes is None:
            self._probes = frozenset((*self.single, *self.multi, *self.uids, *self.dates))
            ascii_probes = tuple(p.encode("ascii") for p in self._probes if p.isascii())
            # Of a non-ASCII value, its longest ASCII run (compared in upper case), else its own
            # encodings in both cases (scripts without case: one of them).
            self._byte_probes = ascii_probes, {
                text: run.encode("ascii") if len(run := max(re.findall(r"[A-Z0-9]+", text) or [""], key=len)) >= 3
                else None for text in self.wide
            }
        return self._probes

    @property
    def byte_probes(self) -> tuple[tuple[bytes, ...], dict[str, bytes | None]]:
        """:attr:`probes` for raw bytes: the ASCII ones encoded, and a probe per non-ASCII value."""
        self.probes  # noqa: B018  (rebuilt with the probes)
        return self._byte_probes

    def _may_hold(self, upper: bytes, data: bytes, text: str, codec: str) -> bool:
        """Cheap pre-check of :meth:`find_bytes`: can ``data`` hold the non-ASCII value ``text``?"""
        run = self.byte_probes[1].get(text)
        if run is not None:
            return run in upper
        return any(t.encode(codec, errors="ignore") in data for t in (text, text.lower()) if t)

    def __len__(self) -> int:
        return len(self.single) + sum(len(v) for v in self.multi.values()) + len(self.uids) + len(self.dates)

    def __bool__(self) -> bool:
        return bool(self.single or self.multi or self.uids or self.dates)

    # -- adding ------------------------------------------------------------------------------
    def add_tokens(self, toks: tuple[str, ...], needle: Needle) -> None:
        self._probes = None
        toks = tuple(t for t in toks if t)
        if not toks or all(t in PLACEHOLDERS for t in toks) or sum(map(len, toks)) < MIN_NEEDLE_CHARS:
            return
        if len(toks) == 1 and toks[0].isdigit() and len(toks[0]) < MIN_NUMBER_DIGITS:
            return  # short numbers (1234, 0010) occur everywhere by chance
        if len(toks) == 1:
            self.single.setdefault(toks[0], needle)
        else:
            entries = self.multi.setdefault(toks[0], [])
            if all(t != toks for t, _ in entries):
                entries.append((toks, needle))
        text = " ".join(toks)
        if not text.isascii():
            self.wide.setdefault(text, needle)

    def add_value(self, vr: str, value: object, needle: Needle) -> None:
        """Add every identifying part of one element value (multi-valued values split)."""
        self._probes = None
        for text in _strings(value):
            if needle.kind is Kind.UID:
                if len(text) >= MIN_UID_CHARS and (is_uid_like(text) or text.isalnum()):
                    self.uids.setdefault(text.upper(), needle)
            elif needle.kind is Kind.DATE:
                for d in date_tokens(vr, text):
                    if d not in PLACEHOLDERS:
                        self.dates.setdefault(d, needle)
            elif vr == "PN":
                for group in text.split("="):
                    parts = [tuple(tokens(c)) for c in group.split("^")]
                    components = group.split("^")
                    for k, part in enumerate(parts if self.given_names_alone else parts[:1]):
                        self.add_tokens(part, needle)
                        pieces = _COMPOUND.split(components[k])
                        for piece in pieces if len(pieces) > 1 else ():  # O'BRIEN-SMYTHE: BRIEN, SMYTHE too
                            self.add_tokens(tuple(tokens(piece)), needle)
                    if len(parts) > 1 and parts[0] and parts[1]:  # "John Smith" and "Smith John" as written in text
                        self.add_tokens(parts[1] + parts[0], needle)
                        self.add_tokens(parts[0] + parts[1], needle)
            else:
                self.add_tokens(tuple(tokens(text)), needle)

    def add_vocabulary(self, value: object) -> None:
        """Record the value of an equipment or coding attribute (see :data:`VOCABULARY_KEYWORDS`)."""
        for text in _strings(value):
            toks = tuple(tokens(text))
            if toks:
                self.vocabulary.add(toks)

    def prune(self, common_words: frozenset[str] = frozenset()) -> None:
        """Drop institution values that occur inside the vocabulary (vendor and coding names),
        and single-word names that are ``common_words`` (see :func:`standard_words`)."""
        self._probes = None
        for tok, needle in list(self.single.items()):
            if needle.kind is Kind.NAME and tok in common_words:
                del self.single[tok]
        if not self.vocabulary:
            return

        def public(toks: tuple[str, ...]) -> bool:
            n = len(toks)
            return any(v[i : i + n] == toks for v in self.vocabulary for i in range(len(v) - n + 1))

        for tok, needle in list(self.single.items()):
            if needle.kind is Kind.INSTITUTION and public((tok,)):
                del self.single[tok]
        for first, entries in list(self.multi.items()):
            kept = [(t, n) for t, n in entries if not (n.kind is Kind.INSTITUTION and public(t))]
            if kept:
                self.multi[first] = kept
            else:
                del self.multi[first]

    # -- matching ----------------------------------------------------------------------------
    def find_text(self, text: str, options: frozenset[Option] = frozenset()) -> list[Hit]:
        """Hits of names/IDs (tokens), dates and UIDs inside a text value."""
        if not text:
            return []
        upper = text.upper()
        if len(upper) != len(text):  # e.g. "ß" -> "SS": upper-case character by character instead
            upper = "".join(c.upper() if len(c.upper()) == 1 else c for c in text)
        if not any(p in upper for p in self.probes):  # cheap pre-check: no needle can match
            return []
        found = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(upper)]
        hits: list[Hit] = []
        for i, (start, end, tok) in enumerate(found):
            needle = self.single.get(tok) or self.uids.get(tok) or (self.dates.get(tok[:8]) if tok[:8].isdigit() and (len(tok) == 8 or len(tok) >= 10) else None)
            if needle is not None and needle.applies(options):
                hits.append(Hit(start, end, needle))
                continue
            for toks, n in self.multi.get(tok, ()):
                j = i + len(toks)
                if j <= len(found) and tuple(t for _, _, t in found[i:j]) == toks and n.applies(options):
                    hits.append(Hit(start, found[j - 1][1], n))
                    break
        return hits

    def find_uid(self, value: str, options: frozenset[Option] = frozenset()) -> Needle | None:
        needle = self.uids.get(value.strip().rstrip("\x00").upper())
        return needle if needle is not None and needle.applies(options) else None

    def find_bytes(
        self, data: bytes, options: frozenset[Option] = frozenset(), codecs: Sequence[str] = ()
    ) -> Iterator[tuple[int, Needle]]:
        """Offsets of identifying values in raw bytes: ASCII tokens, and non-ASCII values in UTF-8
        and in each of ``codecs`` (the Python codecs of the file's character sets, e.g. Latin-1)."""
        upper = data.upper()
        # A match starts where a probe does: tokenize from just before each such place, not the whole
        # of the data (tokens never span a byte outside [A-Z0-9.], so tokenizing can start after one).
        starts = sorted({i for p in self.byte_probes[0] for i in _occurrences(upper, p)})
        longest = max((len(t) for entries in self.multi.values() for t, _ in entries), default=1)
        for pos in starts:
            low = max(0, pos - _MAX_BACK)
            begin = cast(re.Match, _TOKEN_RUN.search(upper, low, pos)).start()  # (matches, if only at pos)
            if begin == low and low > 0 and _TOKEN_CHARS.match(upper, low - 1):
                begin = 0  # a longer run of token characters: tokenize from the start
            found: list[tuple[int, str]] = []
            for m in _TOKEN_BYTES.finditer(upper, begin):
                if m.start() < pos:
                    continue
                found.append((m.start(), m.group().decode("ascii")))
                if found[0][0] != pos or len(found) >= longest:
                    break
            if not found or found[0][0] != pos:
                continue  # the probe lies inside a longer token
            tok = found[0][1]
            needle = self.single.get(tok) or self.uids.get(tok) or (self.dates.get(tok[:8]) if len(tok) == 8 or (len(tok) >= 10 and tok[:8].isdigit()) else None)
            if needle is not None and needle.applies(options):
                yield pos, needle
                continue
            for toks, n in self.multi.get(tok, ()):
                if tuple(t for _, t in found[: len(toks)]) == toks and n.applies(options):
                    yield pos, n
                    break
        wide = [(text, needle) for text, needle in self.wide.items() if needle.applies(options)]
        if not wide:
            return
        for codec in dict.fromkeys(("utf-8", *codecs)):
            try:
                candidates = [(t, n) for t, n in wide if self._may_hold(upper, data, t, codec)]
                if not candidates:
                    continue
                decoded = data.decode(codec, errors="replace").upper()
            except LookupError:
                continue
            for text, needle in candidates:
                pos = decoded.find(text)
                if pos >= 0:
                    yield len(decoded[:pos].encode(codec, errors="replace")), needle


def _occurrences(data: bytes, probe: bytes) -> Iterator[int]:
    i = data.find(probe)
    while i >= 0:
        yield i
        i = data.find(probe, i + 1)


@functools.lru_cache(maxsize=1)
def standard_words() -> frozenset[str]:
    """Words of the DICOM standard's own vocabulary: attribute names and coded concept meanings.

    The residual-PHI scan does not search a one-word name that is such a word (``OBSERVER``,
    ``TEST``, ``STROKE``): test and placeholder names are made of them, and they occur in every SR.
    Full names ("JOHN BROWN", "BROWN JOHN") are still searched.
    """
    from pydicom.datadict import DicomDictionary
    from pydicom.sr._concepts_dict import concepts

    words: set[str] = set()
    for entry in DicomDictionary.values():
        words.update(tokens(entry[2]))
    for scheme in concepts.values():
        for codes in scheme.values():
            for meaning, _cids in codes.values():
                words.update(tokens(meaning))
    return frozenset(w for w in words if w.isalpha())


def values_of(value: object) -> list[str]:
    """An element value as a list of strings (multi-valued values split, names as text)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, str | PersonName):
        return [str(value)]
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def text_codecs(charsets: object) -> list[str]:
    """Python codecs of a Specific Character Set value (none for the default repertoire or an
    unknown term: ASCII and UTF-8 are searched anyway)."""
    from pydicom.charset import convert_encodings

    terms = [str(v).strip() for v in values_of(charsets) if str(v).strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown terms: pydicom warns and falls back to ASCII
        try:
            return [c for c in convert_encodings(terms) if c not in ("iso8859", "ascii")] if terms else []
        except (LookupError, ValueError):
            return []


def keeps_class_uid(keyword: str) -> bool:
    """UIDs that name a class or an encoding (SOP class, transfer syntax), never an instance."""
    return keyword.endswith(("ClassUID", "TransferSyntaxUID"))


def _strings(value: object) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, bytes):
        return (value.decode("latin-1").strip(" \x00"),)
    if isinstance(value, str | PersonName):
        return (v.strip(" \x00") for v in str(value).split("\\"))
    if isinstance(value, Iterable):
        return (str(v).strip(" \x00") for v in value)
    return (str(value).strip(),)


def scrub(text: str, index: NeedleIndex, *, descriptor: bool = False) -> tuple[str, int]:
    """``text`` without the identifying values of ``index`` (and, for descriptors, without
    date, phone and e-mail patterns); returns the cleaned text and the number of removals."""
    hits = index.find_text(text)
    removed = len(hits)
    if hits:
        parts, last = [], 0
        for hit in sorted(hits, key=lambda h: h.start):
            if hit.start >= last:
                parts.append(text[last : hit.start])
                last = hit.end
        parts.append(text[last:])
        text = "".join(parts)
    if descriptor:
        text, n = _DESCRIPTOR_PATTERNS.subn("", text)
        removed += n
    if removed:
        text = " ".join(text.split())
    return text, removed


def is_uid_like(value: str) -> bool:
    return bool(_UID_LIKE.match(value))
