"""Dataverse webhooks, posted by the Dynamics emulator itself, reach a real `bridge serve`:
the key checked, the event stored once in the inbox, and nothing of the person kept or
logged (docs/vendors/dynamics.md, "Webhooks")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from bridge.events.inbox import InboxEvent, InboxWorker
from bridge.sealing import Keyring
from bridge.store import inbox
from bridge.store.db import Store
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.dynamics import create_app
from tests.adapters.dynamics_world import web_api
from tests.conftest import BridgeCli
from tests.e2e.receiving import receiving

KEY = Fernet.generate_key().decode()
WEBHOOK_KEY = "dataverse+key/with=chars"
HEADER = "x-bridge-key"
EMAIL, FIRSTNAME, LASTNAME = "zebulon.quark@example.org", "Zebulon", "Quarkworth"
NEW_EMAIL, NEW_NAME = "ophelia.vantablack@example.net", "Vantablack"
PERSONAL = (EMAIL, FIRSTNAME, LASTNAME, NEW_EMAIL, NEW_NAME)


@pytest.fixture
def receiver_url(bridge: BridgeCli) -> Iterator[str]:
    with receiving(
        bridge,
        BRIDGE_ENCRYPTION_KEY=KEY,
        BRIDGE_LOG_LEVEL="debug",
        BRIDGE_DYNAMICS__WEBHOOK_KEY=WEBHOOK_KEY,
        BRIDGE_DYNAMICS__WEBHOOK_HEADER=HEADER,
    ) as url:
        yield url


def delivered(admin: httpx.Client, count: int) -> list[dict[str, Any]]:
    """The emulator's delivery outcomes, once ``count`` have ended."""
    deadline = time.monotonic() + 30
    while True:
        found = admin.get("/__emulator/webhooks/deliveries").json()
        if found["pending"] == 0 and len(found["deliveries"]) >= count:
            return list(found["deliveries"])
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def files_holding_personal_data(folder: Path) -> list[str]:
    """The receiver's log files and database that quote a seeded address or name."""
    return sorted(
        f"{path.name}: {needle}"
        for path in folder.rglob("*")
        if path.is_file()
        for needle in PERSONAL
        if needle.encode().lower() in path.read_bytes().lower()
    )


def test_emulator_webhooks_are_stored_once_and_a_wrong_key_is_refused(
    bridge: BridgeCli, receiver_url: str
) -> None:
    endpoint = f"{receiver_url}/webhooks/dynamics"
    with (
        serve_in_thread(create_app()) as emulator,
        httpx.Client(base_url=emulator.url, timeout=30) as admin,
    ):
        admin.put(
            "/__emulator/webhooks",
            json=[
                {"url": endpoint, "auth": "HttpHeader", "key_name": HEADER,
                 "key_value": WEBHOOK_KEY},
                {"url": endpoint, "auth": "HttpHeader", "key_name": HEADER,
                 "key_value": "not-the-key", "messages": ["Update"]},
                {"url": endpoint, "auth": "WebhookKey", "key_value": "not-the-key-either",
                 "messages": ["Update"]},
            ],
        ).raise_for_status()  # fmt: skip
        [contact] = admin.post(
            "/__emulator/seed",
            json={"contacts": [{"emailaddress1": EMAIL, "firstname": FIRSTNAME,
                                "lastname": LASTNAME}]},
        ).json()["contacts"]  # fmt: skip
        with web_api(emulator.url) as api:
            api.patch(
                f"contacts({contact})",
                json={"donotbulkemail": True, "lastname": NEW_NAME},
                headers={"If-Match": "*"},
            ).raise_for_status()
            created = api.post("leads", json={"lastname": NEW_NAME, "emailaddress1": NEW_EMAIL})
            created.raise_for_status()
        outcomes = delivered(admin, 4)

    by_key = sorted((o["message"], o["statuses"]) for o in outcomes)
    assert by_key == [
        ("Create", [200]),  # the lead, to the one endpoint that takes Create
        ("Update", [200]),
        ("Update", [401]),
        ("Update", [401]),
    ], outcomes

    store = Store(bridge.env["BRIDGE_DATABASE_URL"])
    try:
        rows = inbox.all_rows(store)
        assert sorted((r["source"], r["event_type"], r["kind"]) for r in rows) == [
            ("dynamics", "contact.update", "consent"),
            ("dynamics", "lead.create", "consent"),
        ]
        update = next(r for r in rows if r["event_type"] == "contact.update")
        assert (update["object_type"], update["object_id"]) == ("contact", contact)
        handled: list[InboxEvent] = []
        worker = InboxWorker(store, Keyring([KEY.encode()]), {"consent": handled.append})
        assert worker.drain().processed == 2
        [event] = [e for e in handled if e.object_type == "contact"]
        assert sorted(event.payload["attributes"]) == ["contactid", "donotbulkemail", "lastname"]
        assert not any(n.lower() in str(e.payload).lower() for e in handled for n in PERSONAL)
    finally:
        store.dispose()
    assert files_holding_personal_data(bridge.cwd) == []


def test_a_request_with_a_wrong_key_is_401_and_stores_nothing(
    bridge: BridgeCli, receiver_url: str
) -> None:
    """Straight to the receiver: a wrong header, a wrong ``?code=``, no key at all."""
    body = {
        "MessageName": "Update",
        "PrimaryEntityName": "contact",
        "PrimaryEntityId": "6d81597f-0f9f-e711-8122-000d3aa2331c",
        "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
        "InputParameters": [
            {
                "key": "Target",
                "value": {"Attributes": [{"key": "emailaddress1", "value": EMAIL}]},
            }
        ],
    }
    endpoint = f"{receiver_url}/webhooks/dynamics"
    refused = [
        httpx.post(endpoint, json=body, headers={HEADER: "wrong"}),
        httpx.post(endpoint, json=body, params={"code": "wrong"}),
        httpx.post(endpoint, json=body),
        httpx.post(endpoint, json=body, headers={HEADER: WEBHOOK_KEY[:-1]}),
    ]
    assert [r.status_code for r in refused] == [401] * 4
    assert all(EMAIL not in r.text for r in refused)
    accepted = httpx.post(endpoint, json=body, params={"code": WEBHOOK_KEY})
    assert accepted.status_code == 200, accepted.text
    store = Store(bridge.env["BRIDGE_DATABASE_URL"])
    try:
        assert len(inbox.all_rows(store)) == 1
    finally:
        store.dispose()
    assert files_holding_personal_data(bridge.cwd) == []
