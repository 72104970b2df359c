"""The daemon propagates a webhook opt-out at once, and knows its own write coming back."""

from __future__ import annotations

import json
import time

import pytest

from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from tests.conftest import (
    PURPOSES,
    BridgeCli,
    Crms,
    extreme_accounts,
    free_port,
    wait_until_healthy,
)
from tests.runtime.conftest import CLIENT_SECRET, ORG_ID, OUTBOUND_TOKEN

PEOPLE = [Person(f"walker{n}@example.com") for n in range(3)]

# The CLI keeps its own SQLite database: one run per test, not one per database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@extreme_accounts  # every pair's propagation paths: tests/events/test_propagate.py
def test_daemon_propagates_a_hubspot_opt_out_and_ignores_its_echo(
    configured_cli: BridgeCli, crms: Crms
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
        BRIDGE_SCHEDULE__INBOX_SECONDS="0.5",
        BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES="600",  # only the webhook path may act
    )  # fmt: skip
    try:
        wait_until_healthy(url, daemon)
        crms.hubspot.put(
            "/__emulator/webhooks",
            json={"target_url": f"{url}/webhooks/hubspot", "client_secret": CLIENT_SECRET},
        ).raise_for_status()
        endpoint = f"{url}/webhooks/salesforce/{OUTBOUND_TOKEN}"
        crms.salesforce.put(
            "/__emulator/outbound",
            json={"organization_id": ORG_ID, "messages": [
                {"object": "Contact", "endpoint_url": endpoint,
                 "watched_fields": ["HasOptedOutOfEmail"]},
            ]},
        ).raise_for_status()  # fmt: skip
        deadline = time.monotonic() + 30
        while not any(
            b"sync.finished" in p.read_bytes() for p in configured_cli.cwd.glob("run-*.log")
        ):
            assert time.monotonic() < deadline, "the daemon's first sync did not finish"
            time.sleep(0.1)  # the first (full) sync runs at start; the webhook comes after
        opted_out = {"email": PEOPLE[0].email, "status": "UNSUBSCRIBED"}
        crms.hubspot.post("/__emulator/seed", json={"statuses": [opted_out]}).raise_for_status()

        deadline = time.monotonic() + 60
        while not opted_out_in_salesforce(crms, PEOPLE[0].email):
            assert time.monotonic() < deadline, "not propagated within 60 seconds"
            time.sleep(0.2)
        deadline = time.monotonic() + 30
        while "sync.echo" not in actions(configured_cli):
            assert time.monotonic() < deadline, "the echo was not recognised"
            time.sleep(0.5)
    finally:
        daemon.terminate()
        assert daemon.wait(timeout=30) == 0

    applied = [e for e in events(configured_cli) if e["action"] == "sync.opt_out"]
    assert [(e["actor"], e["system"], e["outcome"]) for e in applied] == [
        ("propagate", "salesforce", "done")
    ]
    assert not any(opted_out_in_salesforce(crms, p.email) for p in PEOPLE[1:])
    for path in configured_cli.cwd.glob("*.log"):
        assert b"walker" not in path.read_bytes(), path.name


def opted_out_in_salesforce(crms: Crms, email: str) -> bool:
    rows = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    return any(r["Email"] == email and r["HasOptedOutOfEmail"] for r in rows["records"])


def events(configured_cli: BridgeCli) -> list[dict[str, object]]:
    result = configured_cli("audit", "--json")
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, object]] = json.loads(result.stdout)["events"]
    return listed


def actions(configured_cli: BridgeCli) -> set[object]:
    return {e["action"] for e in events(configured_cli)}
