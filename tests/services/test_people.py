"""One person, found whole: every record linked through shared emails, however many hops, the
same for sync and for erasure; against both emulators with the real clients."""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

import pytest
import structlog

from bridge.adapters.base import RecordReader
from bridge.identity import subject_ref
from bridge.model import CrmRecord, ObjectType, System
from bridge.services import people
from bridge.services.erasure import COMPLETED
from bridge.services.people import LookupBoundReached, find_person
from bridge.store import erasure as rows
from bridge.store import records as record_rows
from bridge.store.db import Store
from tests.conftest import PSEUDONYM_KEY, Crms
from tests.events.test_propagate import reconciler
from tests.services.test_erasure import live_salesforce, service

ADA = "ada.chain@example.com"  # HubSpot contact 1; Salesforce Contact
WORK = "ada@engines.example.net"  # a contact point of the Contact's Individual; HubSpot contact 2
HOME = "ada.home@example.org"  # HubSpot contact 2's additional address; Salesforce Lead
OLD = "a.lovelace@example.com"  # a contact point of the Lead's Individual; HubSpot contact 3
CHAIN = (ADA, WORK, HOME, OLD)
BOB = "bob.other@example.com"  # someone else, in both systems
RecordKey = tuple[str, str, str]


def seed_chain(crms: Crms) -> set[RecordKey]:
    """Ada, four hops long: from her first address, each system only names the next one.
    Returns the keys of her five records (the Individuals and contact points aside)."""
    first = crms.seed_hubspot(email=ADA, firstname="Ada", lastname="Chain")
    work = crms.seed_salesforce("Individual", FirstName="Ada", LastName="Chain")
    contact = crms.seed_salesforce("Contact", LastName="Chain", Email=ADA, IndividualId=work)
    crms.seed_salesforce("ContactPointEmail", EmailAddress=WORK, ParentId=work)
    second = crms.seed_hubspot(email=WORK, additional_emails=[HOME], lastname="Chain")
    home = crms.seed_salesforce("Individual", FirstName="Ada", LastName="Chain")
    lead = crms.seed_salesforce(
        "Lead", LastName="Chain", Company="Engines", Email=HOME, IndividualId=home
    )
    crms.seed_salesforce("ContactPointEmail", EmailAddress=OLD, ParentId=home)
    third = crms.seed_hubspot(email=OLD, lastname="Lovelace")
    crms.seed_hubspot(email=BOB, lastname="Other")
    crms.seed_salesforce("Contact", LastName="Other", Email=BOB)
    return {
        ("hubspot", "contact", first),
        ("hubspot", "contact", second),
        ("hubspot", "contact", third),
        ("salesforce", "contact", contact),
        ("salesforce", "lead", lead),
    }


def refs(emails: Collection[str]) -> set[str]:
    return {subject_ref(PSEUDONYM_KEY.encode(), e) for e in emails}


def test_sync_and_erasure_reach_the_same_records_through_secondary_addresses(
    crms: Crms, store: Store
) -> None:
    ada = seed_chain(crms)
    erasure = service(crms, store)
    request_id = erasure.submit([ADA], "delete", None, "cli")
    erasure.plan([request_id])
    erased = {
        (s["system"], s["object_type"], s["record_id"])
        for s in rows.steps(store, request_id)
        if s["object_type"] in ("contact", "lead") and s["record_id"]  # not address steps
    }
    report = reconciler(crms, store).sync_many([[ADA.upper()]], actor="test")[0]
    synced = record_rows.records_of(store, refs(CHAIN))  # what the sync read, remembered

    assert erased == synced == ada
    assert (report.records, report.subjects) == (len(ada), 1)  # one person, all her records

    view = erasure.run(request_id)
    assert view["status"] == COMPLETED, view
    contacts = crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert [c["properties"]["email"] for c in contacts] == [BOB]
    assert [r["Email"] for r in live_salesforce(crms, "Contact")] == [BOB]
    assert live_salesforce(crms, "Lead") == []
    assert erasure.receipt(request_id)["verification"]["emails_searched"] == len(CHAIN)
    assert rows.suppressed(store, refs([*CHAIN, BOB])) == refs(CHAIN)


def test_a_chain_past_the_lookup_bound_stops_erasure_and_is_flagged_by_the_sync(
    crms: Crms, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = seed_chain(crms)
    monkeypatch.setattr(people, "MAX_ROUNDS", 2)  # two hops reach ADA, WORK and HOME only
    erasure = service(crms, store)

    with pytest.raises(LookupBoundReached) as refused:
        erasure.dry_run([ADA])
    assert refused.value.partial.emails == sorted([ADA, WORK, HOME])
    assert refused.value.unsearched == 1
    assert "@" not in str(refused.value)  # the message names no address
    request_id = erasure.submit([ADA], "delete", None, "cli")
    with pytest.raises(LookupBoundReached):
        erasure.plan([request_id])
    assert rows.steps(store, request_id) == []  # nothing planned from a partial person

    with structlog.testing.capture_logs() as logs:
        report = reconciler(crms, store).sync_many([[ADA]], actor="test")[0]
    assert report.records == 3 and len(ada) == 5  # synced with what was found, and said so
    [warning] = [entry for entry in logs if entry["event"] == "sync.lookup_bound_reached"]
    assert warning["log_level"] == "warning"
    assert (warning["rounds"], warning["records"], warning["unsearched"]) == (2, 3, 1)


class Directory:
    """A system that finds records by any of their addresses, and notes what it was asked."""

    def __init__(self, system: str, *records: tuple[str, ...]) -> None:
        self.records = [
            CrmRecord(System(system), ObjectType.CONTACT, str(n), emails)
            for n, emails in enumerate(records)
        ]
        self.asked: list[list[str]] = []

    def find_by_emails(self, emails: Collection[str]) -> list[CrmRecord]:
        self.asked.append(list(emails))
        return [r for r in self.records if {e.lower() for e in r.emails} & set(emails)]


def test_each_round_asks_every_system_only_about_addresses_new_to_it() -> None:
    one = Directory("hubspot", ("A@x.test", "b@x.test"), ("z@x.test",))
    two = Directory("salesforce", ("b@x.test", "c@x.test"), ("c@x.test",))
    adapters = {System("hubspot"): one, System("salesforce"): two}

    person = find_person(cast(dict[System, RecordReader], adapters), [" a@X.test ", ""])

    assert person.emails == ["a@x.test", "b@x.test", "c@x.test"]
    assert {(r.system, r.id) for r in person.records} == {
        ("hubspot", "0"), ("salesforce", "0"), ("salesforce", "1"),
    }  # fmt: skip
    assert one.asked == two.asked == [["a@x.test"], ["b@x.test"], ["c@x.test"]]
    with pytest.raises(LookupBoundReached):
        find_person(cast(dict[System, RecordReader], adapters), ["a@x.test"], max_rounds=2)
