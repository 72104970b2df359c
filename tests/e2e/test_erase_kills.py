"""`bridge erase` of 120 people, SIGKILLed at random points 20 times, then run to the end."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pytest

from bridge import audit
from bridge.store.db import Store
from tests.conftest import AUDIT_KEY, BridgeCli, Crms

PEOPLE = [f"person{n:03d}@example.com" for n in range(120)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_erasure_survives_twenty_kills_and_repeats_nothing(bridge: BridgeCli, crms: Crms) -> None:
    crms.hubspot.put("/__emulator/rate-limits", json={"enabled": False}).raise_for_status()
    crms.salesforce.patch("/__emulator/settings", json={"daily_api_limit": 1_000_000})
    crms.hubspot.post(
        "/__emulator/seed", json={"contacts": [{"email": e, "firstname": "P"} for e in PEOPLE]}
    ).raise_for_status()
    crms.salesforce.post(
        "/__emulator/records",
        json={"records": [{"attributes": {"type": "Contact"}, "LastName": "P", "Email": e}
                          for e in PEOPLE]},
    ).raise_for_status()  # fmt: skip
    bridge.env |= crms.env()
    assert bridge("db", "upgrade").returncode == 0

    rnd = random.Random(20)
    for _ in range(20):
        process = bridge.start("erase", *PEOPLE, "--json")
        time.sleep(rnd.uniform(1.0, 3.0))  # imports take about a second; then it erases
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    final = bridge("erase", *PEOPLE, "--json")
    assert final.returncode == 0, final.stderr[-2000:]

    requests = json.loads(final.stdout)["requests"]
    assert len(requests) == len(PEOPLE)
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
    assert len(done) == 2 * len(PEOPLE)  # one HubSpot and one Salesforce contact each
    erased_twice = [key for key, n in done.items() if n > 1]
    assert erased_twice == []  # no record's erasure was carried out (and recorded) twice
    store.dispose()
