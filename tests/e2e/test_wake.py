"""New work is acted on at once, not at the next poll: the polls here are a minute apart, so
only a wake can explain work done within seconds (bridge.store.notify, Daemon.wake)."""

from __future__ import annotations

import subprocess
import time

import pytest

from bridge.store import erasure as rows
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from tests.conftest import (
    AUDIT_KEY,
    PURPOSES,
    BridgeCli,
    Crms,
    free_port,
    wait_until_healthy,
)
from tests.e2e.test_propagation_daemon import opted_out_in_salesforce
from tests.runtime.conftest import CLIENT_SECRET, ORG_ID, OUTBOUND_TOKEN

PEOPLE = [Person(f"waker{n}@example.com") for n in range(2)]
SLOW_POLLS = {
    "BRIDGE_SCHEDULE__INBOX_SECONDS": "60",
    "BRIDGE_SCHEDULE__ERASURE_SECONDS": "60",
    "BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES": "600",  # only the webhook path may act
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stored_webhook_event_wakes_the_inbox_job_in_the_same_process(
    configured_cli: BridgeCli, crms: Crms, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = configured_cli.start(
        "run", "--port", str(port),
        BRIDGE_HUBSPOT__CLIENT_SECRET=CLIENT_SECRET,
        BRIDGE_SALESFORCE__ORGANIZATION_ID=ORG_ID,
        BRIDGE_SALESFORCE__OUTBOUND_TOKEN=OUTBOUND_TOKEN,
        **SLOW_POLLS,
    )  # fmt: skip
    stopped_at_end.append(daemon)
    wait_until_healthy(url, daemon)
    crms.hubspot.put(
        "/__emulator/webhooks",
        json={"target_url": f"{url}/webhooks/hubspot", "client_secret": CLIENT_SECRET},
    ).raise_for_status()
    deadline = time.monotonic() + 30
    while not any(b"sync.finished" in p.read_bytes() for p in configured_cli.cwd.glob("run-*.log")):
        assert time.monotonic() < deadline, "the daemon's first sync did not finish"
        time.sleep(0.1)  # the inbox job's run at start is over; the next poll is a minute away
    opted_out = {"email": PEOPLE[0].email, "status": "UNSUBSCRIBED"}
    sent = time.monotonic()
    crms.hubspot.post("/__emulator/seed", json={"statuses": [opted_out]}).raise_for_status()
    while not opted_out_in_salesforce(crms, PEOPLE[0].email):
        assert time.monotonic() - sent < 8, "not propagated within 8 s: the event waited"
        time.sleep(0.1)
    daemon.terminate()
    assert daemon.wait(timeout=30) == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # skips without it
def test_an_erasure_requested_by_another_process_wakes_the_daemon_on_postgresql(
    cli: BridgeCli,
    crms: Crms,
    database_url: str,
    stopped_at_end: list[subprocess.Popen[str]],
) -> None:
    postgres_url = database_url  # NOTIFY: the erase command is a process of its own
    person = "woken.by.notify@example.com"
    crms.seed_hubspot(email=person, firstname="W")
    crms.seed_salesforce("Contact", LastName="W", Email=person)
    cli.env["BRIDGE_DATABASE_URL"] = postgres_url
    assert cli("db", "upgrade").returncode == 0
    port = free_port()
    daemon = cli.start("run", "--port", str(port), **SLOW_POLLS)
    stopped_at_end.append(daemon)
    wait_until_healthy(f"http://127.0.0.1:{port}", daemon)
    store = Store(postgres_url, AUDIT_KEY)
    try:
        deadline = time.monotonic() + 10
        while b"daemon.started" not in b"".join(p.read_bytes() for p in cli.cwd.glob("run-*.log")):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
        time.sleep(1.5)  # its erasure run at start is over; the next poll is a minute away

        sent = time.monotonic()
        result = cli("erase", person, "--no-wait")  # a process of its own
        assert result.returncode == 0, result.stderr
        while {r["status"] for r in rows.requests(store)} != {"completed"}:
            assert time.monotonic() - sent < 10, "not completed within 10 s: it waited"
            time.sleep(0.1)
        assert (
            crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()["records"]
            == []
        )
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0
    finally:
        store.dispose()
