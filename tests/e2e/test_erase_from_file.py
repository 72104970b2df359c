"""`bridge erase --from-file`: a list of people as people keep them (blank lines, odd case,
one twice), erased in both emulators and verified, each with its receipt, and no address
left in any file. test_erasure_at_scale.py erases 500 within the call budget; bench/erasure.py
measures large lists."""

from __future__ import annotations

import json

import pytest

from bridge.store import erasure as rows
from bridge.store.db import Store
from tests.conftest import BridgeCli, Crms

PEOPLE = [f"listed{n:03d}@example.com" for n in range(50)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_erase_from_file_erases_and_verifies_every_person_in_both_crms(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_people(PEOPLE, name="L")
    # As people keep lists: a header-less column, blank lines, odd case, one person twice.
    lines = [*PEOPLE[:25], "", PEOPLE[25].upper(), *PEOPLE[26:], f"  {PEOPLE[0]}  "]
    (cli.cwd / "people.txt").write_text("\n".join(lines) + "\n")

    result = cli("erase", "--from-file", "people.txt", "--reason", "list 2027-01", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    requests = json.loads(result.stdout)["requests"]
    assert len(requests) == len(PEOPLE) == len({r["id"] for r in requests})
    store = Store(cli.env["BRIDGE_DATABASE_URL"])
    for request in requests:
        assert request["status"] == "completed", request
        assert request["reason"] == "list 2027-01"
        assert request["systems"]["hubspot"]["objects"] == {"contact": {"erased": 1}}
        assert request["systems"]["salesforce"]["objects"] == {"contact": {"erased": 1}}
        stored = rows.request(store, request["id"])
        assert stored is not None and json.loads(stored["receipt"])["verification"] == {
            "ok": True, "emails_searched": 1, "records_found": {"hubspot": 0, "salesforce": 0},
        }  # fmt: skip
    store.dispose()
    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert contacts["records"] == []
    assert {r["status"] for r in json.loads(cli("requests", "--json").stdout)["requests"]} == {
        "completed"
    }
    for path in cli.cwd.iterdir():  # the database, its WAL and every log: no address left
        if path.name != "people.txt":
            assert b"listed0" not in path.read_bytes(), path.name
