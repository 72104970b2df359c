"""`bridge minimise --report` as a user runs it, against both emulators (GDPR Art. 5(1)(c)).

The report names fields and counts records: none of the seeded values may reach its output.
It needs no database, so these tests run the CLI without migrating one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import BridgeCli, Crms

GRACE = "grace.minimise@example.com"
ADA = "ada.minimise@example.com"
WEBSITE = "https://grace-hopper.example"
MESSAGE = "Please call me about my hospital appointment"
DESCRIPTION = "Met at the fair; spoke about her divorce"
SEEDED = (GRACE, ADA, "Grace", "Hopper", "Lovelace", "Analytical Engines", WEBSITE, MESSAGE)
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def minimise(bridge: BridgeCli, crms: Crms) -> BridgeCli:
    """The CLI aimed at both emulators, holding one field outside the allow-list in HubSpot,
    one free-text field outside it in each CRM, and data on the list besides."""
    crms.seed_hubspot(
        email=GRACE,
        firstname="Grace",
        lastname="Hopper",
        properties={"website": WEBSITE, "message": MESSAGE},
    )
    crms.seed_hubspot(email=ADA, firstname="Ada")
    crms.seed_salesforce(
        "Lead",
        LastName="Lovelace",
        Company="Analytical Engines",
        Email=ADA,
        Description=DESCRIPTION,
    )
    crms.seed_salesforce("Contact", LastName="Hopper", Email=GRACE)
    bridge.env |= crms.env()
    return bridge


def assert_no_values(*outputs: str) -> None:
    for output in outputs:
        for value in (*SEEDED, DESCRIPTION, "hospital", "divorce"):
            assert value.lower() not in output.lower(), value


@on_sqlite
def test_the_report_flags_fields_outside_the_list_and_free_text_and_shows_no_value(
    minimise: BridgeCli,
) -> None:
    result = minimise("minimise", "--report")
    assert result.returncode == 0, result.stderr
    assert_no_values(result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)  # it fits a terminal
    assert "field\tfilled\tshare\tallowed\tfree text" in lines  # off a terminal: tab-separated

    def row(name: str) -> list[str]:
        """A table row's cells: field, filled, share, allowed, free text (if so)."""
        [found] = [line for line in lines if line.startswith(f"{name}\t")]
        return found.rstrip("\t").split("\t")

    assert "hubspot.contact: 2 records" in lines
    assert row("website") == ["website", "1", "50%", "NO"]
    assert row("message") == ["message", "1", "50%", "NO", "yes"]
    assert row("email") == ["email", "2", "100%", "yes"]
    assert "salesforce.Lead: 1 record" in lines
    assert row("Description") == ["Description", "1", "100%", "NO", "yes"]
    assert "salesforce.Individual: 0 records, no field filled" in lines
    summary = " ".join(result.stdout.split())
    assert "3 fields outside the allow-list hold data (2 of them free text)" in summary


@on_sqlite
def test_json_is_one_object_per_object_and_follows_the_allow_list(minimise: BridgeCli) -> None:
    result = minimise("minimise", "--report", "--json")
    assert result.returncode == 0, result.stderr
    assert_no_values(result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert set(document) == {"systems", "outside", "free_text_outside"}
    assert (document["outside"], document["free_text_outside"]) == (3, 2)
    objects = {(s["system"], s["object"]): s for s in document["systems"]}
    assert set(objects) == {
        ("hubspot", "contact"),
        *(
            ("salesforce", name)
            for name in (
                "Contact",
                "Lead",
                "Individual",
                "ContactPointEmail",
                "ContactPointTypeConsent",
            )
        ),
    }

    def fields(system: str, name: str) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in objects[(system, name)]["fields"]}

    hubspot = fields("hubspot", "contact")
    assert objects[("hubspot", "contact")]["records"] == 2
    assert hubspot["website"] == {
        "name": "website",
        "filled": 1,
        "allowed": False,
        "free_text": False,
    }
    assert hubspot["message"] == {
        "name": "message",
        "filled": 1,
        "allowed": False,
        "free_text": True,
    }
    assert (hubspot["firstname"]["filled"], hubspot["firstname"]["allowed"]) == (2, True)
    lead = fields("salesforce", "Lead")
    assert lead["Description"] == {
        "name": "Description",
        "filled": 1,
        "allowed": False,
        "free_text": True,
    }
    assert all(f["allowed"] for name, f in lead.items() if name != "Description")
    assert objects[("salesforce", "Individual")] == {
        "system": "salesforce",
        "object": "Individual",
        "records": 0,
        "fields": [],
    }

    # Once the list names them, they are no longer outside it.
    allowed = {
        "hubspot.contact": ["email", "firstname", "lastname", "website", "message"],
        "salesforce.Contact": ["Email", "LastName"],
        "salesforce.Lead": ["Email", "LastName", "Company", "Status", "Description"],
    }
    widened = minimise(
        "minimise", "--report", "--json", BRIDGE_MINIMISATION__ALLOWED=json.dumps(allowed)
    )
    assert widened.returncode == 0, widened.stderr
    assert json.loads(widened.stdout)["outside"] == 0


def test_minimise_without_report_is_bad_usage(bridge: BridgeCli) -> None:
    result = bridge("minimise")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bridge: minimise: nothing to do; give --report to list the fields in use"
    ]
