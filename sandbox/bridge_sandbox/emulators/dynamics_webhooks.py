"""Webhooks of the emulated environment: service endpoints and their deliveries.

After a committed Create, Update or Delete of a contact or lead through the Web API, each
registered endpoint whose messages and tables match gets a serialised
``RemoteExecutionContext`` (post-operation, asynchronous), posted from a background thread:
timeout 60 s, one retry only after 502, 503 or 504, the key sent as the endpoint's
authentication option says (docs/vendors/dynamics.md, "Webhooks"). Admin seeding sends
nothing. Tests read the outcomes through the admin API.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field

from bridge_sandbox.emulators.dynamics_http import now

Message = Literal["Create", "Update", "Delete"]
Notified = Literal["contact", "lead"]
MESSAGES: tuple[Message, ...] = ("Create", "Update", "Delete")
NOTIFIED: tuple[Notified, ...] = ("contact", "lead")
RETRIED = (502, 503, 504)
TIMEOUT_S = 60.0


class WebhookEndpoint(BaseModel):
    """A service endpoint (``contract`` 8) and its steps: which messages on which tables."""

    url: str
    auth: Literal["HttpHeader", "WebhookKey", "HttpQueryString"]
    key_name: str = Field("", description="the header or query name; WebhookKey uses 'code'")
    key_value: str
    messages: list[Message] = list(MESSAGES)  # pydantic copies a mutable default
    entities: list[Notified] = list(NOTIFIED)


@dataclass
class Event:
    """One committed operation on a row, as a webhook reports it."""

    message: Message
    entity: str  # logical name
    record_id: str
    attributes: dict[str, Any] = field(default_factory=dict)  # empty for Delete


def ms_date(moment: datetime) -> str:
    """The WCF JSON date form of ``OperationCreatedOn``: ``/Date(<ms since epoch>)/``."""
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _pairs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": value} for key, value in values.items()]


def _target(event: Event) -> dict[str, Any]:
    """The ``Target`` input parameter. Attribute values go as the Web API holds them; the
    real serialiser wraps choice and date values in its own types (not verified). A Delete's
    Target as an EntityReference is by analogy with plug-ins (not verified: the doc shows
    only an Update)."""
    if event.message == "Delete":
        return {"LogicalName": event.entity, "Id": event.record_id, "Name": None}
    return {
        "LogicalName": event.entity,
        "Id": event.record_id,
        "Attributes": _pairs(event.attributes),
    }


class Webhooks:
    """The registered endpoints, the delivery thread and what each delivery answered."""

    def __init__(self, organization_id: str) -> None:
        self.organization_id = organization_id
        self._lock = threading.Lock()
        self._endpoints: list[WebhookEndpoint] = []
        self._deliveries: list[dict[str, Any]] = []
        self._pending = 0
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataverse-webhooks")

    @property
    def endpoints(self) -> list[WebhookEndpoint]:
        with self._lock:
            return list(self._endpoints)

    def configure(self, endpoints: list[WebhookEndpoint]) -> None:
        with self._lock:
            self._endpoints = list(endpoints)

    def reset(self) -> None:
        """Forget the delivery outcomes; the registrations stay."""
        with self._lock:
            self._deliveries.clear()

    def deliveries(self) -> dict[str, Any]:
        with self._lock:
            return {"pending": self._pending, "deliveries": list(self._deliveries)}

    def emit(self, events: list[Event], base_url: str, user: str) -> None:
        """Queue one delivery per matching endpoint and event; never waits for them."""
        correlation = str(uuid.uuid4())
        for event in events:
            for endpoint in self.endpoints:
                if event.message in endpoint.messages and event.entity in endpoint.entities:
                    body = self._context(event, correlation, user)
                    with self._lock:
                        self._pending += 1
                    self._sender.submit(self._deliver, endpoint, event, body, base_url)

    def _context(self, event: Event, correlation: str, user: str) -> dict[str, Any]:
        return {
            "MessageName": event.message,
            "PrimaryEntityName": event.entity,
            "PrimaryEntityId": event.record_id,
            "OperationId": str(uuid.uuid4()),
            "CorrelationId": correlation,
            "OrganizationId": self.organization_id,
            "Stage": 40,  # post-operation
            "Mode": 1,  # asynchronous
            "Depth": 1,
            "UserId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"systemuser/{user}")),
            "OperationCreatedOn": ms_date(now()),
            "InputParameters": [{"key": "Target", "value": _target(event)}],
        }

    def _deliver(
        self, endpoint: WebhookEndpoint, event: Event, body: dict[str, Any], base_url: str
    ) -> None:
        headers = {
            "content-type": "application/json",
            "x-ms-dynamics-organization": urlsplit(base_url).hostname or "",
            "x-ms-dynamics-entity-name": event.entity,
            "x-ms-dynamics-request-name": event.message,
            "x-ms-correlation-request-id": body["CorrelationId"],
        }
        params: dict[str, str] = {}
        if endpoint.auth == "HttpHeader":
            headers[endpoint.key_name] = endpoint.key_value
        elif endpoint.auth == "WebhookKey":
            params["code"] = endpoint.key_value
        else:
            params[endpoint.key_name] = endpoint.key_value
        statuses: list[int] = []
        error: str | None = None
        content = json.dumps(body).encode()
        try:
            with httpx.Client(timeout=TIMEOUT_S) as client:
                for _ in range(2):
                    response = client.post(
                        endpoint.url, params=params, headers=headers, content=content
                    )
                    statuses.append(response.status_code)
                    if response.status_code not in RETRIED:
                        break
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        finally:
            outcome = {
                "url": endpoint.url,
                "message": event.message,
                "entity": event.entity,
                "id": event.record_id,
                "statuses": statuses,
                "delivered": bool(statuses) and 200 <= statuses[-1] < 300,
                "error": error,
            }
            with self._lock:
                self._deliveries.append(outcome)
                self._pending -= 1
