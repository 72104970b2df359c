"""Draining the webhook inbox, oldest receipt first.

Each event kind goes to its handler (``consent`` to propagation, ``deletion`` to erasure);
``other`` events are recorded and dropped, and a kind with no handler stays in the inbox. A
batched handler (``BatchHandler``) is given every claimed event of its kind at once, so that
they share vendor calls, and answers for each event alone: each is settled on its own.
Failures are retried with backoff, then dead-lettered (ARCHITECTURE.md, "A webhook event"),
except an event no configured key opens: that is the settings' fault, and the event waits,
its attempts not counted, for an instance with the key, a restart, or `bridge keys rotate`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from bridge import audit
from bridge.adapters.base import AdapterError, Permanent
from bridge.logs import get_logger
from bridge.model import AuditEvent
from bridge.sealing import KeyNotConfigured, Keyring
from bridge.store import inbox, leases
from bridge.store.db import Store

log = get_logger("bridge.inbox")
DROPPED_KINDS = frozenset({"other"})
KEY_RETRY = timedelta(minutes=5)  # how long a worker leaves an event no configured key opened
# A batched kind's claim is topped up while its events keep coming (a burst), so that they
# fill the vendors' batches: again after each GATHER_QUIET seconds that brought more, up to
# GATHER_MOST seconds in all. A lone event (at rest) waits one quiet spell only.
GATHER_QUIET = 0.3
GATHER_MOST = 15.0


@dataclass(frozen=True)
class InboxEvent:
    id: int
    source: str
    kind: str
    event_type: str
    object_type: str | None
    object_id: str | None
    occurred_at: str | None
    received_at: str
    payload: dict[str, Any] = field(repr=False)


Handler = Callable[[InboxEvent], None]


@runtime_checkable
class BatchHandler(Protocol):
    """A handler given many events of its kind at once, so that it can share vendor calls
    among them (propagation: one lookup per vendor batch, not per event)."""

    batch: int
    """How many due events of its kind one claim takes."""

    def handle_batch(self, events: Sequence[InboxEvent]) -> Mapping[int, Exception]:
        """Handle ``events``; return the exception of each event (by id) that failed: those
        alone are retried or dead-lettered, the others are finished. An exception raised
        fails every event of the batch with it."""
        ...


@dataclass
class DrainResult:
    processed: int = 0
    retried: int = 0
    dead: int = 0


class InboxWorker:
    """Claims due events under a lease, hands each to its handler, and settles the outcome."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        handlers: Mapping[str, Handler | BatchHandler],
        *,
        max_attempts: int = 8,
        lease_seconds: float = 300,
        backoff_seconds: float = 2.0,
        gather: tuple[float, float] = (GATHER_QUIET, GATHER_MOST),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``gather``: a batched kind's quiet spell and longest wait (``GATHER_QUIET``)."""
        self.store = store
        self.keyring = keyring
        self.batched = {k: h for k, h in handlers.items() if isinstance(h, BatchHandler)}
        self.handlers = {k: h for k, h in handlers.items() if not isinstance(h, BatchHandler)}
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff_seconds = backoff_seconds
        self.gather = gather
        self.clock = clock
        self._unopened: dict[int, datetime] = {}  # events no key opened: left alone until

    def drain(self, batch: int = 100, stop: threading.Event | None = None) -> DrainResult:
        """Process every due event, batch by batch, until none is left or ``stop`` is set
        (checked between batches: the daemon claims one event of a per-event kind per batch,
        so that it stops between events and several instances share a burst; a batched
        handler's kind is claimed ``handler.batch`` at a time)."""
        total = DrainResult()
        while stop is None or not stop.is_set():
            result = self.run_once(batch, stop)
            total.processed += result.processed
            total.retried += result.retried
            total.dead += result.dead
            if not (result.processed or result.retried or result.dead):
                break
        return total

    def run_once(self, batch: int = 100, stop: threading.Event | None = None) -> DrainResult:
        """One claim of each batched handler's kind (its own size, gathered: ``_gathered``),
        then one of up to ``batch`` events of the other kinds, each handled alone."""
        now = self.clock()
        self._unopened = {i: until for i, until in self._unopened.items() if until > now}
        outcomes: list[str] = []
        for kind, handler in self.batched.items():
            rows = self._gathered(kind, handler.batch, stop or threading.Event())
            outcomes += self._process_batch(handler, rows)
        singles = set(self.handlers) | DROPPED_KINDS
        outcomes += [self._process(row) for row in self._claim(singles, batch, now)]
        result = DrainResult()
        for outcome in outcomes:
            setattr(result, outcome, getattr(result, outcome) + 1)
        return result

    def _gathered(self, kind: str, limit: int, stop: threading.Event) -> list[inbox.InboxRow]:
        """Up to ``limit`` due events of ``kind``: those due now, topped up after each quiet
        spell that brought more, until the claim is full, a spell brings none, the longest
        wait is over or ``stop`` is set."""
        quiet, most = self.gather
        rows = self._claim({kind}, limit, self.clock())
        deadline = time.monotonic() + most
        while rows and len(rows) < limit and time.monotonic() < deadline:
            if stop.wait(quiet):
                break
            more = self._claim({kind}, limit - len(rows), self.clock())
            if not more:
                break
            rows += more
        return rows

    def _claim(self, kinds: set[str], limit: int, now: datetime) -> list[inbox.InboxRow]:
        return inbox.claim(
            self.store,
            kinds=kinds,
            now=now.isoformat(timespec="microseconds"),
            lease_until=(now + self.lease).isoformat(timespec="microseconds"),
            limit=limit,
            skip=self._unopened,
        )

    def _process(self, row: inbox.InboxRow) -> str:
        stamp = self.clock().isoformat(timespec="microseconds")
        handler = self.handlers.get(row.kind)
        if handler is None:  # a dropped kind: keeping the row is the record of it
            inbox.finish(self.store, [row.id], stamp)
            return "processed"
        try:
            handler(self._event(row))
        except Exception as error:
            return self._failed(row, error)
        inbox.finish(self.store, [row.id], stamp)
        return "processed"

    def _process_batch(self, handler: BatchHandler, rows: Sequence[inbox.InboxRow]) -> list[str]:
        """Hand the events that open to ``handler`` together, then settle each alone: those
        it answered without an exception are finished (in one transaction), the rest fail
        one by one, as a per-event handler's would."""
        outcomes: list[str] = []
        events: dict[int, InboxEvent] = {}
        for row in rows:
            try:
                events[row.id] = self._event(row)
            except KeyNotConfigured as error:
                outcomes.append(self._failed(row, error))
        if not events:
            return outcomes
        try:
            failures = dict(handler.handle_batch(list(events.values())))
        except Exception as error:  # nothing tells the events apart: each fails with it
            failures = dict.fromkeys(events, error)
        done = [event_id for event_id in events if event_id not in failures]
        inbox.finish(self.store, done, self.clock().isoformat(timespec="microseconds"))
        failed = [row for row in rows if row.id in events and row.id in failures]
        return (
            outcomes + ["processed"] * len(done) + [self._failed(r, failures[r.id]) for r in failed]
        )

    def _failed(self, row: inbox.InboxRow, error: Exception) -> str:
        """Settle an event whose handling raised ``error``: set aside until its key is
        configured, retried with backoff, or dead-lettered and audited."""
        if isinstance(error, KeyNotConfigured):  # its own payload's key, or its erasure request's
            inbox.set_aside(self.store, row, str(error))
            self._unopened[row.id] = self.clock() + KEY_RETRY
            log.warning("inbox event waits for its key", inbox_id=row.id, problem=str(error))
            return "retried"
        stamp = self.clock().isoformat(timespec="microseconds")
        reason = _reason(error)
        policy = leases.RetryPolicy(self.max_attempts, self.backoff_seconds)
        verdict = inbox.fail(
            self.store, row, policy, permanent=isinstance(error, Permanent), reason=reason,
            now=self.clock(), stamp=stamp,
        )  # fmt: skip
        if verdict.dead:
            audit.record(
                self.store,
                AuditEvent(
                    actor="inbox",
                    action="inbox.dead_letter",
                    outcome="failed",
                    system=row.source,
                    record_id=row.object_id,
                    reason=reason,
                    details={"inbox_id": row.id, "kind": row.kind, "attempts": row.attempts},
                ),
            )
            log.warning("inbox event dead-lettered", inbox_id=row.id, reason=reason)
            return "dead"
        log.info("inbox event will be retried", inbox_id=row.id, reason=reason)
        return "retried"

    def _event(self, row: inbox.InboxRow) -> InboxEvent:
        sealed = row.payload
        what = f"inbox event {row.id}"
        payload = json.loads(self.keyring.open(what, sealed, row.wrapped_key)) if sealed else {}
        return InboxEvent(
            id=row.id,
            source=row.source,
            kind=row.kind,
            event_type=row.event_type,
            object_type=row.object_type,
            object_id=row.object_id,
            occurred_at=row.occurred_at,
            received_at=row.received_at,
            payload=payload,
        )


def _reason(error: Exception) -> str:
    """Adapter errors carry vendor messages without personal data; anything else, its type."""
    text = str(error) if isinstance(error, AdapterError) else type(error).__name__
    return text[:500]
