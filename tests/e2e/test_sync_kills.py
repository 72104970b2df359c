"""`bridge sync` SIGKILLed mid-run, then run again: nothing skipped, nothing applied twice, and
every change a killed run wrote is audited (the batch cut short is recovered by the next run)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge import audit
from bridge.store import sync as sync_rows
from bridge.store.db import Store
from bridge.store.tables import sync_intents, sync_staged
from bridge_sandbox.emulators.people import (
    HUBSPOT_SUBSCRIPTION_KEY,
    SALESFORCE_PURPOSE_KEY,
    Held,
    Person,
    purpose_names,
    seed_hubspot,
    seed_salesforce,
)
from tests.conftest import AUDIT_KEY, PURPOSES, BridgeCli, Crms, free_port

PEOPLE = [
    Person(
        f"person{n:03d}@example.com", hubspot=Held(opted_out_at=datetime(2025, 5, 1, tzinfo=UTC))
    )
    for n in range(500)
]
Change = tuple[str, str, str, str | None]  # system, record id, change, purpose
SALESFORCE_OPT_OUT = ("salesforce", "opt_out")
DONE_ACTIONS = {"sync.opt_out", "sync.do_not_call", "sync.consent", "sync.lawful_basis"}


def records(crms: Crms, sobject: str) -> list[dict[str, Any]]:
    reply = crms.salesforce.get("/__emulator/records", params={"type": sobject})
    reply.raise_for_status()
    return list(reply.json()["records"])


def opted_out(crms: Crms) -> int:
    """Salesforce Contacts holding the email opt-out: the seed gave none, the bridge writes
    them."""
    return sum(1 for r in records(crms, "Contact") if r["HasOptedOutOfEmail"])


def held_by_the_emulators(crms: Crms) -> set[Change]:
    """Every opt-out and consent withdrawal the emulators hold, by record: Salesforce flags
    and consent rows (of the Individual each Contact points at), HubSpot subscription
    statuses."""
    contacts = records(crms, "Contact")
    held: set[Change] = {
        ("salesforce", c["Id"], "opt_out", None) for c in contacts if c["HasOptedOutOfEmail"]
    }
    purposes = {name: p for p, name in purpose_names(PURPOSES, SALESFORCE_PURPOSE_KEY).items()}
    purpose_of = {r["Id"]: purposes[r["Name"]] for r in records(crms, "DataUsePurpose")}
    by_party: dict[str, list[str]] = {}
    for contact in contacts:
        if contact["IndividualId"]:
            by_party.setdefault(contact["IndividualId"], []).append(contact["Id"])
    held |= {
        ("salesforce", contact, "consent", purpose_of[row["DataUsePurposeId"]])
        for row in records(crms, "ContactPointTypeConsent")
        if row["PrivacyConsentStatus"] == "OptOut"
        for contact in by_party.get(row["PartyId"], [])
    }
    subscriptions = purpose_names(PURPOSES, HUBSPOT_SUBSCRIPTION_KEY)
    for contact in crms.hubspot.get("/__emulator/state").json()["contacts"]:
        properties = contact["properties"]
        held |= {
            ("hubspot", contact["id"], "consent", purpose)
            for purpose, subscription in subscriptions.items()
            if properties.get(f"hs_email_optout_{subscription}") == "true"
        }
    return held


def audited_as_done(store: Store) -> Counter[Change]:
    """The changes the audit log says were made: by the write's own event, or by the next
    run's recovery of a batch cut short (``sync.recovered``, which names the change)."""
    done: Counter[Change] = Counter()
    for e in audit.events(store):
        if e["outcome"] != "done":
            continue
        if e["action"] in DONE_ACTIONS:
            change = e["action"].removeprefix("sync.")
        elif e["action"] == "sync.recovered":
            change = e["details"]["change"]
        else:
            continue
        done[(e["system"], e["record_id"], change, e["details"].get("purpose"))] += 1
    return done


def opt_outs_audited(store: Store) -> int:
    """Salesforce opt-outs the audit log says were made."""
    done = audited_as_done(store).items()
    return sum(n for (system, _, change, _), n in done if (system, change) == SALESFORCE_OPT_OUT)


