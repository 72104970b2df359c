"""`bridge rectify` as a user runs it, against both emulators (GDPR Art. 16)."""

from __future__ import annotations

import json

import pytest

from bridge.identity import subject_ref
from tests.conftest import PSEUDONYM_KEY, BridgeCli, Crms

GRACE = "Grace.Rectify@Example.com"
OLD_NAME, NEW_NAME = "Whitcombe", "Harrowgate"
OLD_PHONE, NEW_PHONE = "+44 20 7946 0123", "+44 20 7946 0999"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rectify_writes_everywhere_audits_and_leaks_nothing(cli: BridgeCli, crms: Crms) -> None:
    hubspot_id = crms.seed_hubspot(
        email=GRACE.lower(), firstname="Grace", lastname=OLD_NAME, phone=OLD_PHONE
    )
    contact = crms.seed_salesforce("Contact", LastName=OLD_NAME, Phone=OLD_PHONE, Email=GRACE)
    lead = crms.seed_salesforce(
        "Lead", LastName=OLD_NAME, Phone=OLD_PHONE, Company="Acme", Email=GRACE.lower()
    )

    sets = ("--set", f"last_name={NEW_NAME}", "--set", f"phone={NEW_PHONE}")
    result = cli("rectify", GRACE, *sets, "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["records"]
    assert {(r["system"], r["object_type"], r["record_id"], r["status"]) for r in records} == {
        ("hubspot", "contact", hubspot_id, "done"),
        ("salesforce", "contact", contact, "done"),
        ("salesforce", "lead", lead, "done"),
    }
    assert all(
        set(r) == {"system", "object_type", "record_id", "status", "detail"} for r in records
    )

    [hubspot] = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert (hubspot["properties"]["lastname"], hubspot["properties"]["phone"]) == (
        NEW_NAME,
        NEW_PHONE,
    )
    assert hubspot["properties"]["firstname"] == "Grace"
    for sobject in ("Contact", "Lead"):
        [row] = crms.salesforce.get("/__emulator/records", params={"type": sobject}).json()[
            "records"
        ]
        assert (row["LastName"], row["Phone"]) == (NEW_NAME, NEW_PHONE)

    again = cli("rectify", GRACE, *sets)  # human output; nothing left to change
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 3 and all(line.endswith(": already") for line in lines)
    assert f"salesforce lead {lead}: already" in lines

    audited = cli("audit", "--json")
    assert audited.returncode == 0, audited.stderr
    events = [e for e in json.loads(audited.stdout)["events"] if e["action"] == "rectify"]
    ref = subject_ref(PSEUDONYM_KEY.encode(), GRACE)
    assert len(events) == 6 and {e["subject_ref"] for e in events} == {ref}
    assert {e["record_id"] for e in events} == {hubspot_id, contact, lead}
    assert all(e["details"]["fields"] == ["last_name", "phone"] for e in events)
    assert cli("audit", "--verify").returncode == 0

    said = "\n".join(
        [result.stdout, result.stderr, again.stdout, again.stderr, audited.stdout, audited.stderr]
    ).lower()
    for personal in (GRACE, OLD_NAME, NEW_NAME, OLD_PHONE, NEW_PHONE):
        assert personal.lower() not in said, personal
    for path in cli.cwd.iterdir():  # the database, its WAL and every log
        data = path.read_bytes().lower()
        for personal in (GRACE, OLD_NAME, NEW_NAME):
            assert personal.lower().encode() not in data, (path.name, personal)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rectify_refuses_bad_usage_in_one_line_without_personal_data(
    cli: BridgeCli, crms: Crms
) -> None:
    crms.seed_hubspot(email=GRACE.lower(), lastname=OLD_NAME)

    off_list = cli("rectify", GRACE, "--set", f"email={NEW_NAME}@example.com")
    assert off_list.returncode == 2
    assert off_list.stderr.count("\n") == 1 and "Traceback" not in off_list.stderr
    assert "email" in off_list.stderr and "rectify.fields" in off_list.stderr
    assert off_list.stdout == ""

    malformed = cli("rectify", GRACE, "--set", NEW_NAME)
    assert malformed.returncode == 2
    assert malformed.stderr.count("\n") == 1 and "FIELD=VALUE" in malformed.stderr

    nothing = cli("rectify", GRACE)
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1

    for result in (off_list, malformed, nothing):
        assert NEW_NAME.lower() not in result.stderr.lower()
        assert GRACE.lower() not in result.stderr.lower()
    [contact] = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert contact["properties"]["lastname"] == OLD_NAME
    events = json.loads(cli("audit", "--json").stdout)["events"]
    assert [e for e in events if e["action"] == "rectify"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rectify_refuses_a_value_one_system_cannot_hold_and_writes_nowhere(
    cli: BridgeCli, crms: Crms
) -> None:
    """HubSpot would take a 50-character first name, Salesforce's Contact and Individual
    hold 40: the correction is refused whole, before any write, so the CRMs still agree."""
    crms.seed_hubspot(email=GRACE.lower(), firstname="Grace", lastname=OLD_NAME)
    individual = crms.seed_salesforce("Individual", FirstName="Grace", LastName=OLD_NAME)
    crms.seed_salesforce(
        "Contact", FirstName="Grace", LastName=OLD_NAME, Email=GRACE, IndividualId=individual
    )
    too_long = "Bartholomew-Maximilian-Fitzgerald-Montgomery-Smyth"
    assert len(too_long) == 50

    for extra in ((), ("--json",)):
        result = cli("rectify", GRACE, "--set", f"first_name={too_long}", *extra)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        # One error line; log lines (JSON, such as the Salesforce path chosen) are apart.
        [line] = [entry for entry in result.stderr.splitlines() if not entry.startswith("{")]
        assert "Traceback" not in result.stderr
        assert "nothing written" in line
        assert "first_name: salesforce holds at most 40 characters" in line
        assert "Contact.FirstName" in line and "Individual.FirstName" in line
        assert "hubspot" not in line  # HubSpot could hold it: not named as refusing
        for personal in (too_long, "Bartholomew", GRACE, "Grace"):
            assert personal.lower() not in line.lower(), personal

    [contact] = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert contact["properties"]["firstname"] == "Grace"
    for sobject in ("Contact", "Individual"):
        [row] = crms.salesforce.get("/__emulator/records", params={"type": sobject}).json()[
            "records"
        ]
        assert (row["FirstName"], row["LastName"]) == ("Grace", OLD_NAME), sobject
    writes = crms.salesforce.get("/__emulator/counters").json()["calls"]
    assert not any("composite/sobjects" in call for call in writes)

    events = json.loads(cli("audit", "--json").stdout)["events"]
    rectified = [e for e in events if e["action"] == "rectify"]
    assert [e["outcome"] for e in rectified] == ["refused", "refused"]
    assert rectified[0]["subject_ref"] == subject_ref(PSEUDONYM_KEY.encode(), GRACE)
    assert rectified[0]["details"]["fields"] == ["first_name"]
    assert too_long not in json.dumps(events)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rectify_exits_1_when_a_record_fails(cli: BridgeCli, crms: Crms) -> None:
    """A value every system can hold is written; a record the vendor will not change (a
    converted Lead) is a failed entry and exit 1."""
    crms.seed_hubspot(email=GRACE.lower(), lastname=OLD_NAME)
    crms.seed_salesforce("Lead", LastName=OLD_NAME, Company="Acme", Email=GRACE, IsConverted=True)

    result = cli("rectify", GRACE, "--set", f"last_name={NEW_NAME}", "--json")
    assert result.returncode == 1, result.stderr
    records = {r["system"]: r for r in json.loads(result.stdout)["records"]}
    assert records["hubspot"]["status"] == "done"
    assert records["salesforce"]["status"] == "failed"
    assert "converted lead" in records["salesforce"]["detail"]
    assert NEW_NAME not in result.stdout + result.stderr
