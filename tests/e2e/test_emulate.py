"""`bridge emulate` serves each vendor emulator so that the official clients work against it."""

from __future__ import annotations

import re
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI, Response
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInputForCreate
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from bridge_sandbox.emulators.common import serve_in_thread
from tests.conftest import BridgeCli, free_port, wait_until_healthy


@contextmanager
def emulating(bridge: BridgeCli, vendor: str, *options: str) -> Iterator[str]:
    """`bridge emulate <vendor>` on a free port, healthy; its URL. It must stop cleanly."""
    port = free_port()
    process = bridge.start("emulate", vendor, "--port", str(port), *options)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, path="/__emulator/counters")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def refused_options(bridge: BridgeCli, option: str, *wrong: tuple[str, ...]) -> None:
    """Each wrong use of ``option`` exits 2 with one line naming it."""
    for arguments in wrong:
        refused = bridge("emulate", *arguments)
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1 and option in refused.stderr


def test_emulate_hubspot(bridge: BridgeCli) -> None:
    with emulating(bridge, "hubspot") as url:
        client = HubSpot(access_token="any", host=url)
        created = client.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": "Demo@Example.com"})
        )
        fetched = client.crm.contacts.basic_api.get_by_id("demo@example.com", id_property="email")
        assert fetched.id == created.id


def test_emulate_hubspot_tier_starter_answers_like_a_portal_without_the_batch_scopes(
    bridge: BridgeCli,
) -> None:
    with emulating(bridge, "hubspot", "--tier", "starter") as url:
        info = httpx.post(
            f"{url}/oauth/v2/private-apps/get/access-token-info", json={"tokenKey": "any"}
        )
        assert "communication_preferences.read" in info.json()["scopes"]
        assert not [s for s in info.json()["scopes"] if ".statuses.batch." in s]
        batch = httpx.post(
            f"{url}/communication-preferences/v4/statuses/batch/read",
            params={"channel": "EMAIL"},
            json={"inputs": ["ada@example.com"]},
            headers={"Authorization": "Bearer any"},
        )
        assert (batch.status_code, batch.json()["category"]) == (403, "MISSING_SCOPES")
        assert batch.headers["X-HubSpot-RateLimit-Max"] == "100"  # Starter's published burst
        statuses = HubSpot(access_token="any", host=url).communication_preferences.status_api
        assert statuses.get_email_status("ada@example.com").subscription_statuses
    refused_options(
        bridge, "--tier", ("salesforce", "--tier", "starter"), ("hubspot", "--tier", "gold")
    )


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
    with emulating(bridge, "salesforce") as url:
        sf = Salesforce(username="u", password="p", security_token="t", session=ToEmulator(url))
        created = sf.Contact.create({"LastName": "Demo", "Email": "demo@example.com"})
        assert created["success"]
        bases = sf.query("SELECT Name FROM DataUseLegalBasis")["records"]
        assert len(bases) == 6


def test_emulate_salesforce_org_basic_answers_like_an_org_without_the_privacy_objects(
    bridge: BridgeCli,
) -> None:
    with emulating(bridge, "salesforce", "--org", "basic") as url:
        sf = Salesforce(username="u", password="p", security_token="t", session=ToEmulator(url))
        assert sf.Contact.create({"LastName": "Demo", "DoNotCall": True})["success"]
        with pytest.raises(SalesforceMalformedRequest) as refused:
            sf.query("SELECT Id FROM Individual")
        assert refused.value.content[0]["errorCode"] == "INVALID_TYPE"
        assert httpx.get(f"{url}/__emulator/org").json()["org"] == "basic"
    refused_options(
        bridge, "--org", ("hubspot", "--org", "basic"), ("salesforce", "--org", "plain")
    )


DEFAULT_PORTS = {"hubspot": 8765, "salesforce": 8766}
SHARED_ADMIN = {"GET /faults", "PUT /faults", "DELETE /faults", "GET /counters",
                "DELETE /counters", "GET /state", "POST /reset"}  # fmt: skip
