"""Salesforce Outbound Messages: a SOAP body parsed safely, and the exact acknowledgement.

defusedxml refuses DTDs, entity declarations and external references, so a billion-laughs
or external-entity body is rejected before anything is expanded or fetched.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.adapters.spec import (
    CONSENT,
    DELETION,
    OTHER,
    Accepted,
    IncomingEvent,
    Rejected,
    WebhookRequest,
)

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
MAX_NOTIFICATIONS = 100
MAX_ID = 40
ACK = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
)
CONSENT_FIELDS = frozenset({"HasOptedOutOfEmail", "DoNotCall", "HasOptedOutOfFax"})


class OutboundMessageError(Exception):
    """The body is not a well-formed, safe outbound message (a short reason)."""


@dataclass(frozen=True)
class Notification:
    id: str
    object_type: str
    fields: dict[str, str]

    @property
    def forget(self) -> bool:
        return self.object_type == "Individual" and self.fields.get("ShouldForget") == "true"

    @property
    def kind(self) -> str:
        if self.forget:
            return DELETION
        if self.object_type in ("Contact", "Lead") and CONSENT_FIELDS & self.fields.keys():
            return CONSENT
        if self.object_type == "Individual" and any(
            f.startswith("HasOptedOut") for f in self.fields
        ):
            return CONSENT
        return OTHER


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    notifications: list[Notification]


def parse(body: bytes) -> OutboundMessage:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise OutboundMessageError("forbidden XML construct (DTD or entity)") from None
    except SafeET.ParseError:
        raise OutboundMessageError("malformed XML") from None
    except (LookupError, ValueError):  # UnicodeError too: a declared encoding expat can't read
        raise OutboundMessageError("unsupported XML encoding") from None
    notifications = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise OutboundMessageError("no notifications element")
    organization_id = _text(notifications, "OrganizationId")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not organization_id or not items or len(items) > MAX_NOTIFICATIONS:
        raise OutboundMessageError("needs an OrganizationId and 1 to 100 notifications")
    return OutboundMessage(
        organization_id=organization_id,
        action_id=_text(notifications, "ActionId"),
        notifications=[_notification(item) for item in items],
    )


def _notification(item: Element) -> Notification:
    notification_id = _text(item, "Id")
    sobject = item.find(f"{{{OUTBOUND_NS}}}sObject")
    if not notification_id or sobject is None:
        raise OutboundMessageError("a notification needs an Id and an sObject")
    object_type = sobject.get(XSI_TYPE, "").rpartition(":")[2]
    fields = {
        child.tag.rpartition("}")[2]: (child.text or "")
        for child in sobject
        if child.tag.startswith(f"{{{SOBJECT_NS}}}")
    }
    if not object_type or "Id" not in fields:
        raise OutboundMessageError("an sObject needs a type and an Id")
    if max(len(notification_id), len(fields["Id"])) > MAX_ID or len(object_type) > MAX_ID:
        raise OutboundMessageError("an id or type is longer than Salesforce makes them")
    return Notification(id=notification_id, object_type=object_type, fields=fields)


def _text(parent: Element, name: str) -> str:
    child = parent.find(f"{{{OUTBOUND_NS}}}{name}")
    return (child.text or "").strip() if child is not None else ""


def _iso(text: str | None) -> str | None:
    """A Salesforce timestamp in the bridge's one sortable format, or None if it is not one."""
    try:
        parsed = datetime.fromisoformat(text or "")
        return parsed.astimezone(UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None


def _same(given: str, expected: str) -> bool:
    """Constant-time equality; an unset expected value never matches."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class Intake:
    """``POST /webhooks/salesforce/{token}``: outbound messages, the token a shared secret."""

    path = "/webhooks/salesforce/{token}"

    def admit(self, section: SalesforceSettings, path_params: Mapping[str, str]) -> None:
        expected = section.outbound_token
        if expected is None or not _same(path_params.get("token", ""), expected.get_secret_value()):
            raise Rejected(404, "bad_token")

    def accept(self, section: SalesforceSettings, request: WebhookRequest, now_ms: int) -> Accepted:
        try:
            message = parse(request.body)
        except OutboundMessageError as error:
            raise Rejected(400, "bad_payload", str(error)) from None
        if not _same(message.organization_id, section.organization_id or ""):
            raise Rejected(403, "wrong_organization")
        return Accepted(
            [
                IncomingEvent(
                    key=note.id,
                    event_type="ShouldForget" if note.forget else "outboundMessage",
                    kind=note.kind,
                    object_type=note.object_type,
                    object_id=note.fields["Id"],
                    occurred_at=_iso(note.fields.get("SystemModstamp")),
                    payload={"action_id": message.action_id, "fields": note.fields},
                )
                for note in message.notifications
            ],
            lambda _stored, _duplicates: (ACK.encode(), "text/xml"),
        )
