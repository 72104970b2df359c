"""CRM search semantics: filter groups, operators, one sort, paging and the 10,000-result cap.

The caps are the ones the adapter must live with (docs/vendors/hubspot.md, "Search"): at most
5 groups of 6 filters, 18 filters in all, one sort, ``limit`` <= 200, and no page past the
10,000th result, which is why incremental sync windows on ``lastmodifieddate``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge_sandbox.emulators.hubspot_http import bad_request
from bridge_sandbox.emulators.hubspot_properties import (
    QUERY_PROPERTIES,
    PropertyCatalog,
    to_property_value,
)

Operator = Literal[
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
]
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 6, 18
MAX_LIMIT, RESULT_CAP, MAX_QUERY = 200, 10_000, 3_000

Scalar = str | int | float | bool
Lookup = Callable[[str], str | None]
_TOKEN_SPLIT = re.compile(r"[\s;,]+")


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", coerce_numbers_to_str=True)


class SearchFilter(_Model):
    property_name: str = Field(alias="propertyName")
    operator: Operator
    value: Scalar | None = None
    values: list[Scalar] | None = None
    high_value: Scalar | None = Field(None, alias="highValue")


class FilterGroup(_Model):
    filters: list[SearchFilter] = Field(default_factory=list)


class SortSpec(_Model):
    property_name: str = Field(alias="propertyName")
    direction: Literal["ASCENDING", "DESCENDING"] = "ASCENDING"


class SearchRequest(_Model):
    filter_groups: list[FilterGroup] = Field(default_factory=list, alias="filterGroups")
    sorts: list[SortSpec] = Field(default_factory=list)
    query: str | None = None
    properties: list[str] | None = None
    limit: int = 10
    after: str | None = None

    @field_validator("sorts", mode="before")
    @classmethod
    def _sort_strings(cls, sorts: object) -> object:
        """The SDK types sorts as strings: ``"prop"`` ascends, ``"-prop"`` descends."""
        if not isinstance(sorts, list):
            return sorts
        return [
            {
                "propertyName": s.lstrip("-"),
                "direction": "DESCENDING" if s.startswith("-") else "ASCENDING",
            }
            if isinstance(s, str)
            else s
            for s in sorts
        ]


def offset_of(request: SearchRequest) -> int:
    """Check the request against HubSpot's caps and return the page offset."""
    filters = [f for group in request.filter_groups for f in group.filters]
    if len(request.filter_groups) > MAX_GROUPS:
        raise bad_request(f"Too many filter groups: {len(request.filter_groups)} > {MAX_GROUPS}")
    if any(len(group.filters) > MAX_FILTERS_PER_GROUP for group in request.filter_groups):
        raise bad_request(f"Too many filters in a group (max {MAX_FILTERS_PER_GROUP})")
    if len(filters) > MAX_FILTERS:
        raise bad_request(f"Too many filters: {len(filters)} > {MAX_FILTERS}")
    if len(request.sorts) > 1:
        raise bad_request("Only one sort is allowed")
    if request.query is not None and len(request.query) > MAX_QUERY:
        raise bad_request(f"query must be at most {MAX_QUERY} characters")
    if not 0 <= request.limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 0 and {MAX_LIMIT}", limit=[str(request.limit)])
    for f in filters:
        _check_operands(f)
    try:
        offset = int(request.after or 0)
    except ValueError:
        raise bad_request("after must be a paging cursor from a previous page") from None
    if offset < 0 or offset >= RESULT_CAP:
        raise bad_request(
            f"Search results are capped at {RESULT_CAP}; narrow the filters instead of paging "
            f"past result {RESULT_CAP}",
            after=[str(offset)],
        )
    return offset


