"""`bridge sync` against a Salesforce org without the privacy objects, and the phone channel:
both emulators seeded, the CLI as a subprocess."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bridge.model import ConsentStatus, LawfulBasis
from bridge_sandbox.emulators.people import Act, Held, Person
from tests.conftest import BridgeCli, Crms, basic_orgs
from tests.e2e.test_sync_cli import hs_statuses, seed, sf_rows

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOT_HOLDABLE = "salesforce.consent_not_holdable"

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def run(cli: BridgeCli, *args: str) -> tuple[dict[str, Any], list[str]]:
    """One sync that must succeed: its report, and its log lines about consent Salesforce
    cannot hold."""
    result = cli("sync", "--json", *args)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if NOT_HOLDABLE in line]
    for output in (result.stdout, result.stderr):
        assert "ada@example.com" not in output.lower() and "Traceback" not in output
    report: dict[str, Any] = json.loads(result.stdout)
    return report, warnings


def untick_do_not_call(crms: Crms, record_id: str) -> None:
    """What a sales rep does in Salesforce: clear the contact's Do Not Call, through the API."""
    base = str(crms.settings.salesforce.base_url)
    with httpx.Client(base_url=base, timeout=10) as client:
        form = {"grant_type": "password", "client_id": "k", "client_secret": "s"}
        token = client.post("/services/oauth2/token", data=form).json()["access_token"]
        client.patch(
            f"/services/data/v59.0/sobjects/Contact/{record_id}",
            json={"DoNotCall": False},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()


@basic_orgs
def test_a_basic_org_syncs_flags_and_basis_warns_once_per_run_and_never_lifts_do_not_call(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(
        crms,
        Person(
            "ada@example.com",
            hubspot=Held(acts=(Act("marketing_email", "granted", T0),)),
            salesforce=Held(do_not_call_at=T0, lawful_basis=LawfulBasis.CONTRACT),
        ),
        Person(
            "grace@example.com",
            hubspot=Held(opted_out_at=T0),
            salesforce=Held(acts=(Act("marketing_email", "granted", T0),)),
        ),
    )
    lead = crms.seed_salesforce(
        "Lead", LastName="Lovelace", Company="Engines", Email="Ada@Example.com"
    )
    [contact] = [r["Id"] for r in sf_rows(crms, "Contact") if r["Email"] == "ada@example.com"]

    report, warnings = run(configured_cli)

    assert len(warnings) == 1, "one warning per run, not one per record or per purpose"
    warning = json.loads(warnings[0])
    assert warning["level"] == "warning" and "Individual" in warning["detail"]
    assert report["counts"]["failed"] == 0 and report["cursors_moved"] is True
    salesforce = [c for c in report["changes"] if c["system"] == "salesforce"]
    assert {c["change"] for c in salesforce} == {"do_not_call", "opt_out", "lawful_basis"}
    assert {c["outcome"] for c in report["changes"]} == {"done"}
    people = {r["Id"]: r for r in sf_rows(crms, "Contact") + sf_rows(crms, "Lead")}
    assert people[lead]["DoNotCall"] is True, "Do Not Call reaches every record of the person"
    assert people[lead]["Lawful_Basis__c"] == "Contract"
    grace = next(r for r in people.values() if r["Email"] == "grace@example.com")
    assert grace["HasOptedOutOfEmail"] is True and grace["DoNotCall"] is False
    assert hs_statuses(crms, "ada@example.com")["1"]["status"] == "SUBSCRIBED"
    assert None not in hs_statuses(crms, "ada@example.com"), "no do-not-call reaches HubSpot"

    again, warned = run(configured_cli, "--full")
    assert again["counts"]["planned"] == 0 and len(warned) == 1

    untick_do_not_call(crms, contact)
    third, _ = run(configured_cli, "--full")
    relapsed = [(c["record_id"], c["change"], c["value"]) for c in third["changes"]]
    assert relapsed == [(contact, "do_not_call", ConsentStatus.WITHDRAWN.value)]
    people = {r["Id"]: r for r in sf_rows(crms, "Contact") + sf_rows(crms, "Lead")}
    assert people[contact]["DoNotCall"] is True and people[lead]["DoNotCall"] is True
