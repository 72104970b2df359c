"""HubSpot webhooks: request signatures (v3, and v1/v2 for legacy apps) and event payloads.

The v3 signature is HMAC-SHA256(client secret, METHOD + URI + raw body + timestamp), base64,
over the URI with HubSpot's decoding table applied; the timestamp (ms) must be within five
minutes of now in either direction. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.spec import (
    CONSENT,
    DELETION,
    OTHER,
    Accepted,
    IncomingEvent,
    Rejected,
    WebhookRequest,
)

MAX_SKEW_MS = 5 * 60 * 1000
MAX_EVENTS = 100
_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
_ESCAPE = re.compile("|".join(_DECODE), re.IGNORECASE)
# ASCII digits only (str.isdigit() takes "²", which int() refuses) and few enough for int()
# (over 4,300 digits it raises); milliseconds since 1970 have 13.
_TIMESTAMP = re.compile("[0-9]{1,20}")


class SignatureError(Exception):
    """Why a request's signature was refused (a short reason, safe to count and log)."""


def decode_uri(uri: str) -> str:
    return _ESCAPE.sub(lambda m: _DECODE[m.group(0).upper()], uri)


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = (method.upper() + decode_uri(uri)).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(
        secret.encode() + method.upper().encode() + uri.encode() + body
    ).hexdigest()


def verify(
    headers: Mapping[str, str],
    method: str,
    uri: str,
    body: bytes,
    secret: str,
    now_ms: int,
    accept_legacy: bool = False,
) -> str:
    """Check a request's signature; returns the version that matched or raises SignatureError."""
    signature_v3 = headers.get("x-hubspot-signature-v3")
    if signature_v3:
        timestamp = headers.get("x-hubspot-request-timestamp", "")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise SignatureError("missing_timestamp")
        if abs(now_ms - int(timestamp)) > MAX_SKEW_MS:
            raise SignatureError("stale_timestamp")
        expected = sign_v3(secret, method, uri, body, timestamp)
        if not hmac.compare_digest(expected.encode(), signature_v3.encode()):
            raise SignatureError("bad_signature")
        return "v3"
    legacy = headers.get("x-hubspot-signature")
    if legacy and accept_legacy:
        version = headers.get("x-hubspot-signature-version", "v1").lower()
        if version not in ("v1", "v2"):
            raise SignatureError("unknown_version")
        expected = sign_v1(secret, body) if version == "v1" else sign_v2(secret, method, uri, body)
        if not hmac.compare_digest(expected.encode(), legacy.lower().encode()):
            raise SignatureError("bad_signature")
        return version
    raise SignatureError("missing_signature")


class HubSpotEvent(BaseModel):
    """One webhook event. ``subscriptionType`` is what HubSpot sends; ``eventType`` is accepted."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event_id: int = Field(alias="eventId")
    occurred_at: int = Field(alias="occurredAt")
    object_id: int = Field(alias="objectId")
    subscription_type: str = Field(
        validation_alias=AliasChoices("subscriptionType", "eventType"), min_length=1, max_length=100
    )
    subscription_id: int | None = Field(None, alias="subscriptionId")
    portal_id: int | None = Field(None, alias="portalId")
    app_id: int | None = Field(None, alias="appId")
    attempt_number: int = Field(0, alias="attemptNumber")
    change_source: str | None = Field(None, alias="changeSource")
    property_name: str | None = Field(None, alias="propertyName")
    property_value: str | None = Field(None, alias="propertyValue")

    @property
    def key(self) -> str:
        """eventId alone is not unique; with occurredAt and objectId it is."""
        return f"{self.event_id}:{self.occurred_at}:{self.object_id}"

    @property
    def kind(self) -> str:
        """A privacy deletion asks to forget the person; its twin ``contact.deletion`` (also
        sent for an ordinary, restorable delete) is no request."""
        if self.subscription_type == "contact.privacyDeletion":
            return DELETION
        name = self.property_name or ""
        if self.subscription_type == "contact.propertyChange" and (
            name.startswith("hs_email_optout") or name == "hs_legal_basis"
        ):
            return CONSENT
        return OTHER


EVENTS = TypeAdapter(list[HubSpotEvent])


def _ms_to_iso(ms: int) -> str | None:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return None


class Intake:
    """``POST /webhooks/hubspot``: signed batches of contact events."""

    path = "/webhooks/hubspot"

    def admit(self, section: HubSpotSettings, path_params: Mapping[str, str]) -> None:
        if section.client_secret is None:
            raise Rejected(404, "not_configured")

    def accept(self, section: HubSpotSettings, request: WebhookRequest, now_ms: int) -> Accepted:
        assert section.client_secret is not None  # admitted
        try:
            verify(
                request.headers,
                request.method,
                section.webhook_url or request.url,
                request.body,
                section.client_secret.get_secret_value(),
                now_ms=now_ms,
                accept_legacy=section.legacy_signatures,
            )
        except SignatureError as error:
            raise Rejected(401, str(error)) from None
        try:
            events = EVENTS.validate_json(request.body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise Rejected(400, "bad_payload", f"{where}: {first['msg']}"[:200]) from None
        if not 1 <= len(events) <= MAX_EVENTS:
            raise Rejected(400, "bad_payload", "expected 1 to 100 events")
        return Accepted(
            [
                IncomingEvent(
                    key=event.key,
                    event_type=event.subscription_type,
                    kind=event.kind,
                    object_type="contact",
                    object_id=str(event.object_id),
                    occurred_at=_ms_to_iso(event.occurred_at),
                    payload=event.model_dump(mode="json", by_alias=True),
                )
                for event in events
            ],
            lambda stored, duplicates: (
                json.dumps({"stored": stored, "duplicates": duplicates}).encode(),
                "application/json",
            ),
        )
