"""Counting which fields hold data, for the minimisation report: names and counts only.

Both adapters read every record of an object once per chunk of field names (a vendor takes
the names in the URL, which must stay short) and count, per field, the records holding a
value. A value is looked at to tell empty from filled and dropped at once: nothing here
keeps, returns or logs one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from bridge.adapters.base import FieldUsage, ObjectUsage

Rows = Callable[[Sequence[str]], Iterable[Mapping[str, Any]]]


def chunked(names: Sequence[str], budget: int, cost: Callable[[str], int]) -> Iterator[list[str]]:
    """``names`` in consecutive lists whose cost stays within ``budget``, one request each.

    There is always at least one list, empty when there are no names: an object whose fields
    nobody can fill still has records to count.
    """
    chunk: list[str] = []
    size = 0
    for name in names:
        if chunk and size + cost(name) > budget:
            yield chunk
            chunk, size = [], 0
        chunk.append(name)
        size += cost(name)
    yield chunk


def filled(value: Any) -> bool:
    """Whether a field holds something: not null, not empty text, not an unticked checkbox
    (some vendors give every checkbox ``false`` until someone ticks it). Zero is a value."""
    return value is not None and value is not False and value != ""


def measure(
    sobject: str,
    fields: Mapping[str, bool],
    rows: Rows,
    budget: int,
    cost: Callable[[str], int],
) -> ObjectUsage:
    """Count the records of ``sobject`` filling each of ``fields`` (name to whether it is free
    text). ``rows(names)`` reads every record with those fields; it is called once per chunk,
    and the first pass gives the number of records."""
    names = sorted(fields)
    records: int | None = None
    counts: Counter[str] = Counter()
    for chunk in chunked(names, budget, cost):
        seen = 0
        for row in rows(chunk):
            seen += 1
            counts.update(name for name in chunk if filled(row.get(name)))
        records = seen if records is None else records
    usage = tuple(FieldUsage(name, counts[name], fields[name]) for name in names)
    return ObjectUsage(sobject, records or 0, usage)
