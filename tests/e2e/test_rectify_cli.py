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
def test_rectify_exits_1_when_a_record_fails(cli: BridgeCli, crms: Crms) -> None:
    crms.seed_hubspot(email=GRACE.lower(), lastname=OLD_NAME)
    crms.seed_salesforce("Contact", LastName=OLD_NAME, Email=GRACE)

    result = cli("rectify", GRACE, "--set", "last_name=" + "x" * 81, "--json")
    assert result.returncode == 1, result.stderr
    records = {r["system"]: r for r in json.loads(result.stdout)["records"]}
    assert records["hubspot"]["status"] == "done"
    assert records["salesforce"]["status"] == "failed"
    assert "LastName" in records["salesforce"]["detail"] and "80" in records["salesforce"]["detail"]
    assert "x" * 81 not in result.stdout + result.stderr