def _check_operands(f: SearchFilter) -> None:
    if f.operator == "BETWEEN" and (f.value is None or f.high_value is None):
        raise bad_request("BETWEEN needs value and highValue", propertyName=[f.property_name])
    if f.operator in ("IN", "NOT_IN") and not f.values:
        raise bad_request(f"{f.operator} needs values", propertyName=[f.property_name])
    needs_value = ("EQ", "NEQ", "LT", "LTE", "GT", "GTE", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN")
    if f.operator in needs_value and f.value is None:
        raise bad_request(f"{f.operator} needs a value", propertyName=[f.property_name])


def to_ms(value: str) -> int:
    """A datetime filter operand or stored value: epoch milliseconds or ISO 8601."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{value} is not a valid datetime (ms epoch or ISO 8601)") from None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1000)


class Matcher:
    """Evaluates one search request against records exposed through a property lookup."""

    def __init__(self, request: SearchRequest, catalog: PropertyCatalog) -> None:
        self.request = request
        self.catalog = catalog

    def _typed(self, name: str, raw: str) -> float | str:
        kind = self.catalog.kind(name)
        if kind == "datetime":
            return float(to_ms(raw))
        if kind == "number":
            try:
                return float(raw)
            except ValueError:
                raise bad_request(f"{raw} is not a number", propertyName=[name]) from None
        return raw.lower()

    def _candidates(self, name: str, raw: str) -> list[str]:
        """Multi-select values match option by option; everything else as a whole."""
        prop = self.catalog.get(name)
        return raw.split(";") if prop is not None and prop.multi else [raw]

    def _equals(self, name: str, raw: str, operand: object) -> bool:
        wanted = self._typed(name, to_property_value(operand))
        return any(self._typed(name, c) == wanted for c in self._candidates(name, raw))

    def _within(self, name: str, raw: str, values: Sequence[Scalar]) -> bool:
        """``IN`` compares strings against the operands as given: HubSpot wants them lower-case."""
        if self.catalog.kind(name) == "string":
            return raw.lower() in {to_property_value(v) for v in values}
        return any(self._equals(name, raw, v) for v in values)

    @staticmethod
    def _has_token(raw: str, operand: object) -> bool:
        pattern = to_property_value(operand).lower()
        return any(fnmatch.fnmatchcase(t, pattern) for t in _TOKEN_SPLIT.split(raw.lower()) if t)

    def _filter(self, f: SearchFilter, lookup: Lookup) -> bool:
        raw = lookup(f.property_name)
        if f.operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return (raw not in (None, "")) == (f.operator == "HAS_PROPERTY")
        if raw is None or raw == "":
            return f.operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN")
        return self._compare(f, raw)

    def _compare(self, f: SearchFilter, raw: str) -> bool:
        op, name = f.operator, f.property_name
        if op in ("EQ", "NEQ"):
            return self._equals(name, raw, f.value) == (op == "EQ")
        if op in ("IN", "NOT_IN"):
            return self._within(name, raw, f.values or []) == (op == "IN")
        if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            return self._has_token(raw, f.value) == (op == "CONTAINS_TOKEN")
        have = self._typed(name, raw)
        against = _compare(have, self._typed(name, to_property_value(f.value)))
        if op == "BETWEEN":
            high = self._typed(name, to_property_value(f.high_value))
            return against >= 0 and _compare(have, high) <= 0
        return {"LT": against < 0, "LTE": against <= 0, "GT": against > 0, "GTE": against >= 0}[op]

    def _query(self, lookup: Lookup) -> bool:
        text = (self.request.query or "").strip().lower()
        return not text or any(text in (lookup(name) or "").lower() for name in QUERY_PROPERTIES)

    def matches(self, lookup: Lookup) -> bool:
        """Groups are ORed, filters within a group ANDed; no groups matches everything."""
        groups = self.request.filter_groups
        in_groups = not groups or any(
            all(self._filter(f, lookup) for f in group.filters) for group in groups
        )
        return in_groups and self._query(lookup)

    def order(self, records: Sequence[tuple[int, Lookup]]) -> list[int]:
        """Record ids in the requested order (by id without a sort); missing values last."""
        ids = sorted(record_id for record_id, _ in records)
        if not self.request.sorts:
            return ids
        sort = self.request.sorts[0]
        by_id = dict(records)
        keyed = [(rid, by_id[rid](sort.property_name)) for rid in ids]
        present = [(self._typed(sort.property_name, raw), rid) for rid, raw in keyed if raw]
        present.sort(key=lambda pair: pair[0], reverse=sort.direction == "DESCENDING")
        return [rid for _, rid in present] + [rid for rid, raw in keyed if not raw]


def _compare(a: float | str, b: float | str) -> int:
    """Three-way comparison of two operands of the same property type."""
    if isinstance(a, float) and isinstance(b, float):
        return (a > b) - (a < b)
    return (str(a) > str(b)) - (str(a) < str(b))
