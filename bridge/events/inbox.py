"""Draining the webhook inbox, oldest receipt first.

Each event kind goes to its handler (``consent`` to propagation, ``deletion`` to erasure);
``other`` events are recorded and dropped, and a kind with no handler stays in the inbox.
Failures are retried with backoff, then dead-lettered (ARCHITECTURE.md, "A webhook event"),
except an event no configured key opens: that is the settings' fault, and the event waits,
its attempts not counted, for an instance with the key, a restart, or `bridge keys rotate`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
        handlers: Mapping[str, Handler],
        *,
        max_attempts: int = 8,
        lease_seconds: float = 300,
        backoff_seconds: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.handlers = dict(handlers)
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_seconds)
        self.backoff_seconds = backoff_seconds
        self.clock = clock
        self._unopened: dict[int, datetime] = {}  # events no key opened: left alone until

    def drain(self, batch: int = 100, stop: threading.Event | None = None) -> DrainResult:
        """Process every due event, batch by batch, until none is left or ``stop`` is set
        (checked between batches: the daemon claims one event per batch, so that it stops
        between events and several instances share a burst)."""
        total = DrainResult()
        while stop is None or not stop.is_set():
            result = self.run_once(batch)
            total.processed += result.processed
            total.retried += result.retried
            total.dead += result.dead
            if not (result.processed or result.retried or result.dead):
                break
        return total

    def run_once(self, batch: int = 100) -> DrainResult:
        now = self.clock()
        self._unopened = {i: until for i, until in self._unopened.items() if until > now}
        rows = inbox.claim(
            self.store,
            kinds=set(self.handlers) | DROPPED_KINDS,
            now=now.isoformat(timespec="microseconds"),
            lease_until=(now + self.lease).isoformat(timespec="microseconds"),
            limit=batch,
            skip=self._unopened,
        )
        result = DrainResult()
        for row in rows:
            outcome = self._process(row)
            setattr(result, outcome, getattr(result, outcome) + 1)
        return result

    def _process(self, row: inbox.InboxRow) -> str:
        stamp = self.clock().isoformat(timespec="microseconds")
        handler = self.handlers.get(row.kind)
        if handler is None:  # a dropped kind: keeping the row is the record of it
            inbox.finish(self.store, row.id, stamp)
            return "processed"
        try:
            handler(self._event(row))
        except KeyNotConfigured as error:  # its own payload's key, or its erasure request's
            inbox.set_aside(self.store, row, str(error))
            self._unopened[row.id] = self.clock() + KEY_RETRY
            log.warning("inbox event waits for its key", inbox_id=row.id, problem=str(error))
            return "retried"
        except Exception as error:
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
        inbox.finish(self.store, row.id, stamp)
        return "processed"

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
