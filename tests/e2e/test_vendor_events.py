"""Vendor emulators' own signed events reach a real `bridge serve`, stored once and processed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from hubspot import HubSpot
from hubspot.crm.contacts import PublicGdprDeleteInput

from bridge.emulators.common import serve_in_thread
from bridge.emulators.hubspot import create_app as hubspot_emulator
from bridge.store import inbox
from bridge.store.db import Store
from bridge.sync.inbox import InboxEvent, InboxWorker
from tests.conftest import BridgeCli, free_port, wait_until_healthy
from tests.web.conftest import CLIENT_SECRET

KEY = Fernet.generate_key().decode()


@pytest.fixture
def receiver_url(bridge: BridgeCli) -> Iterator[str]:
    assert bridge("db", "upgrade").returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = bridge.start(
        "serve",
        "--port",
        str(port),
        BRIDGE_ENCRYPTION_KEY=KEY,
        BRIDGE_HUBSPOT__CLIENT_SECRET=CLIENT_SECRET,
    )
    wait_until_healthy(url, process)
    yield url
    process.terminate()
    assert process.wait(timeout=30) == 0
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
        store, Fernet(KEY), {"consent": handled.append, "deletion": handled.append}
    )
    assert worker.drain().processed == len(rows)
    assert {e.kind for e in handled} == {"consent", "deletion"}
    assert {r["status"] for r in inbox.all_rows(store)} == {"done"}
    store.dispose()
