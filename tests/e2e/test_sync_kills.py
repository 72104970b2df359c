"""`bridge sync` SIGKILLed mid-run, then run again: nothing skipped, nothing applied twice."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from bridge import audit
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import AUDIT_KEY, PURPOSES, BridgeCli, Crms

PEOPLE = [
    Person(
        f"person{n:03d}@example.com", hubspot=Held(opted_out_at=datetime(2025, 5, 1, tzinfo=UTC))
    )
    for n in range(500)
]


def applied(store: Store) -> int:
    return sum(1 for e in audit.events(store) if e["action"].startswith("sync."))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sync_survives_kills_mid_apply_and_applies_each_change_once(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    # Slow Salesforce writes down, so that the kills land while changes are being applied.
    crms.salesforce.put(
        "/__emulator/faults", json={"latency_ms": 150, "endpoints": ["PATCH *", "POST *"]}
    ).raise_for_status()

    store = Store(configured_cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    kills = 0
    for _ in range(2):  # each run is killed as soon as it has applied one batch of changes
        before = applied(store)
        process = configured_cli.start("sync", "--json")
        while process.poll() is None and applied(store) == before:
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=10)
    crms.salesforce.delete("/__emulator/faults").raise_for_status()
    applied_before = applied(store)
    final = configured_cli("sync", "--json")
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads(final.stdout)
    assert report["cursors_moved"] is True
    # The kills landed mid-apply: some changes were made before, the rest only now.
    assert kills == 2 and applied_before > 0 and report["counts"]["done"] > 0

    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert len(contacts["records"]) == len(PEOPLE)
    assert all(r["HasOptedOutOfEmail"] for r in contacts["records"])
    again = configured_cli("sync", "--full", "--json")
    assert json.loads(again.stdout)["counts"]["planned"] == 0

    assert audit.verify(store).ok
    done = Counter(
        (e["system"], e["record_id"], e["action"], e["details"].get("purpose"))
        for e in audit.events(store)
        if e["action"].startswith("sync.") and e["outcome"] == "done"
    )
    assert [key for key, n in done.items() if n > 1] == []  # no change was applied twice
    store.dispose()
