"""HubSpot's wire conventions: error bodies, batch envelopes and timestamps.

Every error the emulator returns goes through :class:`HubSpotError`, so clients always see
the documented ``Error`` shape with a ``correlationId`` (docs/vendors/hubspot.md, "Errors
and how they are mapped"), whichever layer failed: a route, validation, authentication, the
rate limiter or an injected fault.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

RATE_LIMIT_POLICIES = ("TEN_SECONDLY_ROLLING", "DAILY", "SECONDLY")


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """HubSpot's timestamp form: UTC, millisecond precision, ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def compact(values: dict[str, Any]) -> dict[str, Any]:
    """Drop absent optional fields, as HubSpot omits them rather than sending ``null``."""
    return {key: value for key, value in values.items() if value is not None}


class HubSpotError(Exception):
    """A failed call, rendered as HubSpot's ``Error`` body (or the 429 variant)."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str | None = "VALIDATION_ERROR",
        *,
        errors: list[dict[str, Any]] | None = None,
        context: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.errors = errors
        self.context = context
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return (
            compact(
                {
                    "status": "error",
                    "message": self.message,
                    "correlationId": str(uuid.uuid4()),
                    "category": self.category,
                    "errors": self.errors,
                    "context": self.context,
                }
            )
            | self.extra
        )

    def standard_error(self) -> dict[str, Any]:
        """The per-input ``StandardError`` entry a 207 batch response carries."""
        return {
            "status": "error",
            "category": self.category,
            "message": self.message,
            "context": self.context or {},
            "errors": self.errors or [],
            "links": {},
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def bad_request(message: str, **context: list[str]) -> HubSpotError:
    return HubSpotError(400, message, "VALIDATION_ERROR", context=context or None)


def not_found(object_id: str | None = None) -> HubSpotError:
    context = {"id": [object_id]} if object_id is not None else None
    return HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND", context=context)


def rate_limited(policy: str) -> HubSpotError:
    """HubSpot's 429 body: ``errorType`` and ``policyName`` instead of a category
    (docs/vendors/hubspot.md, "Rate limits")."""
    extra = {"errorType": "RATE_LIMIT", "policyName": policy, "requestId": str(uuid.uuid4())}
    return HubSpotError(
        429, f"You have reached your {policy.lower()} limit.", category=None, extra=extra
    )


SCOPES_DOC = "https://developers.hubspot.com/scopes"


def missing_scopes(scopes: Sequence[str]) -> HubSpotError:
    """HubSpot's 403 for a token without a scope the call needs: the ``Error`` body with
    ``category`` ``MISSING_SCOPES``, the scopes in ``context.missingScopes`` (the spec's
    schema) and in ``errors[].context.requiredGranularScopes`` (as observed)."""
    return HubSpotError(
        403,
        "This app hasn't been granted all required scopes to make this call. Read more about "
        f"required scopes here: {SCOPES_DOC}.",
        "MISSING_SCOPES",
        errors=[
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": list(scopes)},
            }
        ],
        context={"missingScopes": list(scopes)},
        extra={"links": {"scopes": SCOPES_DOC}},
    )


def server_error(status: int) -> HubSpotError:
    return HubSpotError(status, HTTPStatus(status).phrase, "INTERNAL_ERROR")


def batch_envelope(
    results: list[dict[str, Any]], errors: list[dict[str, Any]], started: datetime
) -> dict[str, Any]:
    """The ``BatchResponse…`` envelope, with ``numErrors``/``errors`` only when some failed."""
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now()),
    }
    if errors:
        body |= {"numErrors": len(errors), "errors": errors}
    return body


def batch_response(
    results: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    started: datetime,
    success_status: int = 200,
) -> JSONResponse:
    """200 (or 201) when every input succeeded, 207 ``…WithErrors`` when some failed."""
    status = 207 if errors else success_status
    return JSONResponse(batch_envelope(results, errors, started), status_code=status)
