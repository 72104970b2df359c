"""Vendor emulators' own signed events reach a real `bridge serve`, stored once and processed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from hubspot import HubSpot
from hubspot.crm.contacts import PublicGdprDeleteInput
from simple_salesforce import Salesforce

from bridge.events.inbox import InboxEvent, InboxWorker
from bridge.sealing import Keyring
from bridge.store import inbox
from bridge.store.db import Store
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.hubspot import create_app as hubspot_emulator
from bridge_sandbox.emulators.salesforce import create_app as salesforce_emulator
from tests.conftest import BridgeCli
from tests.e2e.receiving import receiving
from tests.e2e.test_emulate import ToEmulator
from tests.runtime.conftest import CLIENT_SECRET, ORG_ID, OUTBOUND_TOKEN

KEY = Fernet.generate_key().decode()


@pytest.fixture
def receiver_url(bridge: BridgeCli) -> Iterator[str]:
    with receiving(
        bridge,
        BRIDGE_ENCRYPTION_KEY=KEY,
        BRIDGE_HUBSPOT__CLIENT_SECRET=CLIENT_SECRET,
        BRIDGE_SALESFORCE__ORGANIZATION_ID=ORG_ID,
        BRIDGE_SALESFORCE__OUTBOUND_TOKEN=OUTBOUND_TOKEN,
    ) as url:
        yield url
    assert_no_seeded_email_in(bridge.cwd)


def assert_no_seeded_email_in(folder: Path) -> None:
    for path in folder.iterdir():
        data = path.read_bytes()
        assert b"ann.opt@example.com" not in data, path.name
        assert b"gone@example.com" not in data, path.name


def test_hubspot_emulator_webhooks_are_stored_once_and_processed(
    bridge: BridgeCli, receiver_url: str
) -> None:
    with (
        serve_in_thread(hubspot_emulator()) as emulator,
        httpx.Client(base_url=emulator.url) as admin,
    ):
        admin.put(
            "/__emulator/webhooks",
            json={"target_url": f"{receiver_url}/webhooks/hubspot", "client_secret": CLIENT_SECRET},
        ).raise_for_status()
        admin.post(
            "/__emulator/seed",
            json={"contacts": [{"email": "ann.opt@example.com", "firstname": "Ann"},
                               {"email": "gone@example.com", "firstname": "Gone"}]},
        ).raise_for_status()  # fmt: skip
        client = HubSpot(access_token="token", host=emulator.url, base_url=emulator.url)
        admin.post(
            "/__emulator/seed",
            json={"statuses": [{"email": "ann.opt@example.com", "status": "UNSUBSCRIBED"}]},
        ).raise_for_status()
        client.crm.contacts.basic_api.purge(
            public_gdpr_delete_input=PublicGdprDeleteInput(
                object_id="gone@example.com", id_property="email"
            )
        )
        stats = admin.post("/__emulator/webhooks/flush", params={"timeout": 15}).json()
        assert stats["failed"] == 0
        assert stats["delivered"] >= 4

    store = Store(bridge.env["BRIDGE_DATABASE_URL"])
    rows = inbox.all_rows(store)
    types = sorted(r["event_type"] for r in rows)
    assert types.count("contact.creation") == 2
    assert types.count("contact.privacyDeletion") == 1
    assert types.count("contact.deletion") == 1
    assert any(r["kind"] == "consent" for r in rows)
    assert len({r["event_key"] for r in rows}) == len(rows)

    handled: list[InboxEvent] = []
    worker = InboxWorker(
        store, Keyring([KEY.encode()]), {"consent": handled.append, "deletion": handled.append}
    )
    assert worker.drain().processed == len(rows)
    assert {e.kind for e in handled} == {"consent", "deletion"}
    assert {r["status"] for r in inbox.all_rows(store)} == {"done"}
    store.dispose()


def test_salesforce_outbound_messages_are_stored_once_and_processed(
    bridge: BridgeCli, receiver_url: str
) -> None:
    endpoint = f"{receiver_url}/webhooks/salesforce/{OUTBOUND_TOKEN}"
    messages = [
        {"object": kind, "endpoint_url": endpoint, "watched_fields": fields}
        for kind, fields in (
            ("Contact", ["HasOptedOutOfEmail", "DoNotCall"]),
            ("Lead", ["HasOptedOutOfEmail", "DoNotCall"]),
            ("Individual", ["ShouldForget"]),
        )
    ]
    with (
        serve_in_thread(salesforce_emulator()) as emulator,
        httpx.Client(base_url=emulator.url) as admin,
    ):
        admin.put(
            "/__emulator/outbound", json={"organization_id": ORG_ID, "messages": messages}
        ).raise_for_status()
        sf = Salesforce(
            username="u", password="p", security_token="t", session=ToEmulator(emulator.url)
        )
        individual = sf.Individual.create({"LastName": "Opt"})["id"]
        contact = sf.Contact.create(
            {"LastName": "Opt", "Email": "ann.opt@example.com", "IndividualId": individual}
        )["id"]
        lead = sf.Lead.create(
            {"LastName": "Opt", "Company": "Acme", "Email": "ann.opt@example.com"}
        )["id"]
        sf.Contact.update(contact, {"HasOptedOutOfEmail": True})
        sf.Lead.update(lead, {"DoNotCall": True})
        sf.Individual.update(individual, {"ShouldForget": True})
        deadline = time.monotonic() + 15
        while admin.get("/__emulator/outbound").json()["delivered"] < 3:
            assert time.monotonic() < deadline, admin.get("/__emulator/outbound").json()
            time.sleep(0.05)

    store = Store(bridge.env["BRIDGE_DATABASE_URL"])
    rows = inbox.all_rows(store)
    assert sorted((r["object_type"], r["kind"]) for r in rows) == [
        ("Contact", "consent"),
        ("Individual", "deletion"),
        ("Lead", "consent"),
    ]
    handled: list[InboxEvent] = []
    worker = InboxWorker(
        store, Keyring([KEY.encode()]), {"consent": handled.append, "deletion": handled.append}
    )
    assert worker.drain().processed == 3
    contact_event = next(e for e in handled if e.object_type == "Contact")
    assert contact_event.object_id == contact
    assert contact_event.payload["fields"]["HasOptedOutOfEmail"] == "true"
    store.dispose()
