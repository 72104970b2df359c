"""SOQL semantics: resolve a parsed query against the schema, then filter, sort and render rows.

SOQL is not SQL: text comparisons ignore case, ``!=`` and ``NOT IN`` match nulls, a literal
must have its field's type (``'true'`` is not a boolean), ``ASC`` puts nulls first and
relationship fields come back as nested records. These rules live here, with the errors
Salesforce gives when a query breaks them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from bridge_sandbox.emulators.salesforce_model import (
    ID_TYPES,
    TEXT_TYPES,
    ApiError,
    FieldDef,
    ObjectDef,
    Record,
    SalesforceError,
    Schema,
    json_value,
    no_such_column,
    normalize_id,
    text_value,
)
from bridge_sandbox.emulators.salesforce_soql import (
    Comparison,
    Condition,
    FieldPath,
    InList,
    Junction,
    LiteralValue,
    Not,
    Query,
    SoqlSyntaxError,
    StringLiteral,
    error_location,
    like_pattern,
    parse,
)

T = TypeVar("T")
Lookup = Callable[[str], Record | None]
Predicate = Callable[[Record], bool]
MAX_OFFSET = 2000

_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_TYPE_NAMES = {"boolean": "boolean", "double": "double", "datetime": "dateTime", "date": "date"}


class QueryError(Exception):
    """A query Salesforce rejects: its error code, message and where it points."""

    def __init__(self, code: str, message: str, position: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.position = position


def soql_error(source: str, code: str, message: str, position: int) -> SalesforceError:
    """Salesforce's 400 for a bad query, quoting the line and pointing at the column."""
    row, column, line = error_location(source, position)
    framed = f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{message}"
    return SalesforceError(400, ApiError(code, framed))


@dataclass(frozen=True)
class Column:
    """A field path resolved against the schema: the reference fields to follow, then a field."""

    hops: tuple[FieldDef, ...]
    field: FieldDef

    @property
    def label(self) -> str:
        """``Individual.ShouldForget``: the Bulk API's CSV header for this column."""
        return ".".join([*(hop.relationship or hop.name for hop in self.hops), self.field.name])


@dataclass(frozen=True)
class Plan:
    """A query ready to run: which rows, in which order, rendered how."""

    sobject: ObjectDef
    columns: tuple[Column, ...]
    predicate: Predicate | None
    order: tuple[tuple[Column, bool, bool], ...]
    limit: int | None
    offset: int | None
    lookup: Lookup

    @property
    def is_count(self) -> bool:
        return not self.columns

    def value(self, column: Column, record: Record) -> Any:
        return column_value(column, record, self.lookup)

    def select(self, records: Iterable[Record]) -> list[Record]:
        """The matching rows, sorted, after OFFSET and LIMIT."""
        rows = [r for r in records if self.predicate is None or self.predicate(r)]
        for column, descending, nulls_first in reversed(self.order):
            rows = self._sorted(rows, column, descending, nulls_first)
        start = self.offset or 0
        end = None if self.limit is None else start + self.limit
        return rows[start:end]

    def _sorted(
        self, rows: list[Record], column: Column, descending: bool, nulls_first: bool
    ) -> list[Record]:
        """A stable sort on one key, so that sorting key by key from the last gives ORDER BY."""
        keyed = [(_comparable(column.field, self.value(column, row)), row) for row in rows]
        nulls = [row for key, row in keyed if key is None]
        present = [pair for pair in keyed if pair[0] is not None]
        present.sort(key=lambda pair: pair[0], reverse=descending)
        ordered = [row for _, row in present]
        return nulls + ordered if nulls_first else ordered + nulls

    def render(self, record: Record, version: str) -> dict[str, Any]:
        """A query row as REST returns it: ``attributes``, then fields; parents nested."""
        out: dict[str, Any] = {"attributes": record.attributes(version)}
        for column in self.columns:
            node, current = out, record
            for hop in column.hops:
                parent = _parent(current, hop, self.lookup)
                key = hop.relationship or hop.name
                if parent is None:
                    node[key] = None
                    break
                node = node.setdefault(key, {"attributes": parent.attributes(version)})
                current = parent
            else:
                node[column.field.name] = json_value(current.values.get(column.field.name))
        return out

    def csv_header(self) -> list[str]:
        return [column.label for column in self.columns]

    def csv_row(self, record: Record) -> list[str]:
        return [text_value(self.value(column, record)) for column in self.columns]


def compile_query(source: str, schema: Schema, lookup: Lookup) -> Plan:
    """Parse and resolve SOQL, or raise Salesforce's 400 (MALFORMED_QUERY, INVALID_FIELD...)."""
    try:
        query = parse(source)
        return _Resolver(schema, query, lookup).plan()
    except SoqlSyntaxError as exc:
        raise soql_error(source, "MALFORMED_QUERY", exc.message, exc.position) from exc
    except QueryError as exc:
        raise soql_error(source, exc.code, exc.message, exc.position) from exc


