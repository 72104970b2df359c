"""`bridge erase` of 120 people, SIGKILLed at random points 20 times, then run to the end; and
killed at the two moments batching makes delicate: inside a Salesforce Bulk job, and between
HubSpot's gdpr-deletes."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import httpx
import pytest

from bridge import audit
from bridge.store.db import Store
from tests.conftest import AUDIT_KEY, BridgeCli, Crms

PEOPLE = [f"person{n:03d}@example.com" for n in range(120)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_erasure_survives_twenty_kills_and_repeats_nothing(bridge: BridgeCli, crms: Crms) -> None:
    seed(bridge, crms, PEOPLE)

    rnd = random.Random(20)
    for _ in range(20):
        process = bridge.start("erase", *PEOPLE, "--json")
        time.sleep(rnd.uniform(1.0, 3.0))  # imports take about a second; then it erases
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finish(bridge, crms, PEOPLE)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_killed_inside_a_bulk_job_and_between_hubspot_deletes_erases_each_once(
    bridge: BridgeCli, crms: Crms
) -> None:
    people = PEOPLE[:60]
    seed(bridge, crms, people)
    bridge.env["BRIDGE_ERASURE__LEASE_SECONDS"] = "5"  # a killed run's claims lapse soon
    # The Bulk job's rows are erased when it is closed; its status polls are held for 5 s:
    # killed while polling, the bridge never learns that the job completed. (HubSpot, side
    # by side, is held to a delete a second meanwhile, to leave it work for the next kill.)
    polls = {"latency_ms": 5000, "endpoints": ["GET /services/data/v*/jobs/ingest/*"]}
    crms.salesforce.put("/__emulator/faults", json=polls).raise_for_status()
    hubspot_at(crms, latency_ms=1000)
    kill_once(bridge, crms.salesforce, "PATCH /services/data/v{version}/jobs/ingest/{job_id}", 1)
    assert crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json() == {
        "records": []
    }  # erased at Salesforce, not yet known to the bridge
    crms.salesforce.delete("/__emulator/faults").raise_for_status()
    # HubSpot's deletes at 20 a second: killed after 10 of them, mid-batch.
    hubspot_at(crms, latency_ms=50)
    kill_once(bridge, crms.hubspot, GDPR_DELETE, 10)
    assert len(crms.hubspot.get("/__emulator/state").json()["contacts"]) >= 30  # work left
    crms.hubspot.delete("/__emulator/faults").raise_for_status()
    finish(bridge, crms, people)


GDPR_DELETE = "POST /crm/v3/objects/contacts/gdpr-delete"


def hubspot_at(crms: Crms, latency_ms: int) -> None:
    slow = {"latency_ms": latency_ms, "endpoints": [GDPR_DELETE]}
    crms.hubspot.put("/__emulator/faults", json=slow).raise_for_status()


def seed(bridge: BridgeCli, crms: Crms, people: list[str]) -> None:
    crms.hubspot.put("/__emulator/rate-limits", json={"enabled": False}).raise_for_status()
    settings = {"daily_api_limit": 1_000_000, "hard_delete_permission": True}
    crms.salesforce.patch("/__emulator/settings", json=settings).raise_for_status()
    crms.seed_people(people, name="P")
    bridge.env |= crms.env()
    assert bridge("db", "upgrade").returncode == 0


def kill_once(bridge: BridgeCli, emulator: httpx.Client, route: str, calls: int) -> None:
    """Start erasing everyone and SIGKILL the process once ``route`` has had ``calls``."""
    emulator.delete("/__emulator/counters").raise_for_status()
    process = bridge.start("erase", *PEOPLE[:60], "--json")
    deadline = time.monotonic() + 60
    while emulator.get("/__emulator/counters").json()["calls"].get(route, 0) < calls:
        assert process.poll() is None and time.monotonic() < deadline, "never reached " + route
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def finish(bridge: BridgeCli, crms: Crms, people: list[str]) -> None:
    """Run to the end: everyone erased and verified, each record's erasure carried out and
    recorded once, the audit chain intact."""
    final = bridge("erase", *people, "--json")
    assert final.returncode == 0, final.stderr[-2000:]

    requests = json.loads(final.stdout)["requests"]
    assert len(requests) == len(people)
    assert {r["status"] for r in requests} == {"completed"}  # erased before: erased again
    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert contacts["records"] == []

    store = Store(bridge.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    listed = json.loads(bridge("requests", "--json").stdout)["requests"]
    assert {r["status"] for r in listed} == {"completed"}  # every interrupted request resumed
    assert audit.verify(store).ok
    done = Counter(
        (e["system"], e["record_id"], e["details"]["object_type"])
        for e in audit.events(store)
        if e["action"] == "erasure.step" and e["details"]["status"] == "done" and e["record_id"]
    )
    assert len(done) == 2 * len(people)  # one HubSpot and one Salesforce contact each
    erased_twice = [key for key, n in done.items() if n > 1]
    assert erased_twice == []  # no record's erasure was carried out (and recorded) twice
    store.dispose()
