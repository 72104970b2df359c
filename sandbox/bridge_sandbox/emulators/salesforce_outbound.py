"""Outbound Messages: SOAP notifications POSTed when a watched field changes, until acked.

As in Salesforce, delivery is at-least-once and asynchronous: a change queues a notification,
a background thread POSTs up to 100 of them per message with the record's *latest* values,
and anything but HTTP 200 carrying ``<Ack>true</Ack>`` is retried after the configured delays
until the message is given up. Nothing about the records is logged, and endpoints only
without their secret token.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import httpx
from defusedxml import DefusedXmlException, ElementTree

from bridge_sandbox.emulators.salesforce_config import OutboundMessageConfig
from bridge_sandbox.emulators.salesforce_model import (
    ApiError,
    ObjectDef,
    Record,
    SalesforceError,
    format_datetime,
    make_id,
    now,
    text_value,
)
from bridge_sandbox.emulators.salesforce_state import SalesforceState

log = logging.getLogger(__name__)
OUTBOUND_NAMESPACE = "http://soap.sforce.com/2005/09/outbound"
MAX_NOTIFICATIONS = 100
API_VERSION = "59.0"


@dataclass(frozen=True)
class _Action:
    """A configured Outbound Message with its ``04k`` action id."""

    id: str
    config: OutboundMessageConfig
    sobject: str

    @property
    def field_names(self) -> list[str]:
        names = ["Id", *self.config.watched_fields, *self.config.fields]
        return list(dict.fromkeys(names))


@dataclass
class _Notification:
    id: str
    action: _Action
    record_id: str
    snapshot: dict[str, Any]
    created: float
    created_at: str
    next_attempt: float
    attempts: int = 0
    status: str = "pending"
    last_error: str | None = None
    delivered_at: str | None = None

    def report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action_id": self.action.id,
            "object": self.action.sobject,
            "record_id": self.record_id,
            "status": self.status,
            "attempts": self.attempts,
            "created": self.created_at,
            "delivered": self.delivered_at,
            "last_error": self.last_error,
        }


class OutboundDispatcher:
    """Queues notifications on record changes and delivers them from a background thread.

    The thread runs only while something is pending. It never holds this object's lock while
    calling the state or the network, so the state may call ``record_changed`` under its own.
    """

    def __init__(self, state: SalesforceState) -> None:
        self.state = state
        self._cond = threading.Condition()
        self._numbers = itertools.count(1)
        self._actions: list[_Action] = []
        self._queue: list[_Notification] = []
        self._posts = 0
        self._thread: threading.Thread | None = None
        state.on_change = self.record_changed
        self.configure(state.config.outbound_messages)

    def configure(self, messages: Sequence[OutboundMessageConfig]) -> None:
        """Replace the configured messages; unknown objects or fields are a 400, as in Setup."""
        actions = []
        for index, message in enumerate(messages, start=1):
            sobject = self.state.schema.object(message.object)
            if sobject is None:
                raise SalesforceError(
                    400, ApiError("INVALID_TYPE", f"sObject type '{message.object}' is unknown")
                )
            canonical = message.model_copy(
                update={
                    "object": sobject.name,
                    "watched_fields": _field_names(sobject, message.watched_fields),
                    "fields": _field_names(sobject, message.fields),
                }
            )
            actions.append(_Action(make_id("04k", index), canonical, sobject.name))
        with self._cond:
            self._actions = actions

    def reset(self) -> None:
        with self._cond:
            self._queue.clear()
            self._posts = 0
        self.configure(self.state.config.outbound_messages)

    def record_changed(self, record: Record, changed: frozenset[str], created: bool) -> None:
        """Queue a notification for each message whose watched fields changed (or were set)."""
        with self._cond:
            for action in self._actions:
                if action.sobject != record.type:
                    continue
                if not changed.intersection(action.config.watched_fields):
                    continue
                clock = time.monotonic()
                self._queue.append(
                    _Notification(
                        id=make_id("04l", next(self._numbers)),
                        action=action,
                        record_id=record.id,
                        snapshot=dict(record.values),
                        created=clock,
                        created_at=format_datetime(record.values["SystemModstamp"]),
                        next_attempt=clock,
                    )
                )
            if self._thread is None and any(n.status == "pending" for n in self._queue):
                self._thread = threading.Thread(
                    target=self._run, name="salesforce-outbound", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        with self._cond:
            counts = {state: 0 for state in ("pending", "delivered", "dropped")}
            for notification in self._queue:
                counts[notification.status] += 1
            return {
                "organization_id": self.state.config.organization_id,
                "messages": [{"action_id": a.id, **a.config.model_dump()} for a in self._actions],
                **counts,
                "posts": self._posts,
                "notifications": [n.report() for n in self._queue],
            }

    def _run(self) -> None:
        timeout = httpx.Timeout(self.state.config.outbound_timeout_seconds)
        # A transport, not an httpx.Client: the client logs every request's URL, and an
        # endpoint's URL holds the receiver's secret token.
        with httpx.HTTPTransport() as transport:
            while True:
                with self._cond:
                    batch = self._due_batch()
                    if batch is None:
                        waits = [n.next_attempt for n in self._queue if n.status == "pending"]
                        if not waits:
                            self._thread = None
                            return
                        self._cond.wait(timeout=max(0.0, min(waits) - time.monotonic()))
                        continue
                error = self._post(transport, timeout, batch)
                with self._cond:
                    self._posts += 1
                    self._settle(batch, error)

    def _due_batch(self) -> list[_Notification] | None:
        """Up to 100 due notifications of one message; gives up on those too old to retry."""
        clock = time.monotonic()
        give_up = self.state.config.outbound_give_up_after_seconds
        due = []
        for notification in self._queue:
            if notification.status != "pending":
                continue
            if clock - notification.created >= give_up:
                notification.status = "dropped"
            elif notification.next_attempt <= clock:
                due.append(notification)
        if not due:
            return None
        action = due[0].action
        return [n for n in due if n.action is action][:MAX_NOTIFICATIONS]

    def _settle(self, batch: list[_Notification], error: str | None) -> None:
        delays = self.state.config.outbound_retry_delays_seconds
        for notification in batch:
            notification.attempts += 1
            notification.last_error = error
            if error is None:
                notification.status = "delivered"
                notification.delivered_at = format_datetime(now())
            else:
                delay = delays[min(notification.attempts, len(delays)) - 1]
                notification.next_attempt = time.monotonic() + delay

    def _post(
        self, transport: httpx.HTTPTransport, timeout: httpx.Timeout, batch: list[_Notification]
    ) -> str | None:
        """POST one message; None when acknowledged, else a reason free of personal data.
        The log names the endpoint without its token (:func:`masked`)."""
        action = batch[0].action
        session_id = self.state.open_session() if action.config.send_session_id else None
        entries = []
        for notification in batch:
            values = self.state.current_values(notification.record_id) or notification.snapshot
            entries.append(
                (notification.id, action.sobject, {n: values.get(n) for n in action.field_names})
            )
        body = notification_envelope(
            organization_id=self.state.config.organization_id,
            action_id=action.id,
            session_id=session_id,
            instance_url=self.state.instance_url,
            notifications=entries,
        )
        endpoint = masked(action.config.endpoint_url)
        try:
            request = httpx.Request(
                "POST",
                action.config.endpoint_url,
                content=body.encode(),
                headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
                extensions={"timeout": timeout.as_dict()},
            )
            with closing(transport.handle_request(request)) as response:
                response.read()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error: str | None = type(exc).__name__
        else:
            if response.status_code != 200:
                error = f"HTTP {response.status_code}"
            elif not acknowledged(response.content):
                error = "no <Ack>true</Ack> in the response"
            else:
                error = None
        log.info(
            "outbound message %s: %d notification(s) POSTed to %s: %s",
            action.id,
            len(batch),
            endpoint,
            error or "acknowledged",
        )
        return error


def masked(url: str) -> str:
    """An endpoint URL fit for a log: its last path segment, where a receiver takes its secret
    token (the bridge's ``/webhooks/salesforce/<token>``), any user info and any query are
    ``***``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")
    netloc = f"***@{host[2]}" if host[1] else host[2]
    head, _, last = parts.path.rstrip("/").rpartition("/")
    path = f"{head}/***" if last else parts.path
    return urlunsplit((parts.scheme, netloc, path, "***" if parts.query else "", ""))


def acknowledged(body: bytes) -> bool:
    """Whether a receiver's reply is the SOAP ``notificationsResponse`` with ``Ack`` true."""
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException):
        return False
    ack = root.find(f".//{{{OUTBOUND_NAMESPACE}}}Ack")
    return ack is not None and (ack.text or "").strip().lower() == "true"


