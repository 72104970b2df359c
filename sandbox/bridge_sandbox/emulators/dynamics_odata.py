"""The OData the Dataverse emulator understands: a ``$filter`` subset and ``$batch`` bodies.

``$filter``: comparisons (``eq ne gt ge lt le``) of a column with a string, GUID, number,
boolean, ``null``, date-time or date; ``and``, ``or``, ``not`` and parentheses; ``contains``,
``startswith``, ``endswith``; and ``Microsoft.Dynamics.CRM.In(PropertyName=…,
PropertyValues=[…])``. Anything else is refused as Dataverse refuses a query it cannot read.
``$batch``: multipart/mixed with ``application/http`` parts and nested changesets, parsed into
:class:`BatchPart` lists and answered in the same framing (docs/vendors/dynamics.md,
"$batch").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from bridge_sandbox.emulators.dynamics_http import (
    DataverseError,
    Headers,
    Reply,
    parse_iso,
    query_error,
)

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
    | (?P<datetime>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)
    | (?P<date>\d{4}-\d{2}-\d{2}\b)
    | (?P<number>-?\d+(?:\.\d+)?\b)
    | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<punct>[()\[\],=])
    )""",
    re.VERBOSE,
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
}
_FUNCTIONS: dict[str, Callable[[Any, Any], bool]] = {
    "contains": lambda a, b: b in a,
    "startswith": lambda a, b: a.startswith(b),
    "endswith": lambda a, b: a.endswith(b),
}
IN_FUNCTION = "Microsoft.Dynamics.CRM.In"


def _comparable(value: Any) -> Any:
    """Strings compare case-insensitively (Dataverse's default collation), date-times by
    instant; GUIDs are strings here, so their case does not matter either."""
    if isinstance(value, str):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})?", value):
            return parse_iso(value)
        return value.lower()
    return value


