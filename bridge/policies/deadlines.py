"""Deadlines as the law counts them, in calendar months: the same day of the month so many
months later, or that month's last day when it has no such day (31 January + 1 month is
28 or 29 February), never a fixed number of days.

GDPR Art. 12(3): a request is answered within one month of its receipt, a period that may be
extended by two further months where necessary (the person told within the first month).
Every extension counts from the receipt, not from the date it extends, so that 31 January
extended by one and then by one more month ends on 30 April, as one of two months would.
"""

from __future__ import annotations

import calendar
from datetime import date
from typing import TypeVar

ANSWER_MONTHS = 1
MAX_EXTENSION_MONTHS = 2

D = TypeVar("D", bound=date)


def add_months(day: D, months: int) -> D:
    """The same day (and time, for a datetime) ``months`` later; the month's last day when it
    is shorter."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return day.replace(
        year=year, month=month + 1, day=min(day.day, calendar.monthrange(year, month + 1)[1])
    )


def answer_due(received: D, extension_months: int = 0) -> D:
    """When a request received at ``received`` must be answered, given the months it was
    extended by in all (0 to :data:`MAX_EXTENSION_MONTHS`)."""
    if not 0 <= extension_months <= MAX_EXTENSION_MONTHS:
        raise ValueError(f"an extension is 0 to {MAX_EXTENSION_MONTHS} months in all")
    return add_months(received, ANSWER_MONTHS + extension_months)