def notification_envelope(
    *,
    organization_id: str,
    action_id: str,
    session_id: str | None,
    instance_url: str,
    notifications: Sequence[tuple[str, str, Mapping[str, Any]]],
) -> str:
    """The SOAP 1.1 message Salesforce POSTs (docs/vendors/salesforce.md, "Outbound messages")."""
    org15 = organization_id[:15]
    session = (
        f"<SessionId>{escape(session_id)}</SessionId>"
        if session_id
        else '<SessionId xsi:nil="true"/>'
    )
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        " <soapenv:Body>\n"
        f'  <notifications xmlns="{OUTBOUND_NAMESPACE}">\n'
        f"   <OrganizationId>{escape(organization_id)}</OrganizationId>\n"
        f"   <ActionId>{escape(action_id)}</ActionId>\n"
        f"   {session}\n"
        f"   <EnterpriseUrl>{escape(instance_url)}/services/Soap/c/{API_VERSION}/{org15}"
        "</EnterpriseUrl>\n"
        f"   <PartnerUrl>{escape(instance_url)}/services/Soap/u/{API_VERSION}/{org15}"
        "</PartnerUrl>\n"
    ]
    for notification_id, sobject, values in notifications:
        parts.append(
            f"   <Notification>\n    <Id>{escape(notification_id)}</Id>\n"
            f"    <sObject xsi:type={quoteattr('sf:' + sobject)} "
            'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">\n'
        )
        for name, value in values.items():
            if value is None:
                parts.append(f'     <sf:{name} xsi:nil="true"/>\n')
            else:
                parts.append(f"     <sf:{name}>{escape(text_value(value))}</sf:{name}>\n")
        parts.append("    </sObject>\n   </Notification>\n")
    parts.append("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n")
    return "".join(parts)


def _field_names(sobject: ObjectDef, names: Sequence[str]) -> list[str]:
    """The fields' API names as Salesforce spells them; an unknown one is a 400."""
    resolved = []
    for name in names:
        definition = sobject.field(name)
        if definition is None:
            raise SalesforceError(
                400, ApiError("INVALID_FIELD", f"No such field {sobject.name}.{name}")
            )
        resolved.append(definition.name)
    return resolved
