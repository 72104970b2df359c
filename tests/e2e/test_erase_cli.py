"""`bridge erase` and `bridge requests` as a user runs them, against both emulators."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from tests.conftest import BridgeCli, Crms

ADA = "Ada.Erase@Example.com"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_erase_json_receipt_and_no_email_left_behind(cli: BridgeCli, crms: Crms) -> None:
    # A first name with letters no hex digest or hash in the database can hold by chance.
    crms.seed_hubspot(email=ADA.lower(), firstname="Augusta", lastname="Erase")
    crms.seed_salesforce("Contact", LastName="Erase", Email=ADA)
    crms.seed_salesforce("Lead", LastName="Erase", Company="Acme", Email=ADA.lower())

    exported = cli("export", ADA, "--out", "ada.json")
    assert exported.returncode == 0, exported.stderr
    document = json.loads((cli.cwd / "ada.json").read_text())
    (cli.cwd / "ada.json").unlink()  # the person's copy; it must not count as a leak below
    assert document["emails"] == [ADA.lower()]
    assert len(document["systems"]["hubspot"]["contacts"]) == 1
    assert document["systems"]["salesforce"]

    dry = cli("erase", ADA, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert {t["system"] for t in json.loads(dry.stdout)["targets"]} == {"hubspot", "salesforce"}

    result = cli("erase", ADA, "--reason", "ticket 4711", "--json")
    assert result.returncode == 0, result.stderr
    assert "augusta" not in result.stderr.lower()  # the logs
    [request] = json.loads(result.stdout)["requests"]
    assert request["status"] == "completed"
    assert request["systems"]["salesforce"]["objects"]["contact"]
    assert request["systems"]["hubspot"]["steps"] >= 2

    receipt = cli("erase", "--receipt", request["id"], "--json")
    assert receipt.returncode == 0
    assert json.loads(receipt.stdout)["verification"]["ok"] is True

    listed = json.loads(cli("requests", "--json").stdout)["requests"]
    assert [r["id"] for r in listed] == [request["id"]]
    assert json.loads(cli("requests", "--overdue", "--json").stdout) == {"requests": []}
    assert cli("audit", "--verify").returncode == 0

    for path in cli.cwd.iterdir():  # the database, its WAL and every log
        data = path.read_bytes().lower()
        assert ADA.lower().encode() not in data, path.name
        assert b"augusta" not in data, path.name


def test_erase_without_a_crm_configured_is_one_line(bridge: BridgeCli) -> None:
    assert bridge("db", "upgrade").returncode == 0
    result = bridge("erase", ADA, BRIDGE_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert ADA.lower() not in result.stderr.lower()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_requests_reappeared_flags_an_erased_person_typed_in_again(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_hubspot(email=ADA.lower(), firstname="Ada")
    assert cli("erase", ADA).returncode == 0
    first = cli("requests", "--reappeared", "--json")
    assert (first.returncode, json.loads(first.stdout)) == (0, {"reappeared": []}), first.stderr

    lead = crms.seed_salesforce("Lead", LastName="Erase", Company="Acme", Email=ADA)
    again = cli("requests", "--reappeared", "--json")
    assert again.returncode == 0, again.stderr
    [found] = json.loads(again.stdout)["reappeared"]
    assert (found["system"], found["record_id"], found["request_id"]) == ("salesforce", lead, None)
    assert ADA.lower() not in (again.stdout + again.stderr).lower()
    events = json.loads(cli("audit", "--json").stdout)
    assert "erasure.reappeared" in {e["action"] for e in events["events"]}
