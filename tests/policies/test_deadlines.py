"""Deadlines in calendar months (Art. 12(3)), property-tested: the same day next month or the
month's last day, the time of day kept, extensions counted from receipt."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.policies.deadlines import MAX_EXTENSION_MONTHS, add_months, answer_due

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)
extensions = st.integers(0, MAX_EXTENSION_MONTHS)


def months_between(earlier: date, later: date) -> int:
    return (later.year * 12 + later.month) - (earlier.year * 12 + earlier.month)


def last_of_month(day: date) -> bool:
    return (day + timedelta(days=1)).day == 1


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2027, 1, 31), date(2027, 2, 28)),
        (date(2028, 1, 31), date(2028, 2, 29)),  # a leap year
        (date(2100, 1, 31), date(2100, 2, 28)),  # a century, no leap year
        (date(2000, 1, 30), date(2000, 2, 29)),  # a 400th year, a leap year
        (date(2027, 3, 31), date(2027, 4, 30)),
        (date(2027, 12, 15), date(2028, 1, 15)),
        (date(2027, 2, 28), date(2027, 3, 28)),  # the same day, not the month's last
    ],
)
def test_a_request_is_due_the_same_day_next_month_or_that_month_s_last_day(
    received: date, due: date
) -> None:
    assert answer_due(received) == due


def test_extensions_count_from_receipt_not_from_the_date_they_extend() -> None:
    received = date(2027, 1, 31)
    assert answer_due(received, 1) == date(2027, 3, 31)
    assert answer_due(received, 2) == date(2027, 4, 30)  # chained: 28 Feb, 28 Mar, 28 Apr
    with pytest.raises(ValueError, match="0 to 2 months"):
        answer_due(received, 3)


@given(moments, extensions)
def test_the_due_date_keeps_the_day_or_ends_the_shorter_month_and_keeps_the_time(
    received: datetime, extended: int
) -> None:
    due = answer_due(received, extended)
    assert months_between(received, due) == 1 + extended
    assert due.day == received.day or (due.day < received.day and last_of_month(due))
    assert (due.time(), due.tzinfo) == (received.time(), received.tzinfo)


@given(moments, extensions, extensions)
def test_a_longer_extension_is_never_due_sooner_and_never_beyond_three_months(
    received: datetime, a: int, b: int
) -> None:
    assert (answer_due(received, a) <= answer_due(received, b)) == (a <= b)
    assert received < answer_due(received) <= answer_due(received, a)
    assert answer_due(received, a) <= received + timedelta(days=31 * 3)


@given(moments, st.integers(0, 600))
def test_months_are_never_counted_as_thirty_days(received: datetime, months: int) -> None:
    later = add_months(received, months)
    days = (later - received).days
    assert 28 * months - 3 <= days <= 31 * months
    if received.day <= 28:
        assert later.day == received.day
