"""A receiver served over real HTTP on a free port, with a migrated store behind it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.hubspot.webhooks import sign_v3
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.config import Settings, WebSettings
from bridge.runtime.receiver import create_app
from bridge.store import inbox
from bridge.store.db import Store
from bridge_sandbox.emulators.common import serve_in_thread

CLIENT_SECRET = "hubspot-client-secret-for-tests"
OUTBOUND_TOKEN = "outbound-token-0123456789"
ORG_ID = "00D000000000001EAA"


@dataclass
class Receiver:
    url: str
    store: Store
    settings: Settings
    http: httpx.Client

    def post_hubspot(
        self,
        events: list[dict[str, Any]] | bytes,
        *,
        timestamp_ms: int | None = None,
        uri: str | None = None,
        secret: str = CLIENT_SECRET,
    ) -> httpx.Response:
        body = events if isinstance(events, bytes) else json.dumps(events).encode()
        ts = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
        target = f"{self.url}/webhooks/hubspot"
        signature = sign_v3(secret, "POST", uri or target, body, ts)
        return self.http.post(
            target,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": signature,
                "X-HubSpot-Request-Timestamp": ts,
            },
        )

    def post_salesforce(self, body: bytes, token: str = OUTBOUND_TOKEN) -> httpx.Response:
        return self.http.post(
            f"{self.url}/webhooks/salesforce/{token}",
            content=body,
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
        )

    def rows(self) -> list[dict[str, Any]]:
        return inbox.all_rows(self.store)


def receiver_settings(database_url: str, **web: Any) -> Settings:
    return Settings(
        database_url=database_url,
        encryption_key=Fernet.generate_key().decode(),
        hubspot=HubSpotSettings(client_secret=CLIENT_SECRET),
        salesforce=SalesforceSettings(organization_id=ORG_ID, outbound_token=OUTBOUND_TOKEN),
        web=WebSettings(**web),
    )


@pytest.fixture
def receiver(database_url: str) -> Iterator[Receiver]:
    settings = receiver_settings(database_url)
    store = Store(database_url)
    store.upgrade()
    with (
        serve_in_thread(create_app(settings, store)) as server,
        httpx.Client(timeout=10) as http,
    ):
        yield Receiver(server.url, store, settings, http)
    store.dispose()


def hubspot_event(n: int, kind: str = "contact.propertyChange", **extra: Any) -> dict[str, Any]:
    event = {
        "eventId": n,
        "subscriptionId": 1001,
        "portalId": 62515,
        "appId": 54321,
        "occurredAt": 1_764_000_000_000 + n,
        "subscriptionType": kind,
        "attemptNumber": 0,
        "objectId": 5000 + n,
        "changeSource": "CRM",
    }
    if kind == "contact.propertyChange":
        event |= {"propertyName": "hs_email_optout", "propertyValue": "true"}
    return event | extra


def outbound_message(
    notifications: list[tuple[str, str, dict[str, str]]], org: str = ORG_ID
) -> bytes:
    """A SOAP notification as Salesforce sends it: (notification id, sObject type, fields)."""
    items = "".join(
        f"<Notification><Id>{nid}</Id>"
        f'<sObject xsi:type="sf:{kind}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(f"<sf:{k}>{v}</sf:{k}>" for k, v in fields.items())
        + "</sObject></Notification>"
        for nid, kind, fields in notifications
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>"
        '<SessionId xsi:nil="true"/>'
        "<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/00D</EnterpriseUrl>"
        "<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/00D</PartnerUrl>"
        f"{items}</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


# Signed HubSpot batches the databases cannot store as they are: a NUL in a text column (which
# PostgreSQL refuses) or an id longer than its column (which only PostgreSQL enforces).
UNSTORABLE = {
    "nul_in_event_type": [hubspot_event(9001, "contact.creation\x00")],
    "event_key_too_long": [hubspot_event(9002, eventId=10**250)],
    "object_id_too_long": [hubspot_event(9003, objectId=10**120)],
    "one_bad_among_good": [hubspot_event(9004), hubspot_event(9005, objectId=10**120)],
}


def send_together(
    post: Callable[[list[dict[str, Any]]], httpx.Response], batches: list[list[dict[str, Any]]]
) -> list[httpx.Response]:
    """Each batch in a request of its own, all released at once so that they meet in the
    receiver's group commits; the responses in the order of ``batches``."""
    ready = threading.Barrier(len(batches))

    def send(events: list[dict[str, Any]]) -> httpx.Response:
        ready.wait()
        return post(events)

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(send, batches))
