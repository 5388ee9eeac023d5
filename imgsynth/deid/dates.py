"""Shifting DA / DT values by a whole number of days (Modified Dates option).

Every date of one patient moves by the same keyed offset, so intervals between them are kept.
Times of day (TM, and the time part of DT) and UTC offsets are unchanged: a shift by whole days
keeps them valid and keeps intervals exact.

* ``DA``: ``YYYYMMDD``; the legacy ``YYYY.MM.DD`` form; query ranges ``A-B``, ``-B``, ``A-``.
* ``DT``: ``YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]][&ZZXX]``. A partial value (``YYYY`` or ``YYYYMM``) is
  shifted from the first day of the period it names and truncated back to the same precision.
* Multi-valued elements are shifted value by value (the caller splits on backslash).

A value that is not a valid date raises :class:`ValueError`; the caller empties it.
"""

from __future__ import annotations

import datetime as dt
import re

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DA_LEGACY = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def _shift(year: int, month: int, day: int, days: int) -> dt.date:
    try:
        return dt.date(year, month, day) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        raise ValueError(f"not a valid date: {year:04d}{month:02d}{day:02d}") from None


def shift_date(value: str, days: int) -> str:
    """Shift one DA value (or a DA range) by ``days``."""
    text = value.strip()
    if not text:
        return text
    if "-" in text:
        lo, _, hi = text.partition("-")
        return f"{shift_date(lo, days) if lo else ''}-{shift_date(hi, days) if hi else ''}"
    m = _DA.match(text)
    if m:
        return _shift(int(m[1]), int(m[2]), int(m[3]), days).strftime("%Y%m%d")
    m = _DA_LEGACY.match(text)
    if m:
        return _shift(int(m[1]), int(m[2]), int(m[3]), days).strftime("%Y.%m.%d")
    raise ValueError(f"not a DA value: {value!r}")


def shift_datetime(value: str, days: int) -> str:
    """Shift one DT value (or a DT range) by ``days``, keeping its precision, time and UTC offset."""
    text = value.strip()
    if not text:
        return text
    if "-" in text[1:] and not _DT.match(text):
        # A range "A-B" (a UTC offset "-ZZXX" alone matches _DT and never reaches here).
        lo, _, hi = text.partition("-")
        return f"{shift_datetime(lo, days) if lo else ''}-{shift_datetime(hi, days) if hi else ''}"
    m = _DT.match(text)
    if not m:
        raise ValueError(f"not a DT value: {value!r}")
    year, month, day, clock, zone = m.groups()
    shifted = _shift(int(year), int(month or 1), int(day or 1), days)
    if day is not None:
        date = shifted.strftime("%Y%m%d")
    elif month is not None:
        date = shifted.strftime("%Y%m")
    else:
        date = shifted.strftime("%Y")
    return date + (clock or "") + (zone or "")


def shift_value(vr: str, value: str, days: int) -> str:
    """Shift a (possibly multi-valued) DA or DT string; TM values are returned unchanged."""
    if vr == "TM":
        return value
    fn = shift_date if vr == "DA" else shift_datetime
    return "\\".join(fn(v, days) for v in value.split("\\"))


def date_tokens(vr: str, value: str) -> list[str]:
    """The ``YYYYMMDD`` dates named by a DA/DT value (for the residual-PHI scan)."""
    out = []
    for part in re.split(r"[\\-]", value):
        part = part.strip().replace(".", "") if vr == "DA" else part.strip()
        if len(part) >= 8 and part[:8].isdigit():
            out.append(part[:8])
    return out
