"""Propagation of webhook consent events: both emulators, the real clients, the real inbox."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge import audit
from bridge.config import MinimisationSettings
from bridge.events.inbox import InboxWorker
from bridge.events.propagate import Propagation
from bridge.policies.minimisation import Minimisation
from bridge.runtime.wiring import connect
from bridge.services.reconcile import Reconciler
from bridge.services.watch import Watch
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
