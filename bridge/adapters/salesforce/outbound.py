"""Salesforce Outbound Messages: a SOAP body parsed safely, and the exact acknowledgement.

defusedxml refuses DTDs, entity declarations and external references, so a billion-laughs
or external-entity body is rejected before anything is expanded or fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

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
    def kind(self) -> str:
        if self.object_type == "Individual" and self.fields.get("ShouldForget") == "true":
            return "deletion"
        if self.object_type in ("Contact", "Lead") and CONSENT_FIELDS & self.fields.keys():
            return "consent"
        if self.object_type == "Individual" and any(
            f.startswith("HasOptedOut") for f in self.fields
        ):
            return "consent"
        return "other"


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