class FilterParser:
    """Recursive descent over the tokens of one ``$filter`` expression."""

    def __init__(self, text: str, columns: Collection[str], unknown: Callable[[str], Exception]):
        self.tokens = self._tokenise(text)
        self.pos = 0
        self.columns = columns
        self.unknown = unknown

    @staticmethod
    def _tokenise(text: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        while pos < len(text):
            if not text[pos:].strip():
                break
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                raise query_error(f"Syntax error at position {pos} in '{text}'.")
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        return tokens

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise query_error(f"Syntax error: unexpected '{self.tokens[self.pos][1]}'.")
        return predicate

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token[0] == "end" or (value is not None and token[1] != value):
            raise query_error(f"Syntax error: expected '{value or 'a term'}'.")
        self.pos += 1
        return token

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._peek() == ("name", "or"):
            self._take()
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else lambda row: any(t(row) for t in terms)

    def _and(self) -> Predicate:
        terms = [self._unary()]
        while self._peek() == ("name", "and"):
            self._take()
            terms.append(self._unary())
        return terms[0] if len(terms) == 1 else lambda row: all(t(row) for t in terms)

    def _unary(self) -> Predicate:
        if self._peek() == ("name", "not"):
            self._take()
            inner = self._unary()
            return lambda row: not inner(row)
        if self._peek() == ("punct", "("):
            self._take()
            inner = self._or()
            self._take(")")
            return inner
        kind, name = self._take()
        if kind != "name":
            raise query_error(f"Syntax error: expected a property, found '{name}'.")
        if name in _FUNCTIONS:
            return self._function(name)
        if name == IN_FUNCTION:
            return self._in()
        column = self._column(name)
        operator = self._take()[1]
        if operator not in _COMPARISONS:
            raise query_error(f"Syntax error: unknown operator '{operator}'.")
        value = _comparable(self._literal())
        compare = _COMPARISONS[operator]

        def test(row: Row) -> bool:
            try:
                return bool(compare(_comparable(row.get(column)), value))
            except TypeError as exc:  # a string column against a number, and the like
                raise query_error(f"Operator '{operator}' does not fit '{column}'.") from exc

        return test

    def _column(self, name: str) -> str:
        if name not in self.columns:
            raise self.unknown(name)
        return name

    def _function(self, name: str) -> Predicate:
        self._take("(")
        column = self._column(self._take()[1])
        self._take(",")
        needle = _comparable(self._literal())
        self._take(")")
        test = _FUNCTIONS[name]
        return lambda row: (
            isinstance(row.get(column), str) and test(_comparable(row[column]), needle)
        )

    def _in(self) -> Predicate:
        """``In(PropertyName='col',PropertyValues=['a','b'])``: any of the values."""
        self._take("(")
        self._take("PropertyName")
        self._take("=")
        column = self._column(str(self._literal()))
        self._take(",")
        self._take("PropertyValues")
        self._take("=")
        self._take("[")
        values = [_comparable(self._literal())]
        while self._peek() == ("punct", ","):
            self._take()
            values.append(_comparable(self._literal()))
        self._take("]")
        self._take(")")
        return lambda row: _comparable(row.get(column)) in values

    def _literal(self) -> Any:
        kind, text = self._take()
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "guid":
            return text.lower()
        if kind in ("datetime", "date"):  # a date-only column compares as its ISO text
            return text
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "name" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        raise query_error(f"Syntax error: expected a literal, found '{text}'.")


def parse_filter(
    text: str, columns: Collection[str], unknown: Callable[[str], Exception]
) -> Predicate:
    """A predicate over rows; ``unknown(name)`` is raised for a column the table lacks."""
    return FilterParser(text, columns, unknown).parse()


# -- $batch ---------------------------------------------------------------------------------

MAX_BATCH_REQUESTS = 1000


@dataclass
class BatchRequest:
    """One ``application/http`` part: the request line, its headers and body."""

    method: str
    url: str
    headers: Headers
    body: bytes
    content_id: str | None = None


@dataclass
class BatchPart:
    """A lone request, or a changeset of several (all or nothing)."""

    requests: list[BatchRequest]
    changeset: bool = False


@dataclass
class BatchAnswer:
    replies: list[tuple[BatchRequest, Reply]] = field(default_factory=list)
    changeset: bool = False


def boundary_of(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise DataverseError(400, "", "The batch request must have a boundary.")
    return match.group(1)


def _sections(body: str, boundary: str) -> list[str]:
    """The parts between ``--boundary`` lines, up to ``--boundary--``."""
    end = body.find(f"--{boundary}--")
    inner = body[: end if end >= 0 else len(body)]
    pieces = re.split(rf"(?m)^--{re.escape(boundary)}[ \t]*\n", inner)
    return [piece for piece in pieces[1:] if piece.strip()]


def _split_headers(text: str) -> tuple[Headers, str]:
    head, _, rest = text.partition("\n\n")
    pairs = [line.split(":", 1) for line in head.splitlines() if ":" in line]
    return Headers.of((k.strip(), v.strip()) for k, v in pairs), rest


def _request(section: str) -> BatchRequest:
    mime, payload = _split_headers(section.lstrip("\n"))
    line, _, rest = payload.lstrip("\n").partition("\n")
    method, _, target = line.strip().partition(" ")
    url = target.rsplit(" HTTP/", 1)[0].strip()
    headers, body = _split_headers(rest) if rest.strip() else (Headers(), "")
    return BatchRequest(
        method.upper(),
        url,
        headers,
        body.rstrip("\n").encode(),
        mime.get("content-id") or headers.get("content-id"),
    )


def parse_batch(body: bytes, content_type: str) -> list[BatchPart]:
    """The parts of a ``$batch`` body; GET inside a changeset and too many requests refused."""
    text = body.decode("utf-8", errors="replace").replace("\r\n", "\n")
    parts: list[BatchPart] = []
    for section in _sections(text, boundary_of(content_type)):
        mime, rest = _split_headers(section.lstrip("\n"))
        if mime.get("content-type", "").startswith("multipart/mixed"):
            inner = [_request(s) for s in _sections(rest, boundary_of(mime["content-type"]))]
            if any(r.method == "GET" for r in inner):
                raise DataverseError(400, "", "GET requests are not allowed in a change set.")
            parts.append(BatchPart(inner, changeset=True))
        else:
            parts.append(BatchPart([_request(section)]))
    if sum(len(p.requests) for p in parts) > MAX_BATCH_REQUESTS:
        raise DataverseError(
            400, "", f"The number of requests in a batch exceeds {MAX_BATCH_REQUESTS}."
        )
    return parts


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}
_REASONS |= {403: "Forbidden", 404: "Not Found", 412: "Precondition Failed"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def _http_part(request: BatchRequest, reply: Reply, in_changeset: bool) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if in_changeset and request.content_id:
        lines.append(f"Content-ID: {request.content_id}")
    lines += ["", f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}".rstrip()]
    headers = {"OData-Version": "4.0"} | reply.headers
    if reply.body is not None:
        headers["Content-Type"] = "application/json; odata.metadata=minimal"
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["", reply.encoded().decode()]
    return "\r\n".join(lines)


def render_batch(answers: list[BatchAnswer]) -> tuple[str, bytes]:
    """The response body and its content type, changesets nested as Dataverse nests them."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    chunks: list[str] = []
    for answer in answers:
        if answer.changeset:
            inner = f"changesetresponse_{uuid.uuid4()}"
            parts = [f"--{inner}\r\n{_http_part(r, a, True)}" for r, a in answer.replies]
            body = "\r\n".join(parts) + f"\r\n--{inner}--"
            chunks.append(f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n{body}")
        else:
            chunks += [_http_part(r, a, False) for r, a in answer.replies]
    text = "".join(f"--{boundary}\r\n{chunk}\r\n" for chunk in chunks) + f"--{boundary}--\r\n"
    return f"multipart/mixed; boundary={boundary}", text.encode()
