"""`bridge emulate` serves each vendor emulator so that the official clients work against it."""

from __future__ import annotations

import re
import signal
from typing import Any

import requests
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInputForCreate
from simple_salesforce import Salesforce

from tests.conftest import BridgeCli, free_port, wait_until_healthy


def test_emulate_hubspot(bridge: BridgeCli) -> None:
    port = free_port()
    process = bridge.start("emulate", "hubspot", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, path="/__emulator/counters")
        client = HubSpot(access_token="any", host=url)
        created = client.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": "Demo@Example.com"})
        )
        fetched = client.crm.contacts.basic_api.get_by_id("demo@example.com", id_property="email")
        assert fetched.id == created.id
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


class ToEmulator(requests.Session):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", 10)
        return super().request(
            method, re.sub(r"^https://[^/]+", self.base, str(url)), *args, **kwargs
        )


def test_emulate_salesforce(bridge: BridgeCli) -> None:
    port = free_port()
    process = bridge.start("emulate", "salesforce", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, path="/__emulator/counters")
        sf = Salesforce(username="u", password="p", security_token="t", session=ToEmulator(url))
        created = sf.Contact.create({"LastName": "Demo", "Email": "demo@example.com"})
        assert created["success"]
        bases = sf.query("SELECT Name FROM DataUseLegalBasis")["records"]
        assert len(bases) == 6
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
