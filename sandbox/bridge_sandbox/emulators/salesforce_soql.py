"""SOQL syntax for the Salesforce emulator: a tokenizer and a recursive-descent parser.

Only syntax lives here; whether a field or object exists is checked against the emulator's
schema in ``salesforce_query``. Errors carry the offset of the offending token so that the
emulator can point at it the way Salesforce does (``ERROR at Row:1:Column:29``).

Supported: ``SELECT`` field paths (``Individual.ShouldForget``) or ``COUNT()``, ``FROM``,
``WHERE`` with ``AND``/``OR``/``NOT`` and parentheses, ``= != < <= > >=``, ``[NOT] IN (...)``,
``LIKE``, literals (strings with SOQL escapes, numbers, ``TRUE``/``FALSE``/``NULL``, date and
datetime literals), ``ORDER BY`` (``ASC``/``DESC``, ``NULLS FIRST``/``LAST``), ``LIMIT`` and
``OFFSET``. Anything else (sub-queries, ``GROUP BY``, date functions, ``TODAY``) is rejected
as ``MALFORMED_QUERY``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TypeAlias

KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "NULL",
        "TRUE",
        "FALSE",
        "ORDER",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "LIMIT",
        "OFFSET",
        "COUNT",
    }
)
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")

# What a backslash may escape inside a SOQL string literal, and what it stands for. ``\%`` and
# ``\_`` stay wildcard escapes: they mean a literal ``%``/``_`` in a LIKE pattern.
_ESCAPES = {
    "n": "\n",
    "N": "\n",
    "r": "\r",
    "R": "\r",
    "t": "\t",
    "T": "\t",
    "b": "\b",
    "B": "\b",
    "f": "\f",
    "F": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "%": "%",
    "_": "_",
}
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?(Z|[+-]\d{2}:?\d{2})"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?![\w:])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?![\w.:-])")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = re.compile(r"\s+")
_DIGITS = frozenset("0123456789")


class SoqlSyntaxError(ValueError):
    """The query is not SOQL; ``position`` is the offset Salesforce would point at."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


@dataclass(frozen=True)
class StringLiteral:
    """A decoded string, plus the offsets of ``%``/``_`` that were escaped (literal in LIKE)."""

    value: str
    escaped_wildcards: frozenset[int] = frozenset()


LiteralValue: TypeAlias = StringLiteral | bool | int | float | datetime | date | None


@dataclass(frozen=True)
class Token:
    kind: str  # ident, keyword, string, number, datetime, date, op, punct, eof
    text: str
    position: int
    value: LiteralValue = None

    def is_keyword(self, *words: str) -> bool:
        return self.kind == "keyword" and self.text.upper() in words


@dataclass(frozen=True)
class FieldPath:
    """``Individual.ShouldForget`` as ``("Individual", "ShouldForget")``, as written."""

    parts: tuple[str, ...]
    position: int

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Comparison:
    field: FieldPath
    operator: str  # one of COMPARISONS, or "LIKE"
    value: LiteralValue
    position: int


@dataclass(frozen=True)
class InList:
    field: FieldPath
    values: tuple[LiteralValue, ...]
    negated: bool
    position: int


@dataclass(frozen=True)
class Not:
    operand: Condition


@dataclass(frozen=True)
class Junction:
    operator: str  # "AND" or "OR"
    operands: tuple[Condition, ...]


Condition = Comparison | InList | Not | Junction


@dataclass(frozen=True)
class OrderItem:
    field: FieldPath
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Query:
    fields: tuple[FieldPath, ...]  # empty for SELECT COUNT()
    sobject: str
    sobject_position: int
    where: Condition | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None

    @property
    def is_count(self) -> bool:
        return not self.fields


