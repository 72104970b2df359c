"""`bridge run` finishes what it starts: a request that failed (Salesforce refusing the login
mid-planning) is retried by the daemon with backoff, flagged once (an audit event, the
``bridge_erasure_requests`` gauge, ``bridge requests --failed``), and completed once the
vendor answers again, without anyone running ``bridge requests --retry``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bridge import audit
from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import AUDIT_KEY, BridgeCli, Crms, free_port, wait_until_healthy

PERSON = "daemon.retry@example.com"


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s: {what}")


def gauges(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    prefix = 'bridge_erasure_requests{state="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_daemon_retries_a_failed_request_flags_it_once_and_completes_it(
    cli: BridgeCli, crms: Crms, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    crms.seed_hubspot(email=PERSON, firstname="D")
    crms.seed_salesforce("Contact", LastName="D", Email=PERSON)
    crms.salesforce.patch("/__emulator/settings", json={"strict_auth": True}).raise_for_status()
    wrong = {"BRIDGE_SALESFORCE__PASSWORD": "changed-meanwhile"}
    quick = {
        "BRIDGE_ERASURE__RETRY_SECONDS": "0.4",
        "BRIDGE_ERASURE__RETRY_MAX_SECONDS": "1",
        "BRIDGE_ERASURE__FLAG_AFTER_HOURS": "0.0005",  # 1.8 s of failing
    }
    assert cli("erase", PERSON, **wrong, **quick).returncode != 0
    store = Store(cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    [request] = rows.requests(store)
    assert (request["status"], request["failures"]) == ("failed", 1)

    port = free_port()
    daemon = cli.start(
        "run", "--port", str(port), BRIDGE_SCHEDULE__ERASURE_SECONDS="0.2", **wrong, **quick
    )
    stopped_at_end.append(daemon)
    wait_until_healthy(f"http://127.0.0.1:{port}", daemon)

    def events(action: str) -> list[dict[str, Any]]:
        return [e for e in audit.events(store) if e["action"] == action]

    eventually(lambda: len(events("erasure.retried")) >= 3, 60, "the daemon retries, again")
    eventually(lambda: events("erasure.flagged"), 60, "the failing request is flagged")
    assert eventually(lambda: gauges(port).get("flagged") == 1, 30, "the flagged gauge")
    assert gauges(port)["open"] == 1
    failed = json.loads(cli("requests", "--failed", "--json").stdout)["requests"]
    assert [(r["id"], r["flagged"]) for r in failed] == [(request["id"], True)]
    assert {e["actor"] for e in events("erasure.retried")} == {"daemon"}
    attempts = rows.request(store, request["id"])
    assert attempts is not None and attempts["failures"] >= 4

    crms.salesforce.patch("/__emulator/settings", json={"strict_auth": False}).raise_for_status()
    eventually(
        lambda: {r["status"] for r in rows.requests(store)} == {"completed"},
        60,
        "the daemon completes the request once Salesforce answers",
    )
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert contacts["records"] == []
    assert eventually(lambda: gauges(port).get("open") == 0, 30, "no request left open")
    assert len(events("erasure.flagged")) == 1  # once, however many drains saw it
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    assert audit.verify(store).ok
    store.dispose()
