"""Dataverse's wire conventions: one call and its answer, error bodies, timestamps.

A call reaches the emulated Web API either as an HTTP request or as one part of a ``$batch``;
both become a :class:`Call` and are answered with a :class:`Reply`, so a batch part is
treated exactly like the same request sent alone. Every failure is a
:class:`DataverseError`, rendered as ``{"error":{"code":"0x…","message":"…"}}`` whose code is
often empty (docs/vendors/dynamics.md,
"Web API basics").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Response

API_ROOT = "/api/data/v9.2"
ODATA_HEADERS = {"OData-Version": "4.0"}

# Error codes (hex HRESULTs, as Dataverse writes them) and the messages that go with them.
DOES_NOT_EXIST = "0x80040217"  # ObjectDoesNotExist
DUPLICATE_RECORD = "0x80040237"  # a create naming the key of a row that exists
QUERY_ERROR = "0x80060888"  # the OData query options: unknown property, $skip, bad $filter
INVALID_PROPERTY = "0x80048d19"  # a body naming a column the table has not got
NOT_A_MEMBER = "0x80072560"  # an app that is no application user of the environment
EXPIRED_VERSION_STAMP = "0x80044352"  # a change-tracking token past its expiry
REQUESTS_LIMIT = "0x80072322"
EXECUTION_TIME_LIMIT = "0x80072321"
CONCURRENCY_LIMIT = "0x80072326"
EXPIRED_MESSAGE = (
    "Version stamp associated with the client has expired. Please perform a full sync."
)


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Dataverse's ``Edm.DateTimeOffset`` form: UTC, whole seconds, ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DataverseError(Exception):
    """A failed call as Dataverse reports it: a status, a code (maybe empty), a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def reply(self) -> Reply:
        body = {"error": {"code": self.code, "message": self.message}}
        return Reply(self.status, body, self.headers)


def query_error(message: str) -> DataverseError:
    return DataverseError(400, QUERY_ERROR, message)


def no_property(name: str, logical_name: str) -> DataverseError:
    """What ``$select`` or ``$filter`` of a column the table has not got answers."""
    return query_error(
        f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{logical_name}'."
    )


def does_not_exist(logical_name: str, record_id: str, code: str = DOES_NOT_EXIST) -> DataverseError:
    return DataverseError(404, code, f"{logical_name} With Id = {record_id} Does Not Exist")


class Headers(dict[str, str]):
    """Request headers by lower-case name (batch parts carry their own)."""

    @classmethod
    def of(cls, pairs: Any) -> Headers:
        return cls((str(k).lower(), str(v)) for k, v in pairs)

    def prefer(self) -> dict[str, str]:
        """``Prefer`` preferences by name: ``odata.maxpagesize=10`` -> ``{name: "10"}``."""
        found: dict[str, str] = {}
        for item in self.get("prefer", "").split(","):
            name, _, value = item.strip().partition("=")
            if name:
                found[name.strip().lower()] = value.strip().strip('"')
        return found


@dataclass
class Call:
    """One Web API request: ``path`` is below the API root (``contacts(…)``), no query."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes
    base_url: str  # scheme and host, for the links answers carry
    user: str = ""  # the calling app's client id, once authenticated

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise DataverseError(400, "", "Error parsing the request body as JSON.") from exc
        if not isinstance(value, dict):
            raise DataverseError(400, "", "The request body must be a JSON object.")
        return value

    def api(self, rest: str) -> str:
        """The absolute URL of ``rest`` below the API root."""
        return f"{self.base_url}{API_ROOT}/{rest}"


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()

    def response(self) -> Response:
        headers = ODATA_HEADERS | self.headers
        if self.body is None:
            return Response(status_code=self.status, headers=headers)
        return Response(
            self.encoded(),
            status_code=self.status,
            headers=headers,
            media_type="application/json; odata.metadata=minimal",
        )