class _Resolver:
    def __init__(self, schema: Schema, query: Query, lookup: Lookup) -> None:
        self.schema = schema
        self.query = query
        self.lookup = lookup
        sobject = schema.object(query.sobject)
        if sobject is None:
            raise QueryError(
                "INVALID_TYPE",
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use "
                "a custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
                query.sobject_position,
            )
        self.sobject = sobject

    def plan(self) -> Plan:
        query = self.query
        columns = tuple(self.column(path) for path in query.fields)
        seen: set[str] = set()
        for path, column in zip(query.fields, columns, strict=True):
            if column.label.lower() in seen:
                raise QueryError(
                    "MALFORMED_QUERY", f"duplicate field selected: {column.label}", path.position
                )
            seen.add(column.label.lower())
        if query.offset is not None and query.offset > MAX_OFFSET:
            raise QueryError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"Maximum SOQL offset allowed is {MAX_OFFSET}",
                query.sobject_position,
            )
        return Plan(
            sobject=self.sobject,
            columns=columns,
            predicate=self.condition(query.where) if query.where else None,
            order=tuple(
                (self.column(item.field), item.descending, item.nulls_first)
                for item in query.order_by
            ),
            limit=query.limit,
            offset=query.offset,
            lookup=self.lookup,
        )

    def column(self, path: FieldPath) -> Column:
        parts = list(path.parts)
        types = [self.sobject]
        prefixed = len(parts) > 1 and parts[0].lower() == self.sobject.name.lower()
        if prefixed and self.sobject.relationship(parts[0]) is None:
            parts = parts[1:]
        hops: list[FieldDef] = []
        for part in parts[:-1]:
            hop = _first(sobject.relationship(part) for sobject in types)
            if hop is None:
                raise QueryError(
                    "INVALID_FIELD",
                    f"Didn't understand relationship '{part}' in field path. If you are "
                    "attempting to use a custom relationship, be sure to append the '__r' after "
                    "the custom relationship name. Please reference your WSDL or the describe "
                    "call for the appropriate names.",
                    path.position,
                )
            hops.append(hop)
            types = [t for t in (self.schema.object(name) for name in hop.references) if t]
        field = _first(sobject.field(parts[-1]) for sobject in types)
        if field is None:
            raise QueryError(
                "INVALID_FIELD", no_such_column(parts[-1], types[0].name), path.position
            )
        return Column(tuple(hops), field)

    def condition(self, condition: Condition) -> Predicate:
        if isinstance(condition, Junction):
            parts = [self.condition(operand) for operand in condition.operands]
            combine = all if condition.operator == "AND" else any
            return lambda record: combine(part(record) for part in parts)
        if isinstance(condition, Not):
            inner = self.condition(condition.operand)
            return lambda record: not inner(record)
        column = self.column(condition.field)
        if isinstance(condition, InList):
            return self.membership(column, condition)
        return self.comparison(column, condition)

    def membership(self, column: Column, condition: InList) -> Predicate:
        options = [self.operand(column.field, v, condition.position) for v in condition.values]
        negated = condition.negated
        field = column.field

        def test(record: Record) -> bool:
            return (_comparable(field, self.value(column, record)) in options) != negated

        return test

    def comparison(self, column: Column, condition: Comparison) -> Predicate:
        field = column.field
        if condition.operator == "LIKE":
            if field.type not in TEXT_TYPES or not isinstance(condition.value, StringLiteral):
                raise QueryError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    f"invalid operator on {'id' if field.type in ID_TYPES else field.type} field",
                    condition.position,
                )
            pattern = like_pattern(condition.value)

            def like(record: Record) -> bool:
                value = self.value(column, record)
                return isinstance(value, str) and pattern.fullmatch(value) is not None

            return like
        operand = self.operand(field, condition.value, condition.position)
        if condition.operator in ("=", "!="):
            negated = condition.operator == "!="
            return lambda record: (
                (_comparable(field, self.value(column, record)) == operand) != negated
            )
        ordering = _ORDERINGS[condition.operator]

        def compare(record: Record) -> bool:
            value = _comparable(field, self.value(column, record))
            return value is not None and operand is not None and ordering(value, operand)

        return compare

    def value(self, column: Column, record: Record) -> Any:
        return column_value(column, record, self.lookup)

    def operand(self, field: FieldDef, literal: LiteralValue, position: int) -> Any:
        """The literal as a value comparable with the field's, or Salesforce's type error."""
        if literal is None:
            return None
        kind = field.type
        if kind in ID_TYPES and isinstance(literal, StringLiteral):
            normalized = normalize_id(literal.value)
            if normalized is None:
                raise QueryError(
                    "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal.value}", position
                )
            return normalized
        if kind in TEXT_TYPES and isinstance(literal, StringLiteral):
            return literal.value.casefold()
        if _literal_fits(kind, literal):
            return literal
        if kind in TEXT_TYPES or kind in ID_TYPES:
            expected = "string and should be enclosed in quotes"
        else:
            expected = f"{_TYPE_NAMES[kind]} and should not be enclosed in quotes"
        raise QueryError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{field.name}' must be of type {expected}",
            position,
        )


def _literal_fits(kind: str, literal: LiteralValue) -> bool:
    if kind == "boolean":
        return isinstance(literal, bool)
    if kind == "double":
        return isinstance(literal, int | float) and not isinstance(literal, bool)
    if kind == "datetime":
        return isinstance(literal, datetime)
    if kind == "date":
        return isinstance(literal, date) and not isinstance(literal, datetime)
    return False


def _comparable(field: FieldDef, value: Any) -> Any:
    """Text compares without case in SOQL; everything else as stored."""
    if isinstance(value, str) and field.type in TEXT_TYPES:
        return value.casefold()
    return value


def _first(candidates: Iterable[T | None]) -> T | None:
    return next((candidate for candidate in candidates if candidate is not None), None)


def _parent(record: Record, hop: FieldDef, lookup: Lookup) -> Record | None:
    parent_id = record.values.get(hop.name)
    return lookup(parent_id) if parent_id else None


def column_value(column: Column, record: Record, lookup: Lookup) -> Any:
    """The value a column has for a row; null when any parent on the way is missing."""
    current: Record | None = record
    for hop in column.hops:
        current = _parent(current, hop, lookup) if current else None
    return current.values.get(column.field.name) if current else None
