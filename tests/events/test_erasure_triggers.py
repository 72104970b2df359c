"""Legal holds, vendor-triggered erasure, and erased people who re-appear: both emulators,
the real clients, the real inbox worker."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bridge import audit
from bridge.adapters.base import ErasureTarget
from bridge.adapters.hubspot import HUBSPOT
from bridge.config import LegalHold
from bridge.events.inbox import InboxWorker
from bridge.events.triggers import ErasureTriggers
from bridge.identity import subject_ref
from bridge.metrics import REAPPEARANCES
from bridge.sealing import Keyring
from bridge.services.erasure import COMPLETED, Erasure
from bridge.services.watch import Watch
from bridge.store import erasure as rows
from bridge.store import inbox
from bridge.store.db import Store
from bridge.store.records import all_reappearances
from tests.conftest import PSEUDONYM_KEY, Crms, extreme_accounts
from tests.services.test_erasure import live_salesforce, service

BEA = "bea.held@example.com"
WON = LegalHold(
    name="closed_won",
    related_object="Opportunity",
    link_field="ContactId",
    where="StageName = 'Closed Won'",
    action="anonymize",
    reason="Art. 17(3)(b): invoices of a won deal are kept 10 years (HGB 257)",
)
QUOTE = LegalHold(
    name="accepted_quote",
    related_object="Task",
    link_field="WhoId",
    where="Subject = 'Accepted quote'",
    action="refuse",
    reason="Art. 17(3)(e): an accepted quote under dispute",
)
EVENT_KEYS = count()


def test_legal_holds_anonymise_or_refuse_and_are_audited(crms: Crms, store: Store) -> None:
    account = crms.seed_salesforce("Account", Name="Acme")
    held = crms.seed_salesforce(
        "Contact", FirstName="Bea", LastName="Held", Email=BEA, AccountId=account,
        LeadSource="Web", Phone="+49 30 1234567",
    )  # fmt: skip
    free = crms.seed_salesforce("Contact", FirstName="Bea", LastName="Held", Email=BEA.upper())
    lead = crms.seed_salesforce("Lead", LastName="Held", Company="Acme", Email=BEA)
    crms.seed_salesforce(
        "Opportunity", Name="Deal", StageName="Closed Won", CloseDate="2026-01-31",
        ContactId=held, AccountId=account,
    )  # fmt: skip
    crms.seed_salesforce("Opportunity", Name="Lost", StageName="Closed Lost",
                         CloseDate="2026-01-31", ContactId=free)  # fmt: skip
    crms.seed_salesforce("Task", Subject="Accepted quote", WhoId=lead)
    crms.seed_hubspot(email=BEA, firstname="Bea", lastname="Held")
    erasure = service(crms, store, holds=[WON, QUOTE])

    planned = {t.id: hold for t, hold in erasure.dry_run([BEA])}
    assert (planned[held], planned[lead], planned[free]) == (WON, QUOTE, None)

    request_id = erasure.submit([BEA], "delete", None, "cli")
    view = erasure.run(request_id)
    assert view["status"] == COMPLETED, view
    contacts = {row["Id"]: row for row in live_salesforce(crms, "Contact")}
    assert set(contacts) == {held}  # the free one is deleted, the held one kept...
    assert (contacts[held]["LastName"], contacts[held]["LeadSource"]) == ("Anonymised", "Web")
    assert BEA not in json.dumps(contacts[held]).lower()  # ...without the person in it
    assert [row["Id"] for row in live_salesforce(crms, "Lead")] == [lead]  # refused: untouched

    receipt = erasure.receipt(request_id)
    assert receipt["verification"]["ok"] is True
    assert {(h["record_id"], h["hold"], h["outcome"]) for h in receipt["legal_holds"]} == {
        (held, "closed_won", "anonymized"),
        (lead, "accepted_quote", "refused"),
    }
    events = {e["record_id"]: e for e in audit.events(store) if e["record_id"] in (held, lead)}
    assert events[lead]["action"] == "erasure.refused"
    assert "Art. 17(3)(e)" in events[lead]["reason"]
    assert "closed_won" in events[held]["reason"]
    assert audit.verify(store).ok

    # The refused lead holds the person on purpose: a later scan does not call it a return.
    assert Watch(store, PSEUDONYM_KEY.encode()).scan(erasure.adapters) == []


def add_event(store: Store, source: str, event_type: str, object_type: str, object_id: str,
              payload: dict[str, Any], kind: str = "deletion",
              occurred_at: str = "2026-11-23T12:00:00.000000+00:00") -> None:  # fmt: skip
    row = {
        "source": source,
        "event_key": f"event-{next(EVENT_KEYS)}",
        "event_type": event_type,
        "kind": kind,
        "object_type": object_type,
        "object_id": object_id,
        "occurred_at": occurred_at,
        "received_at": occurred_at,
        "payload": KEYRING.seal(json.dumps(payload).encode()),
    }
    with store.transaction() as conn:
        inbox.add(conn, [row])


KEYRING = Keyring([Fernet.generate_key()])


def drain(store: Store, erasure: Erasure) -> None:
    triggers = ErasureTriggers(erasure, erasure.adapters)
    InboxWorker(store, KEYRING, {"deletion": triggers}).drain()


@extreme_accounts
def test_a_hubspot_privacy_deletion_erases_the_person_in_salesforce_once(
    crms: Crms, store: Store
) -> None:
    contact = crms.seed_hubspot(email="cy@example.com", firstname="Cy")
    sf_contact = crms.seed_salesforce("Contact", LastName="Cy", Email="CY@example.com")
    crms.seed_salesforce("Lead", LastName="Cy", Company="Acme", Email="cy@example.com")
    erasure = service(crms, store)
    Watch(store, PSEUDONYM_KEY.encode()).scan(erasure.adapters)  # the bridge has seen Cy
    hubspot = erasure.adapters[HUBSPOT]
    hubspot.erase([ErasureTarget(HUBSPOT, "contact", contact)], "delete")  # in HubSpot

    classified = [("contact.privacyDeletion", "deletion"), ("contact.deletion", "other")]
    for event_type, kind in [*classified, classified[0]]:  # as the receiver stores them
        add_event(store, "hubspot", event_type, "contact", contact, {"objectId": contact}, kind)
    add_event(store, "hubspot", "contact.privacyDeletion", "contact", "999", {"objectId": 999})
    drain(store, erasure)

    assert live_salesforce(crms, "Contact") == []
    assert live_salesforce(crms, "Lead") == []
    [request] = rows.requests(store)  # two events, delivered three times: one request
    assert (request["status"], request["trigger"]) == (COMPLETED, "hubspot.privacyDeletion")
    ref = subject_ref(PSEUDONYM_KEY.encode(), "cy@example.com")
    assert rows.suppressed(store, [ref]) == {ref}
    actions = [(e["action"], e["record_id"]) for e in audit.events(store)]
    assert ("erasure.trigger_unresolved", "999") in actions  # never seen: said, not skipped
    requested = next(e for e in audit.events(store) if e["action"] == "erasure.requested")
    assert requested["details"]["origin"] == (
        f"hubspot contact {contact} privacyDeletion 2026-11-23T12:00:00.000000+00:00"
    )
    assert ("erasure.step", sf_contact) in actions


def test_salesforce_should_forget_erases_the_person_everywhere(crms: Crms, store: Store) -> None:
    individual = crms.seed_salesforce("Individual", LastName="Di", ShouldForget=True)
    crms.seed_salesforce("Contact", LastName="Di", Email="di@example.com", IndividualId=individual)
    crms.seed_salesforce("ContactPointEmail", EmailAddress="di.home@example.org",
                         ParentId=individual)  # fmt: skip
    crms.seed_hubspot(email="di.home@example.org", firstname="Di")
    erasure = service(crms, store)
    fields = {"Id": individual, "ShouldForget": "true"}
    add_event(store, "salesforce", "ShouldForget", "Individual", individual, {"fields": fields})
    drain(store, erasure)

    assert crms.hubspot.get("/__emulator/state").json()["contacts"] == []
    assert live_salesforce(crms, "Contact") == live_salesforce(crms, "Individual") == []
    [request] = rows.requests(store)
    assert (request["status"], request["trigger"]) == (COMPLETED, "salesforce.ShouldForget")


@pytest.mark.parametrize("reerase", [False, True])
def test_an_erased_person_who_reappears_is_flagged_and_erased_again_if_configured(
    crms: Crms, store: Store, reerase: bool
) -> None:
    crms.seed_hubspot(email="ed@example.com", firstname="Ed")
    erasure = service(crms, store)
    assert erasure.run(erasure.submit(["ed@example.com"], "delete", None, "cli"))["status"] == (
        COMPLETED
    )
    watch = Watch(store, PSEUDONYM_KEY.encode(), erasure if reerase else None)
    assert watch.scan(erasure.adapters) == []
    before = REAPPEARANCES.labels("salesforce")._value.get()

    back = crms.seed_salesforce("Lead", LastName="Ed", Company="Acme", Email="Ed@Example.com")
    crms.seed_salesforce("Lead", LastName="Someone", Company="Acme", Email="else@example.com")
    assert len(watch.scan(erasure.adapters)) == 1
    assert watch.scan(erasure.adapters) == []  # flagged once, however often it is seen

    [found] = all_reappearances(store)
    assert (found["system"], found["record_id"]) == ("salesforce", back)
    assert REAPPEARANCES.labels("salesforce")._value.get() == before + 1
    assert any(e["action"] == "erasure.reappeared" for e in audit.events(store))
    leads = {row["Id"] for row in live_salesforce(crms, "Lead")}
    assert (back in leads) is not reerase
    assert (found["request_id"] is not None) is reerase
