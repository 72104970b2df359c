"""The inbox worker: in order, once, retried with backoff, dead-lettered, never dropped unseen."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from bridge import audit
from bridge.adapters.base import Permanent, Transient
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.events.inbox import KEY_RETRY, InboxEvent, InboxWorker
from bridge.sealing import Keyring
from bridge.store import inbox, tables
from bridge.store.db import Store

KEYRING_KEYS = [Fernet.generate_key()]
KEYRING = Keyring(KEYRING_KEYS)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def add_events(store: Store, kinds: list[str], first: int = 0) -> None:
    rows = [
        {
            "source": "hubspot",
            "event_key": f"e{n}",
            "event_type": "contact.propertyChange",
            "kind": kind,
            "object_type": "contact",
            "object_id": str(n),
            "received_at": f"2026-11-23T11:00:{n:02d}.000000+00:00",
            "payload": KEYRING.seal(json.dumps({"n": n}).encode()),
        }
        for n, kind in enumerate(kinds, first)
    ]
    with store.transaction() as conn:
        assert all(inbox.add(conn, rows))


def statuses(store: Store) -> list[str]:
    return [row["status"] for row in inbox.all_rows(store)]


def test_events_are_handled_in_order_of_receipt_and_payloads_dropped(store: Store) -> None:
    add_events(store, ["consent", "other", "deletion", "consent"])
    seen: list[int] = []

    def record(event: InboxEvent) -> None:
        seen.append(event.payload["n"])

    worker = InboxWorker(store, KEYRING, {"consent": record, "deletion": record})
    assert worker.drain().processed == 4
    assert seen == [0, 2, 3]
    assert statuses(store) == ["done"] * 4
    with store.engine.connect() as conn:
        assert (
            conn.execute(inbox.inbox.select().where(inbox.inbox.c.payload.isnot(None))).all() == []
        )


def test_a_kind_without_a_handler_waits_rather_than_being_dropped(store: Store) -> None:
    add_events(store, ["deletion", "other"])
    worker = InboxWorker(store, KEYRING, {})
    assert worker.drain().processed == 1
    assert statuses(store) == ["pending", "done"]


def test_transient_failures_back_off_then_succeed(store: Store) -> None:
    add_events(store, ["consent"])
    clock, attempts = Clock(), []

    def flaky(event: InboxEvent) -> None:
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise Transient(SALESFORCE, "503 Service Unavailable")

    worker = InboxWorker(store, KEYRING, {"consent": flaky}, backoff_seconds=10, clock=clock)
    assert worker.run_once().retried == 1
    assert worker.run_once().retried == 0  # not due yet: backing off
    clock.advance(10)
    assert worker.run_once().retried == 1
    clock.advance(20)
    assert worker.run_once().processed == 1
    assert len(attempts) == 3
    assert inbox.all_rows(store)[0]["attempts"] == 3


def test_permanent_failures_and_exhausted_retries_are_dead_lettered_and_audited(
    store: Store,
) -> None:
    add_events(store, ["consent", "deletion"])
    clock = Clock()

    def refuse(event: InboxEvent) -> None:
        raise Permanent(HUBSPOT, "403 missing scope crm.objects.contacts.write")

    def always_down(event: InboxEvent) -> None:
        raise ConnectionError("ann@example.com unreachable")  # text never stored

    worker = InboxWorker(
        store, KEYRING, {"consent": refuse, "deletion": always_down},
        max_attempts=3, backoff_seconds=1, clock=clock,
    )  # fmt: skip
    for _ in range(5):
        worker.run_once()
        clock.advance(60)
    rows = inbox.all_rows(store)
    assert [r["status"] for r in rows] == ["dead", "dead"]
    assert rows[0]["attempts"] == 1 and "missing scope" in rows[0]["last_error"]
    assert rows[1]["attempts"] == 3 and rows[1]["last_error"] == "ConnectionError"
    events = [e for e in audit.events(store) if e["action"] == "inbox.dead_letter"]
    assert len(events) == 2
    assert audit.verify(store).ok


def test_a_claim_left_by_a_dead_worker_is_taken_over_after_its_lease(store: Store) -> None:
    add_events(store, ["consent"])
    clock = Clock()
    claimed = inbox.claim(
        store,
        {"consent"},
        clock.now.isoformat(),
        (clock.now + timedelta(seconds=60)).isoformat(),
        10,
    )
    assert len(claimed) == 1  # ...and that worker died here
    worker = InboxWorker(store, KEYRING, {"consent": lambda e: None}, clock=clock)
    assert worker.run_once().processed == 0
    clock.advance(61)
    assert worker.run_once().processed == 1


def test_concurrent_workers_never_handle_an_event_twice(store: Store) -> None:
    add_events(store, ["consent"] * 60)
    handled: list[int] = []
    lock = threading.Lock()

    def handle(event: InboxEvent) -> None:
        with lock:
            handled.append(event.id)

    workers = [InboxWorker(store, KEYRING, {"consent": handle}) for _ in range(3)]
    threads = [threading.Thread(target=w.drain, kwargs={"batch": 5}) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(handled) == sorted(set(handled))
    assert len(handled) == 60


def test_an_event_no_configured_key_opens_waits_for_its_key_and_is_never_dead_lettered(
    store: Store,
) -> None:
    add_events(store, ["consent", "deletion"])
    seen: list[InboxEvent] = []
    handlers = {"consent": seen.append, "deletion": seen.append}
    without_its_key, clock = Keyring([Fernet.generate_key()]), Clock()
    for _ in range(2):  # restarts without the key; one counted attempt would dead-letter it
        worker = InboxWorker(store, without_its_key, handlers, max_attempts=1, clock=clock)
        assert worker.drain().retried == 2
        assert worker.drain().retried == 0  # set aside: this worker leaves them for a while
        clock.advance(KEY_RETRY.total_seconds())
        assert worker.drain().retried == 2  # ...then looks again
    rows = inbox.all_rows(store)
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 2
    assert "no longer configured" in rows[0]["last_error"]
    assert not [e for e in audit.events(store) if e["action"] == "inbox.dead_letter"]

    old_key_second = Keyring([Fernet.generate_key(), *KEYRING_KEYS])
    assert InboxWorker(store, old_key_second, handlers).drain().processed == 2
    assert [event.payload["n"] for event in seen] == [0, 1]
    with store.engine.connect() as conn:  # every payload destroyed with its data key
        assert conn.execute(tables.data_keys.select()).all() == []


class FailsOnce:
    """A batched handler that fails the events named in ``failing`` the first time it sees
    them, and notes each batch it is given."""

    batch = 10

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.batches: list[list[int]] = []

    def handle_batch(self, events: Sequence[InboxEvent]) -> dict[int, Exception]:
        self.batches.append([event.payload["n"] for event in events])
        failed = {e.id: e.payload["n"] for e in events if e.payload["n"] in self.failing}
        self.failing -= set(failed.values())
        return {event_id: Transient(SALESFORCE, "503 Service Unavailable") for event_id in failed}


def test_one_failing_event_of_a_batch_is_retried_alone_while_the_others_finish(
    store: Store,
) -> None:
    add_events(store, ["consent", "consent", "deletion", "consent", "consent"])
    clock, singles = Clock(), []
    batched = FailsOnce({1})
    worker = InboxWorker(
        store, KEYRING, {"consent": batched, "deletion": lambda e: singles.append(e.payload["n"])},
        backoff_seconds=10, clock=clock,
    )  # fmt: skip

    first = worker.run_once(batch=1)

    assert batched.batches == [[0, 1, 3, 4]]  # every due consent event in one call
    assert singles == [2]  # a per-event handler's kind is still handled one by one
    assert (first.processed, first.retried, first.dead) == (4, 1, 0)
    assert statuses(store) == ["done", "pending", "done", "done", "done"]
    clock.advance(60)
    assert worker.run_once().processed == 1
    assert batched.batches == [[0, 1, 3, 4], [1]]  # the failed one again, and alone
    assert [r["attempts"] for r in inbox.all_rows(store)] == [1, 2, 1, 1, 1]
    assert statuses(store) == ["done"] * 5


def test_a_batch_that_raises_fails_each_of_its_events_alone(store: Store) -> None:
    add_events(store, ["consent", "consent"])

    class Down:
        batch = 10

        def handle_batch(self, events: Sequence[InboxEvent]) -> dict[int, Exception]:
            raise Permanent(HUBSPOT, "403 missing scope crm.objects.contacts.read")

    assert InboxWorker(store, KEYRING, {"consent": Down()}).run_once().dead == 2
    rows = inbox.all_rows(store)
    assert [(r["status"], r["attempts"]) for r in rows] == [("dead", 1)] * 2
    dead = [e for e in audit.events(store) if e["action"] == "inbox.dead_letter"]
    assert len(dead) == 2


def test_a_batched_kinds_claim_is_topped_up_while_its_events_keep_coming(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_events(store, ["consent", "consent"])
    claimed: list[int] = []
    claim = inbox.claim

    def claim_while_more_arrive(*args: Any, **kwargs: Any) -> list[inbox.InboxRow]:
        rows = claim(*args, **kwargs)
        claimed.append(len(rows))
        if len(claimed) == 1:  # two more arrive during the first quiet spell
            add_events(store, ["consent", "consent"], first=2)
        return rows

    monkeypatch.setattr(inbox, "claim", claim_while_more_arrive)
    batched = FailsOnce(set())
    worker = InboxWorker(store, KEYRING, {"consent": batched}, gather=(0.01, 60))

    assert worker.run_once().processed == 4
    assert batched.batches == [[0, 1, 2, 3]]  # one batch: the claim waited for the rest
    assert claimed[:3] == [2, 2, 0]  # topped up until a quiet spell brought none