def intents(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sync_intents)).scalar_one())


def staged(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sync_staged)).scalar_one())


def seeded_and_slowed(crms: Crms) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)
    assert held_by_the_emulators(crms) == set()  # so whatever they hold later, the bridge wrote
    # Slow Salesforce writes down, so that the kills land while a batch is being written.
    crms.salesforce.put(
        "/__emulator/faults", json={"latency_ms": 150, "endpoints": ["PATCH *", "POST *"]}
    ).raise_for_status()


def killed_mid_batch(cli: BridgeCli, crms: Crms, store: Store) -> bool:
    """Run ``bridge sync`` and SIGKILL it once Salesforce holds opt-outs of this run's that
    the audit log does not: between a batch's vendor call and the audit of its outcomes.
    False if the run ended first."""
    before = opted_out(crms)
    process = cli.start("sync", "--json")
    deadline = time.monotonic() + 60
    killed = False
    while not killed and process.poll() is None and time.monotonic() < deadline:
        now = opted_out(crms)
        if now > before and now > opt_outs_audited(store):
            process.send_signal(signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    process.wait(timeout=10)
    return killed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sync_survives_kills_mid_apply_and_audits_each_change_once(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    seeded_and_slowed(crms)
    store = Store(configured_cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    kills = 0
    for _ in range(2):
        kills += killed_mid_batch(configured_cli, crms, store)
        assert intents(store) > 0  # the batch cut short left its intents
        assert staged(store) > 0  # and the run its records, sealed under a key now gone
    crms.salesforce.delete("/__emulator/faults").raise_for_status()
    unaudited = opted_out(crms) - opt_outs_audited(store)
    final = configured_cli("sync", "--json")
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads(final.stdout)
    assert report["cursors_moved"] is True
    # The kills landed mid-batch: some changes were written and not audited, the rest made now.
    assert kills == 2 and unaudited > 0 and report["counts"]["done"] > 0
    assert report["counts"]["recovered"] > 0
    assert intents(store) == 0 and staged(store) == 0

    contacts = records(crms, "Contact")
    assert len(contacts) == len(PEOPLE)
    assert all(r["HasOptedOutOfEmail"] for r in contacts)
    again = configured_cli("sync", "--full", "--json")
    assert json.loads(again.stdout)["counts"]["planned"] == 0

    assert audit.verify(store).ok
    done = audited_as_done(store)
    assert [key for key, n in done.items() if n > 1] == []  # no change was applied twice
    # Every change the emulators hold has its audit event, and every one audited is held.
    assert set(done) == held_by_the_emulators(crms)
    # Those the kills left unaudited were audited by the next run's recovery, not re-applied.
    recovered = Counter(
        e["details"]["change"]
        for e in audit.events(store)
        if e["action"] == "sync.recovered" and e["outcome"] == "done"
    )
    assert recovered["opt_out"] >= unaudited
    store.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_daemon_recovers_a_batch_cut_short_as_it_starts(
    configured_cli: BridgeCli, crms: Crms, stopped_at_end: list[subprocess.Popen[str]]
) -> None:
    """Its first sync, at once on leading, recovers before it plans."""
    seeded_and_slowed(crms)
    store = Store(configured_cli.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    assert killed_mid_batch(configured_cli, crms, store) and intents(store) > 0
    crms.salesforce.delete("/__emulator/faults").raise_for_status()
    unaudited = opted_out(crms) - opt_outs_audited(store)

    daemon = configured_cli.start("run", "--port", str(free_port()))
    stopped_at_end.append(daemon)
    deadline = time.monotonic() + 60
    while not sync_rows.runs(store, 1) and time.monotonic() < deadline:
        assert daemon.poll() is None
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0

    [run] = sync_rows.runs(store, 1)
    assert (run["trigger"], run["outcome"]) == ("daemon", "ok")
    assert intents(store) == 0 and unaudited > 0
    done = audited_as_done(store)
    assert [key for key, n in done.items() if n > 1] == []
    assert set(done) == held_by_the_emulators(crms)
    assert audit.verify(store).ok
    store.dispose()
