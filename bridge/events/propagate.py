"""Propagation: an opt-out or consent change one CRM reports by webhook, written to every
other system for that person at once, not at the next scheduled sync.

The event is a hint, not the truth: the person is re-read everywhere and reconciled like a
sync, and the bridge's own writes coming back (echoes) are dropped without a vendor call
(ARCHITECTURE.md, "A webhook event").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge import audit
from bridge.adapters.base import RecordRef
from bridge.errors import BridgeError
from bridge.events.inbox import InboxEvent
from bridge.logs import get_logger
from bridge.metrics import PROPAGATION_DELAY
from bridge.model import AuditEvent, System
from bridge.services.reconcile import Reconciler
from bridge.store import sync as sync_rows

log = get_logger("bridge.propagate")
# An event is the echo of a bridge write recorded from ECHO_BEFORE before the event's time to
# ECHO_AFTER after it: the vendor stamps the change while the call runs, and the bridge records
# the write once its whole batch has returned (up to a minute later); a few seconds the other
# way allow for clock skew between the vendor and us.
ECHO_AFTER = timedelta(seconds=60)
ECHO_BEFORE = timedelta(seconds=5)


class PropagationFailed(BridgeError):
    """Some writes failed; the inbox retries the event (and gives up into its dead letters)."""


class Propagation:
    """The inbox handler for ``consent`` events."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def __call__(self, event: InboxEvent) -> None:
        system = System(event.source)
        record = RecordRef(system, (event.object_type or "").lower(), str(event.object_id))
        if self._is_echo(event, record):
            return
        emails = self.reconciler.adapters[system].emails_of(record)
        if not emails:
            log.info("propagate.record_gone", system=system, record_id=record.id)
            return
        report = self.reconciler.sync_people(emails, actor="propagate")
        delay = (datetime.now(UTC) - datetime.fromisoformat(event.received_at)).total_seconds()
        PROPAGATION_DELAY.observe(delay)
        log.info(
            "propagate.done",
            system=system,
            record_id=record.id,
            changes=report.counts()["planned"],
            delay_seconds=round(delay, 3),
        )
        if report.failed:
            raise PropagationFailed(f"{report.failed} writes failed; the event is retried")

    def _is_echo(self, event: InboxEvent, record: RecordRef) -> bool:
        if not event.occurred_at:
            return False
        occurred = datetime.fromisoformat(event.occurred_at)
        written = sync_rows.written_near(
            self.reconciler.store,
            (record.system, record.object_type, record.id),
            (occurred - ECHO_BEFORE).isoformat(timespec="microseconds"),
            (occurred + ECHO_AFTER).isoformat(timespec="microseconds"),
        )
        if not written:
            return False
        audit.record(
            self.reconciler.store,
            AuditEvent(
                actor="propagate",
                action="sync.echo",
                outcome="ignored",
                system=record.system,
                record_id=record.id,
                reason="the bridge's own write coming back",
                details={"event": event.event_type, "fields": sorted(w["field"] for w in written)},
            ),
        )
        log.info("propagate.echo", system=record.system, record_id=record.id)
        return True
