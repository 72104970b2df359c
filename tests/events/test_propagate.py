"""Propagation of webhook consent events: both emulators, the real clients, the real inbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge import audit
from bridge.config import MinimisationSettings
from bridge.events.inbox import InboxWorker
from bridge.events.propagate import Propagation
from bridge.policies.minimisation import Minimisation
from bridge.runtime.wiring import connect
from bridge.services.reconcile import Reconciler
from bridge.services.watch import Watch
from bridge.store import inbox
from bridge.store import sync as sync_rows
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PSEUDONYM_KEY, PURPOSES, Crms, every_account
from tests.events.test_erasure_triggers import KEYRING, add_event

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def reconciler(crms: Crms, store: Store) -> Reconciler:
    key = PSEUDONYM_KEY.encode()
    return Reconciler(
        store,
        connect(crms.settings),
        key,
        PURPOSES,
        Minimisation(MinimisationSettings().allowed),
        watch=Watch(store, key),
    )


def drain(store: Store, sync: Reconciler) -> None:
    InboxWorker(store, KEYRING, {"consent": Propagation(sync)}).drain()


@every_account
def test_a_hubspot_opt_out_event_reaches_salesforce_and_its_echo_is_not_bounced(
    crms: Crms, store: Store
) -> None:
    person = Person("ada@example.com", hubspot=Held(opted_out_at=T0))
    seed_hubspot(crms.hubspot, [person], PURPOSES)
    seed_salesforce(crms.salesforce, [person], PURPOSES)
    contact = crms.hubspot.get("/__emulator/state").json()["contacts"][0]["id"]
    sync = reconciler(crms, store)
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    change = {"objectId": contact, "propertyName": "hs_email_optout", "propertyValue": "true"}
    add_event(store, "hubspot", "contact.propertyChange", "contact", str(contact), change,
              kind="consent", occurred_at=now)  # fmt: skip

    drain(store, sync)

    salesforce = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()
    sf_contact = salesforce["records"][0]
    assert sf_contact["HasOptedOutOfEmail"] is True
    applied = [e for e in audit.events(store) if e["action"] == "sync.opt_out"]
    assert [(e["actor"], e["system"], e["outcome"]) for e in applied] == [
        ("propagate", "salesforce", "done")
    ]

    # Salesforce now tells the bridge about the bridge's own write: an echo, not a new act.
    crms.salesforce.delete("/__emulator/counters").raise_for_status()
    crms.hubspot.delete("/__emulator/counters").raise_for_status()
    echo_at = datetime.now(UTC).isoformat(timespec="microseconds")
    add_event(store, "salesforce", "Contact", "Contact", sf_contact["Id"],
              {"HasOptedOutOfEmail": "true"}, kind="consent", occurred_at=echo_at)  # fmt: skip
    drain(store, sync)
    assert [e["outcome"] for e in audit.events(store) if e["action"] == "sync.echo"] == ["ignored"]
    for emulator in (crms.salesforce, crms.hubspot):
        assert emulator.get("/__emulator/counters").json()["total"] == 0
    assert audit.verify(store).ok


@every_account
def test_a_salesforce_opt_out_event_unsubscribes_the_person_from_all_hubspot_email(
    crms: Crms, store: Store
) -> None:
    """On every tier: below Enterprise through the single-address endpoint, chosen from the
    token's scopes (no batch call tried and refused)."""
    person = Person("grace@example.com", hubspot=Held(), salesforce=Held(opted_out_at=T0))
    seed_hubspot(crms.hubspot, [person], PURPOSES)
    seed_salesforce(crms.salesforce, [person], PURPOSES)
    [contact] = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()[
        "records"
    ]
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    add_event(store, "salesforce", "Contact", "Contact", contact["Id"],
              {"HasOptedOutOfEmail": "true"}, kind="consent", occurred_at=now)  # fmt: skip

    drain(store, reconciler(crms, store))

    state = crms.hubspot.get("/__emulator/state").json()
    wide = [s for s in state["subscriptions"] if s["subscriptionId"] is None]
    assert [(s["email"], s["status"]) for s in wide] == [(person.email, "UNSUBSCRIBED")]
    applied = [e for e in audit.events(store) if e["action"] == "sync.opt_out"]
    assert [(e["actor"], e["system"], e["outcome"]) for e in applied] == [
        ("propagate", "hubspot", "done")
    ]
    calls = crms.hubspot.get("/__emulator/counters").json()["calls"]
    batch = [key for key in calls if "/communication-preferences/v4/statuses/batch/" in key]
    assert bool(batch) is crms.accounts.batch_consent, calls


def test_a_salesforce_do_not_call_event_reaches_every_record_of_the_person(
    crms: Crms, store: Store
) -> None:
    """In an org without the privacy objects, too: a rep ticks Do Not Call on a Contact."""
    crms.salesforce.put("/__emulator/org", json={"org": "basic"}).raise_for_status()
    person = Person("ada@example.com", salesforce=Held(do_not_call_at=T0))
    seed_hubspot(crms.hubspot, [person], PURPOSES)
    seed_salesforce(crms.salesforce, [person], PURPOSES)
    lead = crms.seed_salesforce("Lead", LastName="L", Company="C", Email="Ada@Example.com")
    [contact] = crms.salesforce.get("/__emulator/records", params={"type": "Contact"}).json()[
        "records"
    ]
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    add_event(store, "salesforce", "Contact", "Contact", contact["Id"], {"DoNotCall": "true"},
              kind="consent", occurred_at=now)  # fmt: skip

    drain(store, reconciler(crms, store))

    [held] = crms.salesforce.get("/__emulator/records", params={"type": "Lead"}).json()["records"]
    assert held["Id"] == lead and held["DoNotCall"] is True
    applied = [e for e in audit.events(store) if e["action"] == "sync.do_not_call"]
    assert [(e["actor"], e["record_id"], e["outcome"]) for e in applied] == [
        ("propagate", lead, "done")
    ]


