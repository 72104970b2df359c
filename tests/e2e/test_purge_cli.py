"""`bridge purge` as a user runs it: the shipped example rules, both emulators seeded with
dates relative to today, the CLI as a subprocess."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BridgeCli, Crms

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TODAY = datetime.now(UTC).date()
GONE = "gustav.gone@example.com"  # an unqualified lead idle 25 months: due
WARNED = "wilma.warned@example.com"  # idle for 24 months less 10 days: due within 30 days
FRESH = "fritz.fresh@example.com"  # active last month: kept
FORMER = "frieda.former@example.com"  # contract ended 37 months ago: anonymised
SEEDED = (GONE, WARNED, FRESH, FORMER)


def months_ago(months: int, days: int = 0) -> date:
    year, month = divmod(TODAY.month - 1 - months, 12)
    return date(TODAY.year + year, month + 1, min(TODAY.day, 28)) + timedelta(days=days)


def seed(crms: Crms) -> dict[str, str]:
    created = f"{months_ago(40).isoformat()}T09:00:00.000+0000"
    ids = {
        GONE: crms.seed_salesforce(
            "Lead", LastName="Gone", Company="Acme", Email=GONE, CreatedDate=created,
            LastActivityDate=months_ago(25).isoformat(),
        ),
        FRESH: crms.seed_salesforce(
            "Lead", LastName="Fresh", Company="Acme", Email=FRESH, CreatedDate=created,
            LastActivityDate=months_ago(1).isoformat(),
        ),
        FORMER: crms.seed_salesforce(
            "Contact", FirstName="Frieda", LastName="Former", Email=FORMER, LeadSource="Web",
            CreatedDate=created, Contract_End__c=months_ago(37).isoformat(),
        ),
    }  # fmt: skip
    ids[WARNED] = crms.seed_hubspot(
        email=WARNED, firstname="Wilma", lastname="Warned", lifecyclestage="subscriber",
        createdate=f"{months_ago(40).isoformat()}T09:00:00Z",
        notes_last_updated=f"{months_ago(24, days=10).isoformat()}T09:00:00Z",
    )  # fmt: skip
    return ids


def purge(cli: BridgeCli, *args: str) -> dict[str, Any]:
    result = cli("purge", *args, "--json")
    assert result.returncode == 0, result.stderr
    assert not any(e in result.stdout + result.stderr for e in SEEDED)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_preview_lists_who_falls_due_and_apply_erases_them_and_marks_the_warned(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    ids = seed(crms)

    preview = purge(configured_cli, "--preview", "--within", "60d")
    due = {r["id"]: item for item in preview["due"] for r in item["records"]}
    assert set(due) == {ids[GONE], ids[WARNED], ids[FORMER]}
    assert (due[ids[GONE]]["rule"], due[ids[GONE]]["action"]) == ("unqualified_leads", "delete")
    assert (due[ids[FORMER]]["rule"], due[ids[FORMER]]["action"]) == (
        "former_customers",
        "anonymize",
    )
    assert due[ids[WARNED]]["due_on"] == months_ago(0, days=10).isoformat()
    assert "no consent for marketing_email" in due[ids[GONE]]["why"]
    # Idle 25 months under a 24-month rule: due a month ago and still held, so overdue.
    assert {record_id: item["overdue"] for record_id, item in due.items()} == {
        ids[GONE]: True,
        ids[FORMER]: True,
        ids[WARNED]: False,
    }
    # Links lead where the bridge talks to: the emulator, on its own scheme (http) and host.
    emulator = str(crms.settings.salesforce.base_url).rstrip("/")
    assert emulator.startswith("http://")
    lead_url = due[ids[GONE]]["records"][0]["url"]
    assert lead_url == f"{emulator}/lightning/r/Lead/{ids[GONE]}/view"
    assert due[ids[FORMER]]["records"][0]["url"].startswith(f"{emulator}/lightning/r/Contact/")
    text = configured_cli("purge", "--preview", "--within", "60d")
    assert text.returncode == 0, text.stderr
    dues = [line for line in text.stdout.splitlines() if line.startswith("due ")]
    assert len(dues) == 3
    assert sum(" OVERDUE " in line for line in dues) == 2
    assert any(line.startswith(f"due {due[ids[WARNED]]['due_on']}  ") for line in dues)
    assert "2 of them OVERDUE" in text.stdout
    assert f"{emulator}/lightning/r/Lead/{ids[GONE]}/view" in text.stdout
    assert "https://" not in text.stdout
    assert {
        i["subject_ref"] for i in purge(configured_cli, "--preview", "--within", "0d")["due"]
    } == {
        due[ids[GONE]]["subject_ref"],
        due[ids[FORMER]]["subject_ref"],
    }

    applied = purge(configured_cli, "--apply")
    assert {v["status"] for v in applied["requests"]} == {"completed"}
    assert len(applied["requests"]) == 2
    assert (applied["marked"], applied["mark_failures"]) == (1, 0)
    leads = crms.salesforce.get("/__emulator/records", params={"type": "Lead"}).json()["records"]
    assert [r["Id"] for r in leads] == [ids[FRESH]]
    (former,) = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()[
        "records"
    ]
    assert (former["LastName"], former["LeadSource"]) == ("Anonymised", "Web")
    (warned,) = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert warned["properties"]["bridge_purge_due"] == months_ago(0, days=10).isoformat()

    # The erased are suppressed; the warned one is still on the list, marked once.
    again = purge(configured_cli, "--preview", "--within", "60d")
    assert [r["id"] for item in again["due"] for r in item["records"]] == [ids[WARNED]]
    assert purge(configured_cli, "--apply")["marked"] == 0

    text = configured_cli("purge", "--preview", "--within", "8w")
    assert text.returncode == 0, text.stderr
    assert "1 person falls due by" in text.stdout
    assert "unqualified_leads" in text.stdout
    assert WARNED not in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of --preview or --apply"),
        (("--preview", "--apply"), "give exactly one of --preview or --apply"),
        (("--preview", "--within", "2m"), "is not a number of days or weeks"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    configured_cli: BridgeCli, args: tuple[str, ...], message: str
) -> None:
    result = configured_cli("purge", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_without_rules_purge_says_how_to_add_them(cli: BridgeCli) -> None:
    (Path(cli.cwd) / "config").mkdir(exist_ok=True)
    result = cli("purge", "--preview")
    assert result.returncode == 2
    assert "retention.rules: none configured" in result.stderr
