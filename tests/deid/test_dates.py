"""Date shifting for the Modified Dates option, checked against datetime arithmetic."""

from __future__ import annotations

import datetime as dt

import pytest

from imgsynth.deid.dates import date_tokens, shift_date, shift_datetime, shift_value


def _ref(date: str, days: int) -> str:
    return (dt.date(int(date[:4]), int(date[4:6]), int(date[6:8])) + dt.timedelta(days=days)).strftime("%Y%m%d")


@pytest.mark.parametrize("date", ["20200301", "20000229", "19991231", "20240101"])
@pytest.mark.parametrize("days", [-1, -365, -1461, -3650])
def test_da_matches_datetime_arithmetic(date: str, days: int) -> None:
    assert shift_date(date, days) == _ref(date, days)


def test_da_legacy_form_and_ranges() -> None:
    assert shift_date("2020.03.01", -1) == "2020.02.29"
    assert shift_date("20200301-20200310", -1) == "20200229-20200309"
    assert shift_date("-20200310", -10) == "-20200229"
    assert shift_date("20200301-", -1) == "20200229-"


def test_dt_keeps_time_fraction_and_utc_offset() -> None:
    assert shift_datetime("20200301093015.123456+0100", -1) == "20200229093015.123456+0100"
    assert shift_datetime("20200301093015-0500", -366) == "20190301093015-0500"
    assert shift_datetime("2020030109", -1) == "2020022909"


def test_dt_partial_values_keep_their_precision() -> None:
    assert shift_datetime("2020", -1) == "2019"  # from 2020-01-01
    assert shift_datetime("202003", -1) == "202002"  # from 2020-03-01
    assert shift_datetime("2020+0100", -400) == "2018+0100"


def test_multi_valued_and_tm() -> None:
    assert shift_value("DA", "20200301\\20200315", -14) == "20200216\\20200301"
    assert shift_value("TM", "101010.5", -14) == "101010.5"


def test_interval_between_two_dates_is_preserved() -> None:
    a, b = "20190110", "20200704"
    days = -1234
    d = lambda s: dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))  # noqa: E731
    assert (d(shift_date(b, days)) - d(shift_date(a, days))) == (d(b) - d(a))


@pytest.mark.parametrize("bad", ["2020013", "20201301", "abcd0101", "20200230"])
def test_invalid_values_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        shift_date(bad, -1)


def test_date_tokens() -> None:
    assert date_tokens("DA", "20200301\\2020.03.05") == ["20200301", "20200305"]
    assert date_tokens("DT", "20200301093015+0100") == ["20200301"]