def tokenize(source: str) -> list[Token]:
    """Split SOQL into tokens; strings are decoded here, with their escapes checked."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        space = _SPACE.match(source, pos)
        if space:
            pos = space.end()
            continue
        char = source[pos]
        if char == "'":
            token, pos = _read_string(source, pos)
        elif char in _DIGITS or (char == "-" and source[pos + 1 : pos + 2] in _DIGITS):
            token, pos = _read_number_or_date(source, pos)
        elif match := _IDENT.match(source, pos):
            word = match.group()
            kind = "keyword" if word.upper() in KEYWORDS else "ident"
            token, pos = Token(kind, word, pos), match.end()
        elif source.startswith(("!=", "<=", ">="), pos):
            token, pos = Token("op", source[pos : pos + 2], pos), pos + 2
        elif char in "=<>":
            token, pos = Token("op", char, pos), pos + 1
        elif char in "(),.":
            token, pos = Token("punct", char, pos), pos + 1
        else:
            raise SoqlSyntaxError(f"unexpected token: '{char}'", pos)
        tokens.append(token)
    tokens.append(Token("eof", "<EOF>", len(source)))
    return tokens


def _read_string(source: str, start: int) -> tuple[Token, int]:
    chars: list[str] = []
    escaped: set[int] = set()
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == "'":
            literal = StringLiteral("".join(chars), frozenset(escaped))
            return Token("string", source[start : pos + 1], start, literal), pos + 1
        if char == "\\":
            code = source[pos + 1 : pos + 2]
            if code not in _ESCAPES:
                raise SoqlSyntaxError(
                    f"Invalid string literal '{source[start:pos]}'. Illegal character sequence "
                    f"'\\{code}' in string literal.",
                    pos,
                )
            if code in "%_":
                escaped.add(len(chars))
            chars.append(_ESCAPES[code])
            pos += 2
            continue
        chars.append(char)
        pos += 1
    raise SoqlSyntaxError("mismatched character '<EOF>' expecting '''", len(source))


def _read_number_or_date(source: str, start: int) -> tuple[Token, int]:
    if match := _DATETIME.match(source, start):
        year, month, day, hour, minute, second, millis, zone = match.groups()
        try:
            value: LiteralValue = datetime(
                int(year),
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second),
                int((millis or "0").ljust(3, "0")) * 1000,
                tzinfo=_zone(zone),
            )
        except ValueError as exc:
            raise SoqlSyntaxError(f"unexpected token: '{match.group()}'", start) from exc
        return Token("datetime", match.group(), start, value), match.end()
    if match := _DATE.match(source, start):
        try:
            value = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError as exc:
            raise SoqlSyntaxError(f"unexpected token: '{match.group()}'", start) from exc
        return Token("date", match.group(), start, value), match.end()
    if match := _NUMBER.match(source, start):
        text = match.group()
        return Token("number", text, start, float(text) if "." in text else int(text)), match.end()
    end = start + 1
    while end < len(source) and not source[end].isspace() and source[end] not in "(),":
        end += 1
    raise SoqlSyntaxError(f"unexpected token: '{source[start:end]}'", start)


def _zone(text: str) -> timezone:
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse(source: str) -> Query:
    """Parse a SOQL query, or raise ``SoqlSyntaxError`` at the first token that does not fit."""
    return _Parser(tokenize(source)).query()


class _Parser:
    """One method per grammar rule; ``self.tokens[self.index]`` is the lookahead."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.current
        if token.kind != "eof":
            self.index += 1
        return token

    def unexpected(self) -> SoqlSyntaxError:
        token = self.current
        return SoqlSyntaxError(f"unexpected token: '{token.text}'", token.position)

    def expect_keyword(self, word: str) -> Token:
        if not self.current.is_keyword(word):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        if not (self.current.kind == "punct" and self.current.text == char):
            raise self.unexpected()
        return self.advance()

    def at_punct(self, char: str) -> bool:
        return self.current.kind == "punct" and self.current.text == char

    def query(self) -> Query:
        self.expect_keyword("SELECT")
        fields = self.select_list()
        self.expect_keyword("FROM")
        if self.current.kind != "ident":
            raise self.unexpected()
        sobject = self.advance()
        where = None
        if self.current.is_keyword("WHERE"):
            self.advance()
            where = self.condition()
        order_by: tuple[OrderItem, ...] = ()
        if self.current.is_keyword("ORDER"):
            self.advance()
            self.expect_keyword("BY")
            order_by = self.order_list()
        limit = self.integer_clause("LIMIT")
        offset = self.integer_clause("OFFSET")
        if self.current.kind != "eof":
            raise self.unexpected()
        return Query(fields, sobject.text, sobject.position, where, order_by, limit, offset)

    def select_list(self) -> tuple[FieldPath, ...]:
        if self.current.is_keyword("COUNT"):
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            return ()
        fields = [self.field_path()]
        while self.at_punct(","):
            self.advance()
            fields.append(self.field_path())
        return tuple(fields)

    def field_path(self) -> FieldPath:
        if self.current.kind != "ident":
            raise self.unexpected()
        first = self.advance()
        parts = [first.text]
        while self.at_punct("."):
            self.advance()
            if self.current.kind != "ident":
                raise self.unexpected()
            parts.append(self.advance().text)
        return FieldPath(tuple(parts), first.position)

    def condition(self) -> Condition:
        """``a AND b AND c`` or ``a OR b``; mixing them needs parentheses, as in SOQL."""
        first = self.unary()
        if not self.current.is_keyword("AND", "OR"):
            return first
        operator = self.current.text.upper()
        operands = [first]
        while self.current.is_keyword("AND", "OR"):
            if self.current.text.upper() != operator:
                raise self.unexpected()
            self.advance()
            operands.append(self.unary())
        return Junction(operator, tuple(operands))

    def unary(self) -> Condition:
        if self.current.is_keyword("NOT"):
            self.advance()
            return Not(self.unary())
        if self.at_punct("("):
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.predicate()

    def predicate(self) -> Condition:
        field = self.field_path()
        token = self.current
        if token.kind == "op":
            self.advance()
            return Comparison(field, token.text, self.literal(), token.position)
        if token.is_keyword("LIKE"):
            self.advance()
            return Comparison(field, "LIKE", self.literal(), token.position)
        negated = token.is_keyword("NOT")
        if negated:
            self.advance()
        self.expect_keyword("IN")
        self.expect_punct("(")
        values = [self.literal()]
        while self.at_punct(","):
            self.advance()
            values.append(self.literal())
        self.expect_punct(")")
        return InList(field, tuple(values), negated, token.position)

    def literal(self) -> LiteralValue:
        token = self.current
        if token.kind in ("string", "number", "datetime", "date"):
            self.advance()
            return token.value
        if token.is_keyword("TRUE", "FALSE", "NULL"):
            self.advance()
            return {"TRUE": True, "FALSE": False, "NULL": None}[token.text.upper()]
        raise self.unexpected()

    def order_list(self) -> tuple[OrderItem, ...]:
        items = [self.order_item()]
        while self.at_punct(","):
            self.advance()
            items.append(self.order_item())
        return tuple(items)

    def order_item(self) -> OrderItem:
        field = self.field_path()
        descending = False
        if self.current.is_keyword("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_first = not descending
        if self.current.is_keyword("NULLS"):
            self.advance()
            if not self.current.is_keyword("FIRST", "LAST"):
                raise self.unexpected()
            nulls_first = self.advance().text.upper() == "FIRST"
        return OrderItem(field, descending, nulls_first)

    def integer_clause(self, keyword: str) -> int | None:
        if not self.current.is_keyword(keyword):
            return None
        self.advance()
        token = self.current
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.unexpected()
        self.advance()
        return token.value


def like_pattern(literal: StringLiteral) -> re.Pattern[str]:
    """A case-insensitive regex for a LIKE pattern: ``%`` any run, ``_`` one character."""
    parts = []
    for offset, char in enumerate(literal.value):
        if char == "%" and offset not in literal.escaped_wildcards:
            parts.append(".*")
        elif char == "_" and offset not in literal.escaped_wildcards:
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def error_location(source: str, position: int) -> tuple[int, int, str]:
    """Row and column (1-based) of an offset, and the text of its line, for error messages."""
    before = source[:position]
    row = before.count("\n") + 1
    line_start = before.rfind("\n") + 1
    line_end = source.find("\n", position)
    line = source[line_start : line_end if line_end >= 0 else len(source)]
    return row, position - line_start + 1, line