def test_a_batch_of_events_for_several_people_shares_its_lookups_and_finishes_every_event(
    crms: Crms, store: Store
) -> None:
    """Two events for one contact, one per other person, an echo and a contact gone, in one
    claim: each system is asked about the records and the people once, not per event."""
    ada = Person("ada@example.com", hubspot=Held(opted_out_at=T0))
    grace = Person("grace@example.com", hubspot=Held(opted_out_at=T0))
    bob = Person("bob@example.com", salesforce=Held(opted_out_at=T0))
    carol = Person("carol@example.com")
    seed_hubspot(crms.hubspot, [ada, grace, bob, carol], PURPOSES)
    seed_salesforce(crms.salesforce, [ada, grace, bob, carol], PURPOSES)
    contacts = {c["properties"]["email"]: c["id"] for c in hubspot_contacts(crms)}
    sf_ids = {r["Email"]: r["Id"] for r in salesforce_contacts(crms)}
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    with store.transaction() as conn:  # the bridge wrote Carol's opt-out a moment ago
        sync_rows.record_writes(conn, [ledger_row(sf_ids[carol.email], now)])
    events = [
        ("hubspot", "contact", contacts[ada.email], "hs_email_optout"),
        ("hubspot", "contact", contacts[ada.email], "hs_email_optout_1"),
        ("hubspot", "contact", contacts[grace.email], "hs_email_optout"),
        ("salesforce", "Contact", sf_ids[bob.email], "HasOptedOutOfEmail"),
        ("salesforce", "Contact", sf_ids[carol.email], "HasOptedOutOfEmail"),  # its echo
        ("hubspot", "contact", "987654321", "hs_email_optout"),  # a contact since deleted
    ]
    for source, object_type, object_id, name in events:
        add_event(store, source, "propertyChange", object_type, str(object_id),
                  {"propertyName": name}, kind="consent", occurred_at=now)  # fmt: skip
    for emulator in (crms.hubspot, crms.salesforce):
        emulator.delete("/__emulator/counters").raise_for_status()

    drain(store, reconciler(crms, store))

    assert {r["status"] for r in inbox.all_rows(store)} == {"done"}
    opted_out = {r["Email"] for r in salesforce_contacts(crms) if r["HasOptedOutOfEmail"]}
    assert opted_out == {ada.email, grace.email, bob.email}
    wide = [s for s in crms.hubspot.get("/__emulator/state").json()["subscriptions"]
            if s["subscriptionId"] is None and s["status"] == "UNSUBSCRIBED"]  # fmt: skip
    assert {s["email"] for s in wide} == {ada.email, grace.email, bob.email}
    assert [e["outcome"] for e in audit.events(store) if e["action"] == "sync.echo"] == ["ignored"]
    hubspot_calls = crms.hubspot.get("/__emulator/counters").json()["calls"]
    # One batch read for the three contacts' addresses, one for the people's contacts.
    assert hubspot_calls["POST /crm/v3/objects/contacts/batch/read"] == 2, hubspot_calls
    salesforce_calls = crms.salesforce.get("/__emulator/counters").json()
    queries = {k: n for k, n in salesforce_calls["calls"].items() if "query" in k}
    # Bob's record's addresses (his Contact, then the people and contact points of its
    # Individual: 4 queries) and one lookup of all four people (3); per event, each of the
    # five live events would have made a lookup of its own.
    assert sum(queries.values()) <= 7, salesforce_calls
    assert audit.verify(store).ok


def hubspot_contacts(crms: Crms) -> list[dict[str, Any]]:
    return list(crms.hubspot.get("/__emulator/state").json()["contacts"])


def salesforce_contacts(crms: Crms) -> list[dict[str, Any]]:
    reply = crms.salesforce.get("/__emulator/records", params={"type": "Contact"})
    return list(reply.json()["records"])


def ledger_row(record_id: str, now: str) -> dict[str, Any]:
    return {
        "system": "salesforce", "object_type": "contact", "record_id": record_id,
        "field": "opt_out", "value": "withdrawn", "act_system": "hubspot", "act_record": "1",
        "act_at": None, "outcome": "done", "written_at": now,
    }  # fmt: skip


def test_a_person_the_plan_cannot_take_fails_their_event_alone(
    crms: Crms, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = [Person(f"{name}@example.com", hubspot=Held(opted_out_at=T0))
              for name in ("ada", "grace", "bob")]  # fmt: skip
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)
    sync_many = Reconciler.sync_many

    def refuse_grace(self: Reconciler, groups: Any, *, actor: str) -> Any:
        if any("grace@example.com" in group for group in groups):
            raise ValueError("a record this plan cannot take")
        return sync_many(self, groups, actor=actor)

    monkeypatch.setattr(Reconciler, "sync_many", refuse_grace)
    contacts = {c["properties"]["email"]: c["id"] for c in hubspot_contacts(crms)}
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    for person in people:
        add_event(store, "hubspot", "propertyChange", "contact", str(contacts[person.email]),
                  {}, kind="consent", occurred_at=now)  # fmt: skip

    InboxWorker(store, KEYRING, {"consent": Propagation(reconciler(crms, store))}).run_once()

    rows = inbox.all_rows(store)
    assert [(r["status"], r["last_error"]) for r in rows] == [
        ("done", None), ("pending", "ValueError"), ("done", None)
    ]  # fmt: skip
    opted_out = {r["Email"] for r in salesforce_contacts(crms) if r["HasOptedOutOfEmail"]}
    assert opted_out == {"ada@example.com", "bob@example.com"}
