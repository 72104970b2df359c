"""A batch cut short between its vendor call and its audit is audited by the next sync
(``sync.recovered``), from what the vendor holds; a batch still being written is left to its
writer, and one that fails as a whole is audited as failed and leaves nothing behind. Both
emulators, the real clients, both databases."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge import audit
from bridge.adapters.base import ConsentWrite, CrmAdapter, Transient, WriteOutcome
from bridge.config import MinimisationSettings
from bridge.model import System
from bridge.policies.minimisation import Minimisation
from bridge.runtime.wiring import connect
from bridge.services.reconcile import Reconciler
from bridge.services.watch import Watch
from bridge.store import sync as sync_rows
from bridge.store.db import Store
from bridge.store.tables import sync_intents
from bridge_sandbox.emulators.people import Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PSEUDONYM_KEY, PURPOSES, Crms

SALESFORCE = System("salesforce")
PEOPLE = [
    Person(f"p{n}@example.com", hubspot=Held(opted_out_at=datetime(2025, 5, 1, tzinfo=UTC)))
    for n in range(4)
]


class CutShort(BaseException):
    """The process dying between a batch's vendor call and the audit of its outcomes."""


class Writes:
    """A CRM adapter whose consent batches go first through ``around`` (given the real
    write), everything else straight to the adapter."""

    def __init__(self, adapter: CrmAdapter, around: Any) -> None:
        self._adapter = adapter
        self._around = around

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def write_consents(self, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        result: list[WriteOutcome] = self._around(self._adapter.write_consents, writes)
        return result


def reconciler(crms: Crms, store: Store, around: Any = None) -> Reconciler:
    adapters: dict[System, Any] = dict(connect(crms.settings))
    if around is not None:
        adapters[SALESFORCE] = Writes(adapters[SALESFORCE], around)
    key = PSEUDONYM_KEY.encode()
    allowed = Minimisation(MinimisationSettings().allowed)
    return Reconciler(store, adapters, key, PURPOSES, allowed, watch=Watch(store, key))


def intents(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(sync_intents)).scalar_one())


def salesforce_events(store: Store) -> list[dict[str, Any]]:
    return [e for e in audit.events(store) if e["system"] == "salesforce"]


def seeded(crms: Crms) -> None:
    seed_hubspot(crms.hubspot, PEOPLE, PURPOSES)
    seed_salesforce(crms.salesforce, PEOPLE, PURPOSES)


def test_a_batch_cut_short_is_audited_by_the_next_sync_from_what_the_vendor_holds(
    crms: Crms, store: Store
) -> None:
    seeded(crms)

    def two_then_die(write: Any, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        write(writes[:2])  # the first two land (opt-outs come first), then the process dies
        raise CutShort

    with pytest.raises(CutShort):
        reconciler(crms, store, two_then_die).sync()
    planned = intents(store)
    assert planned > 2 and salesforce_events(store) == []  # written, and not audited

    report = reconciler(crms, store).sync()

    assert intents(store) == 0 and report.cursors_moved
    assert report.counts()["recovered"] == planned
    recovered = [e for e in salesforce_events(store) if e["action"] == "sync.recovered"]
    assert Counter(e["outcome"] for e in recovered) == {"done": 2, "not_applied": planned - 2}
    assert {e["details"]["change"] for e in recovered if e["outcome"] == "done"} == {"opt_out"}
    assert all(e["actor"] == "sync" and e["subject_ref"] for e in recovered)
    assert "@" not in str(recovered)
    # The rest was applied now, each change once; what the recovery found done was not.
    applied = Counter(
        (e["record_id"], e["details"].get("change", e["action"].removeprefix("sync.")),
         e["details"].get("purpose"))
        for e in salesforce_events(store) if e["outcome"] == "done"
    )  # fmt: skip
    assert len(applied) == planned and set(applied.values()) == {1}
    # Known as the bridge's own writes (the ledger), so the next sync has nothing to do.
    done = [e for e in recovered if e["outcome"] == "done"]
    ledger = sync_rows.ledger(store, [("salesforce", "contact", e["record_id"]) for e in done])
    assert {(k[2], k[3], row["outcome"]) for k, row in ledger.items() if k[3] == "opt_out"} == {
        (e["record_id"], "opt_out", "done") for e in done
    }
    assert reconciler(crms, store).sync(full=True).counts()["planned"] == 0
    assert audit.verify(store).ok


def test_a_batch_still_being_written_is_left_to_its_writer(crms: Crms, store: Store) -> None:
    """Another thread, instance or process recovering meanwhile finds its lock held."""
    seeded(crms)
    writing, go_on = threading.Event(), threading.Event()

    def slow(write: Any, writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        writing.set()
        assert go_on.wait(30)
        result: list[WriteOutcome] = write(writes)
        return result

    writer = threading.Thread(target=reconciler(crms, store, slow).sync)
    writer.start()
    try:
        assert writing.wait(30)
        other = Store(store.url, store.audit.key)
        try:
            assert reconciler(crms, other).recover() == 0
        finally:
            other.dispose()
        assert intents(store) > 0
    finally:
        go_on.set()
        writer.join(30)
    assert intents(store) == 0
    events = salesforce_events(store)
    assert events and {e["outcome"] for e in events} == {"done"}
    assert not [e for e in events if e["action"] == "sync.recovered"]


def test_a_batch_that_fails_as_a_whole_is_audited_as_failed_and_leaves_no_intent(
    crms: Crms, store: Store
) -> None:
    seeded(crms)

    def refused(_write: Any, _writes: Sequence[ConsentWrite]) -> list[WriteOutcome]:
        raise Transient(SALESFORCE, "503 after the adapter's retries")

    report = reconciler(crms, store, refused).sync()

    assert report.failed and not report.cursors_moved
    assert {e["outcome"] for e in salesforce_events(store)} == {"failed"}
    assert intents(store) == 0
    assert reconciler(crms, store).recover() == 0
