"""Erasure at full size, as a user runs it: `bridge purge --apply` of 2,000 people and
`bridge erase --from-file` of 500, against both emulators, every person erased and verified
within the calls bench/erasure.py allows (1.2 times the minimum, formula there) and no 429.
The emulators' limits are raised, not lifted, so the pacing is still exercised at speed."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.conftest import BridgeCli, Crms
from tests.e2e.test_purge_cli import months_ago

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FAST = {"burst_max": 400, "burst_interval_ms": 1000, "search_max": 100, "daily_max": 1_000_000}


def hubspot_minimum(addresses: int, unheld: int = 0) -> int:
    """bench/erasure.py's: a gdpr-delete per address (of its contact, or of the address alone,
    which blocklists it), a batch read per 100 addresses to find them and a search per 5 of
    those no contact holds as its primary (``unheld``: they may be another's additional
    address), and to verify a batch read per 100 and a search per 5."""
    a = addresses
    return a + math.ceil(a / 100) + math.ceil(unheld / 5) + math.ceil(a / 100) + math.ceil(a / 5)


def fast_and_counted(crms: Crms, cli: BridgeCli) -> None:
    """Limits raised, the bridge told of search's (HubSpot sends no header for it), Salesforce
    hard delete permitted, and the counters at zero."""
    crms.hubspot.put("/__emulator/rate-limits", json=FAST).raise_for_status()
    cli.env["BRIDGE_HUBSPOT__SEARCH_PER_SECOND"] = str(FAST["search_max"])
    settings = {"daily_api_limit": 1_000_000, "hard_delete_permission": True}
    crms.salesforce.patch("/__emulator/settings", json=settings).raise_for_status()
    for admin in (crms.hubspot, crms.salesforce):
        admin.delete("/__emulator/counters").raise_for_status()


def counters(crms: Crms) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        crms.hubspot.get("/__emulator/counters").json(),
        crms.salesforce.get("/__emulator/counters").json(),
    )


def test_purge_apply_erases_two_thousand_people_within_the_call_budget(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    created = f"{months_ago(40).isoformat()}T09:00:00"
    idle = months_ago(25).isoformat()
    leads = [
        {"attributes": {"type": "Lead"}, "LastName": "Idle", "Company": "Acme",
         "Email": f"lead{n:04d}@example.com", "CreatedDate": f"{created}.000+0000",
         "LastActivityDate": idle}
        for n in range(1000)
    ]  # fmt: skip
    contacts = [
        {"email": f"contact{n:04d}@example.com", "lifecyclestage": "subscriber",
         "createdate": f"{created}Z", "notes_last_updated": f"{idle}T09:00:00Z"}
        for n in range(1000)
    ]  # fmt: skip
    for start in range(0, 1000, 500):
        crms.salesforce.post(
            "/__emulator/records", json={"records": leads[start : start + 500]}
        ).raise_for_status()
        crms.hubspot.post(
            "/__emulator/seed", json={"contacts": contacts[start : start + 500]}
        ).raise_for_status()
    fast_and_counted(crms, configured_cli)

    result = configured_cli("purge", "--apply", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert len(report["requests"]) == 2000
    assert {r["status"] for r in report["requests"]} == {"completed"}
    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    assert crms.salesforce.get("/__emulator/records", params={"type": "Lead"}).json() == {
        "records": []
    }
    hubspot, _ = counters(crms)
    # A purge reads every contact first (pages of 100, statuses alongside) and marks none;
    # the leads' addresses, which HubSpot never held, are blocklisted there too.
    reads = 2 * math.ceil(1000 / 100)
    minimum = hubspot_minimum(2000, unheld=1000) + reads
    assert hubspot["total"] <= 1.2 * minimum, hubspot["calls"]
    assert 2000 <= hubspot["calls"]["POST /crm/v3/objects/contacts/gdpr-delete"] <= 1.02 * 2000
    assert not hubspot.get("injected")


def test_erase_from_file_of_five_hundred_within_the_call_budget(cli: BridgeCli, crms: Crms) -> None:
    people = [f"listed{n:03d}@example.com" for n in range(500)]
    crms.seed_people(people, name="L")
    (cli.cwd / "people.txt").write_text("\n".join(people) + "\n")
    fast_and_counted(crms, cli)

    result = cli("erase", "--from-file", "people.txt", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    requests = json.loads(result.stdout)["requests"]
    assert len(requests) == 500
    assert {r["status"] for r in requests} == {"completed"}
    hubspot, salesforce = counters(crms)
    assert hubspot["total"] <= 1.2 * hubspot_minimum(500), hubspot["calls"]
    # Salesforce: a few IN-list queries and one Bulk job for all the Contacts, not per person.
    bulk_jobs = salesforce["calls"].get("POST /services/data/v{version}/jobs/ingest", 0)
    assert bulk_jobs == 1, salesforce["calls"]
    # Login, describes, one Bulk job (5 calls); the lookups twice (8 queries each); and per
    # verification 3, at most one per HubSpot batch (50 people). 30 to 42 in practice; 5,509
    # before batching.
    budget = 9 + 2 * 8 + 3 * math.ceil(500 / 50)
    assert salesforce["total"] <= budget, salesforce["calls"]
