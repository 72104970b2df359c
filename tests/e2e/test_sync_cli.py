"""`bridge sync` as a user runs it: both emulators seeded, the CLI as a subprocess."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.model import ConsentStatus, LawfulBasis
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import (
    PURPOSES,
    BridgeCli,
    Crms,
    every_account,
    extreme_accounts,
    privacy_orgs,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
GRANTED, WITHDRAWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN

# The CLI keeps its own SQLite database: one run per test, not one per database.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def sync(cli: BridgeCli, *args: str) -> dict[str, Any]:
    result = cli("sync", "--json", *args)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def seed(crms: Crms, *people: Person) -> None:
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)


def sf_rows(crms: Crms, sobject: str) -> list[dict[str, Any]]:
    reply = crms.salesforce.get("/__emulator/records", params={"type": sobject})
    reply.raise_for_status()
    rows: list[dict[str, Any]] = reply.json()["records"]
    return rows


def sf_consents(crms: Crms, party: str) -> dict[str, str]:
    """Purpose name -> PrivacyConsentStatus of the latest row of one Individual."""
    names = {r["Id"]: r["Name"] for r in sf_rows(crms, "DataUsePurpose")}
    rows = sorted(
        (r for r in sf_rows(crms, "ContactPointTypeConsent") if r["PartyId"] == party),
        key=lambda r: r["CaptureDate"],
    )
    return {names[r["DataUsePurposeId"]]: r["PrivacyConsentStatus"] for r in rows}


def hs_statuses(crms: Crms, email: str) -> dict[str | None, dict[str, Any]]:
    """Subscription id (None: portal-wide) -> status row, for one address."""
    state = crms.hubspot.get("/__emulator/state").json()
    return {s["subscriptionId"]: s for s in state["subscriptions"] if s["email"] == email}


@every_account
def test_hubspot_unsubscribe_all_reaches_every_salesforce_record(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    person = Person(
        "ada@example.com",
        hubspot=Held(opted_out_at=T0),
        salesforce=Held(acts=(Act("marketing_email", GRANTED, T0 - timedelta(days=30)),)),
    )
    seed(crms, person)
    lead = crms.seed_salesforce(
        "Lead", LastName="Lovelace", Company="Engines", Email="Ada@Example.com"
    )

    report = sync(configured_cli)

    people = [r for r in sf_rows(crms, "Contact") + sf_rows(crms, "Lead")]
    assert {r["Id"] for r in people} >= {lead}
    assert all(r["HasOptedOutOfEmail"] for r in people)
    if crms.accounts.privacy:  # else the flag is all the org can hold
        parties = {r["IndividualId"] for r in people}
        assert None not in parties
        for party in parties:
            assert sf_consents(crms, party) == {"Marketing": "OptOut", "Product Updates": "OptOut"}
    assert report["counts"]["failed"] == 0 and report["counts"]["planned"] > 0
    assert report["cursors_moved"] is True
    assert sync(configured_cli, "--full")["counts"]["planned"] == 0, (
        "a sync right after a sync plans nothing"
    )


@every_account
def test_salesforce_opt_out_unsubscribes_the_person_from_all_hubspot_email(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(crms, Person("grace@example.com", salesforce=Held(opted_out_at=T0)))
    sync(configured_cli)
    wide = hs_statuses(crms, "grace@example.com")[None]
    assert wide["status"] == "UNSUBSCRIBED"


@privacy_orgs
def test_salesforce_purpose_opt_out_unsubscribes_the_mapped_subscription_with_basis(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(
        crms,
        Person(
            "alan@example.com",
            hubspot=Held(acts=(Act("marketing_email", GRANTED, T0),)),
            salesforce=Held(acts=(Act("marketing_email", WITHDRAWN, T0 + timedelta(days=1)),)),
        ),
    )
    sync(configured_cli)
    statuses = hs_statuses(crms, "alan@example.com")
    assert statuses["1"]["status"] == "UNSUBSCRIBED"
    assert statuses["1"]["legalBasis"] == "CONSENT_WITH_NOTICE"  # the purpose's, in Salesforce
    assert "withdrawn in salesforce record" in statuses["1"]["legalBasisExplanation"]
    assert None not in statuses and "2" not in statuses, "nothing else was touched"


@privacy_orgs
def test_evidenced_salesforce_grant_after_older_hubspot_opt_out_is_left_to_the_person(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(
        crms,
        Person(
            "katherine@example.com",
            hubspot=Held(acts=(Act("marketing_email", WITHDRAWN, T0),)),
            salesforce=Held(acts=(Act("marketing_email", GRANTED, T0 + timedelta(days=2)),)),
        ),
    )
    first = sync(configured_cli)
    refused = [c for c in first["changes"] if c["outcome"] == "needs_self_service"]
    assert [(c["system"], c["value"]) for c in refused] == [("hubspot", "granted")]
    assert hs_statuses(crms, "katherine@example.com")["1"]["status"] == "UNSUBSCRIBED"

    crms.hubspot.delete("/__emulator/counters").raise_for_status()
    second = sync(configured_cli, "--full")
    assert second["counts"]["planned"] == 0 and second["counts"]["awaiting_person"] == 1
    calls = crms.hubspot.get("/__emulator/counters").json()["calls"]
    writes = [key for key in calls if key.startswith("POST") and not key.endswith("/read")]
    assert not [key for key in writes if "subscribe" in key.lower()]


@extreme_accounts
def test_lawful_basis_set_in_one_system_appears_mapped_in_the_other(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(
        crms,
        Person("hedy@example.com", hubspot=Held(lawful_basis=LawfulBasis.CONTRACT)),
        Person(
            "mary@example.com",
            hubspot=Held(),
            salesforce=Held(lawful_basis=LawfulBasis.LEGITIMATE_INTERESTS),
        ),
    )
    sync(configured_cli)
    basis = {r["Email"]: r["Lawful_Basis__c"] for r in sf_rows(crms, "Contact")}
    assert basis["hedy@example.com"] == "Contract"
    contacts = crms.hubspot.get("/__emulator/state").json()["contacts"]
    held = {c["properties"]["email"]: c["properties"].get("hs_legal_basis") for c in contacts}
    assert held["mary@example.com"] == "Legitimate interest - other"


@extreme_accounts
def test_dry_run_prints_the_plan_and_writes_nothing(configured_cli: BridgeCli, crms: Crms) -> None:
    seed(crms, Person("ada@example.com", hubspot=Held(opted_out_at=T0)))
    crms.salesforce.delete("/__emulator/counters").raise_for_status()
    result = configured_cli("sync", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["counts"]["planned"] == len(plan["changes"]) > 0
    planned = {(c["system"], c["change"]) for c in plan["changes"]}
    salesforce = {"opt_out", "consent"} if crms.accounts.privacy else {"opt_out"}  # else: flags
    assert planned == {("hubspot", "consent")} | {("salesforce", c) for c in salesforce}
    assert all("outcome" not in c for c in plan["changes"])
    assert all(r["HasOptedOutOfEmail"] is False for r in sf_rows(crms, "Contact"))
    calls = crms.salesforce.get("/__emulator/counters").json()["calls"]
    assert not [key for key in calls if key.startswith(("PATCH", "POST /services/data/v"))
                and "query" not in key and "login" not in key.lower()]  # fmt: skip

    table = configured_cli("sync", "--dry-run")
    assert table.returncode == 0 and "would apply" in table.stdout
    for output in (result.stdout, result.stderr, table.stdout, table.stderr):
        assert "ada@example.com" not in output.lower()


@extreme_accounts
def test_erased_person_is_not_brought_back_by_a_later_full_sync(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(crms, Person("ada@example.com", hubspot=Held(opted_out_at=T0), salesforce=None))
    assert configured_cli("erase", "ada@example.com").returncode == 0
    seed_hubspot(crms.hubspot, [Person("ada@example.com", salesforce=None)], PURPOSES)

    report = sync(configured_cli, "--full")

    assert report["counts"]["suppressed"] == 1 and report["counts"]["planned"] == 0
    assert sf_rows(crms, "Contact") == []
    assert not crms.accounts.privacy or sf_rows(crms, "Individual") == []
    reappeared = configured_cli("requests", "--reappeared", "--json")
    assert len(json.loads(reappeared.stdout)["reappeared"]) == 1


# Twelve people opted out in HubSpot and consenting in Salesforce: more changes than a
# report lists by default (each person's Salesforce records follow the opt-out).
CROWD = [
    Person(
        f"crowd{n}@example.com",
        hubspot=Held(opted_out_at=T0),
        salesforce=Held(acts=(Act("marketing_email", GRANTED, T0 - timedelta(days=30)),)),
    )
    for n in range(12)
]


def lines(cli: BridgeCli, *args: str) -> list[dict[str, Any]]:
    """``sync --jsonl``: every line one JSON object."""
    result = cli("sync", "--jsonl", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_json_counts_every_change_and_lists_the_first_twenty_unless_told(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(crms, *CROWD)

    report = sync(configured_cli, "--dry-run")

    planned = report["counts"]["planned"]
    assert planned > 20 and report["changes_total"] == planned
    assert report["changes_shown"] == len(report["changes"]) == 20
    whole = sync(configured_cli, "--dry-run", "--changes", "all")
    assert whole["changes_shown"] == len(whole["changes"]) == planned
    assert whole["changes"][:20] == report["changes"], "the first twenty, in the plan's order"
    assert len({json.dumps(c, sort_keys=True) for c in whole["changes"]}) == planned
    for shown, listed in (("none", []), ("5", whole["changes"][:5])):
        some = sync(configured_cli, "--dry-run", "--changes", shown)
        assert (some["changes"], some["changes_shown"]) == (listed, len(listed))
        assert some["counts"] == whole["counts"] == report["counts"]


def test_the_terminal_view_lists_twenty_and_says_how_many_more(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(crms, *CROWD)
    planned = sync(configured_cli, "--dry-run", "--changes", "none")["counts"]["planned"]

    result = configured_cli("sync", "--dry-run")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t")[:3] == ["system", "object", "record"]
    assert len([r for r in rows if r.count("\t") == 6]) == 20
    assert rows[20].endswith(f"would apply {planned} changes")
    hint = "not shown; --changes all or --jsonl to see them"
    assert rows[21] == f"{planned - 20} more changes {hint}"
    none = configured_cli("sync", "--dry-run", "--changes", "none").stdout.splitlines()
    assert none[-1] == f"{planned} changes {hint}"


def test_jsonl_prints_each_change_once_settled_then_a_summary(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seed(crms, *CROWD)
    plan = lines(configured_cli, "--dry-run")
    planned = plan[-1]["counts"]["planned"]
    assert len(plan) == planned + 1 and planned > 20
    assert all(line["type"] == "change" and "outcome" not in line for line in plan[:-1])

    result = configured_cli("sync", "--jsonl")

    assert result.returncode == 0, result.stderr
    *changes, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(changes) == planned and {c["type"] for c in changes} == {"change"}
    assert {c["outcome"] for c in changes} == {"done"}
    keys = {"subject_ref", "system", "object_type", "record_id", "change", "purpose", "value",
            "follows", "reason", "outcome"}  # fmt: skip
    assert all(set(c) - {"type", "detail"} == keys for c in changes)
    settled = {(c["system"], c["record_id"], c["change"], c["purpose"]) for c in changes}
    assert settled == {(c["system"], c["record_id"], c["change"], c["purpose"]) for c in plan[:-1]}
    assert summary["type"] == "summary" and summary["cursors_moved"] is True
    assert summary["counts"]["planned"] == summary["counts"]["done"] == planned
    assert not {"changes", "changes_shown", "changes_total"} & set(summary)
    assert "@example.com" not in result.stdout + result.stderr
    [again] = lines(configured_cli, "--full")  # nothing left to do: the summary alone
    assert again["type"] == "summary" and again["counts"]["planned"] == 0


NOT_A_NUMBER = "sync --changes: give all, none or a number of changes, not "
BOTH = "sync: give --json (one object) or --jsonl (a line a change), not both"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--changes", "lots"), NOT_A_NUMBER + "'lots'"),
        (("--changes", "-1"), NOT_A_NUMBER + "'-1'"),
        (("--changes", "2.5"), NOT_A_NUMBER + "'2.5'"),
        (("--json", "--jsonl"), BOTH),
    ],
)
def test_a_bad_report_option_is_one_line_and_exit_2(
    configured_cli: BridgeCli, crms: Crms, args: tuple[str, ...], said: str
) -> None:
    crms.hubspot.delete("/__emulator/counters").raise_for_status()
    result = configured_cli("sync", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == f"bridge: {said}"
    assert "Traceback" not in result.stderr
    assert crms.hubspot.get("/__emulator/counters").json()["total"] == 0, "nothing was read"