ADMIN = {
    "hubspot": SHARED_ADMIN | {"POST /seed", "POST /import", "GET /rate-limits",
                               "PUT /rate-limits", "GET /webhooks", "PUT /webhooks",
                               "DELETE /webhooks", "POST /webhooks/flush", "GET /tier",
                               "PUT /tier"},
    "salesforce": SHARED_ADMIN | {"POST /records", "GET /records", "POST /sessions/expire",
                                  "GET /settings", "PATCH /settings", "POST /fields",
                                  "GET /outbound", "PUT /outbound", "GET /org", "PUT /org"},
}  # fmt: skip
VENDOR_PATH = {
    "hubspot": "/crm/v3/objects/contacts",
    "salesforce": "/services/data/v{version}/query",
}


def listening(port: int) -> bool:
    """Whether something on this machine already serves ``port`` on loopback."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_both_emulators_run_side_by_side_on_their_default_ports_describing_their_admin_api(
    bridge: BridgeCli,
) -> None:
    taken = [port for port in DEFAULT_PORTS.values() if listening(port)]
    if taken:
        pytest.skip(f"default emulator port(s) {taken} already in use on this machine")
    processes = {vendor: bridge.start("emulate", vendor) for vendor in DEFAULT_PORTS}
    try:
        for vendor, port in DEFAULT_PORTS.items():
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, processes[vendor], path="/__emulator/counters")
            schema = httpx.get(f"{url}/__emulator/openapi.json").json()
            assert vendor in schema["info"]["title"].lower()  # this one, not the other
            assert "starts" in schema["info"]["description"]
            admin = {
                f"{method.upper()} {path.removeprefix('/__emulator')}": operation
                for path, operations in schema["paths"].items()
                if path.startswith("/__emulator/")
                for method, operation in operations.items()
            }
            assert set(admin) == ADMIN[vendor]
            for name, operation in admin.items():
                assert operation["tags"] == ["emulator admin"], name
                assert operation.get("description"), f"{name} is not described"
            paths = list(schema["paths"])
            admin_paths = [path for path in paths if path.startswith("/__emulator/")]
            assert paths[: len(admin_paths)] == admin_paths, "the admin API comes first"
            assert VENDOR_PATH[vendor] in schema["paths"]
            page = httpx.get(f"{url}/__emulator/docs")
            assert page.status_code == 200 and "/__emulator/openapi.json" in page.text
            assert httpx.get(f"{url}/__emulator/counters").json()["total"] == 0
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=30) for process in processes.values()] == [0, 0]


ACK = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    "</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


def test_salesforce_emulator_logs_outbound_messages_without_their_secret_token(
    bridge: BridgeCli,
) -> None:
    port = free_port()
    process = bridge.start("emulate", "salesforce", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    receiver = FastAPI()
    answers = iter([Response("busy", status_code=500)])  # the first delivery fails

    @receiver.post("/webhooks/salesforce/{token}")
    def receive() -> Response:
        return next(answers, Response(ACK, media_type="text/xml"))

    try:
        wait_until_healthy(url, process, path="/__emulator/counters")
        with serve_in_thread(receiver) as endpoint, httpx.Client(base_url=url) as admin:
            message = {"object": "Contact", "watched_fields": ["HasOptedOutOfEmail"],
                       "endpoint_url": f"{endpoint.url}/webhooks/salesforce/{token}"}  # fmt: skip
            admin.put("/__emulator/outbound", json={"messages": [message]}).raise_for_status()
            sf = Salesforce(username="u", password="p", security_token="t", session=ToEmulator(url))
            sf.Contact.create({"LastName": "Opt", "HasOptedOutOfEmail": True})
            deadline = time.monotonic() + 30
            while admin.get("/__emulator/outbound").json()["delivered"] < 1:
                assert time.monotonic() < deadline, "the outbound message was not delivered"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    [log_file] = bridge.cwd.glob("emulate-*.log")
    log = log_file.read_text()
    assert token not in log
    assert f"{endpoint.url}/webhooks/salesforce/***: HTTP 500" in log  # the failure, logged
    assert f"{endpoint.url}/webhooks/salesforce/***: acknowledged" in log  # and the retry
