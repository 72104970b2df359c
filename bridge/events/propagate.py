"""Propagation: an opt-out or consent change one CRM reports by webhook, written to every
other system for that person at once, not at the next scheduled sync.

The event is a hint, not the truth: the person is re-read everywhere and reconciled like a
sync, and the bridge's own writes coming back (echoes) are dropped without a vendor call
(ARCHITECTURE.md, "A webhook event").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bridge import audit
from bridge.adapters.base import AdapterError, RecordRef, WriteStatus
from bridge.errors import BridgeError
from bridge.events.inbox import InboxEvent
from bridge.logs import get_logger
from bridge.metrics import PROPAGATION_DELAY
from bridge.model import AuditEvent, System
from bridge.services.reconcile import Reconciler
from bridge.store import sync as sync_rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK

log = get_logger("bridge.propagate")
# An event is the echo of a bridge write recorded from ECHO_BEFORE before the event's time to
# ECHO_AFTER after it: the vendor stamps the change while the call runs, and the bridge records
# the write once its whole batch has returned (up to a minute later); a few seconds the other
# way allow for clock skew between the vendor and us.
ECHO_AFTER = timedelta(seconds=60)
ECHO_BEFORE = timedelta(seconds=5)


# How many consent events one claim takes (the inbox tops a claim up while a burst lasts:
# ``events.inbox.GATHER_QUIET``). Events come in threes in a burst of unsubscribe-alls (the
# person's, then the echoes of the bridge's own writes of two subscriptions), so 1,500 are
# some 500 people: enough to fill the vendors' write batches (100 and 200 records) and most
# lookups (a few hundred addresses each), whose cost a smaller claim pays again for
# each part-filled batch (500 events: 1.37 times the fewest calls in bench/propagation.py,
# 1,500: 1.15). Larger claims save little more and make the last events of a burst wait
# longer behind the batch in flight; a batch's work ends well within the lease (5 minutes).
CLAIM = 1500
FAILED = WriteStatus.FAILED.value


class PropagationFailed(BridgeError):
    """Some writes failed; the inbox retries the event (and gives up into its dead letters)."""


class Propagation:
    """The inbox handler for ``consent`` events, many at once (``BatchHandler``)."""

    batch = CLAIM

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def handle_batch(self, events: Sequence[InboxEvent]) -> dict[int, Exception]:
        """Drop the echoes, learn each remaining record's addresses in bulk, then reconcile
        every person they reach in one run; an event fails alone when its own echo check or
        lookup does, or when a write to its person's records fails."""
        failures: dict[int, Exception] = {}
        live: list[tuple[InboxEvent, RecordRef]] = []
        echoes: list[AuditEvent] = []
        for event in events:
            system = System(event.source)
            record = RecordRef(system, (event.object_type or "").lower(), str(event.object_id))
            try:
                echo = self._echo(event, record)
            except Exception as error:  # this event's alone: the others go on
                failures[event.id] = error
                continue
            if echo is None:
                live.append((event, record))
            else:
                echoes.append(echo)
        if echoes:  # in one transaction: a burst's echoes come back by the thousand
            with self.reconciler.store.transaction(serialize=AUDIT_LOCK) as conn:
                for echo in echoes:
                    audit.append(conn, echo)
        emails = self._emails_of(live, failures)
        keys = [key for key, found in emails.items() if found]
        if not keys:
            return failures
        planned, outcomes = self._reconciled([emails[k] for k in keys])
        counted = dict(zip(keys, outcomes, strict=True))
        now = datetime.now(UTC)
        for event, record in live:
            if event.id in failures or _key(record) not in counted:
                continue
            delay = now - datetime.fromisoformat(event.received_at)
            PROPAGATION_DELAY.observe(delay.total_seconds())
            outcome = counted[_key(record)]
            if isinstance(outcome, Exception):
                failures[event.id] = outcome
            elif failed := outcome[FAILED]:
                failures[event.id] = PropagationFailed(
                    f"{failed} writes failed; the event is retried"
                )
        log.info("propagate.done", events=len(events), records=len(keys), changes=planned,
                 failed_events=len(failures))  # fmt: skip
        return failures

    def _reconciled(
        self, groups: Sequence[Sequence[str]]
    ) -> tuple[int, list[Counter[str] | Exception]]:
        """``sync_many`` over the groups: the changes planned, and per group the outcomes of
        its changes or the exception it failed with. A vendor's failure fails them all (each
        would fail alike, and is retried); any other (a person the plan cannot take) is
        narrowed down by halves to the groups it comes from, so that the others go on."""
        try:
            report, outcomes = self.reconciler.sync_many(groups, actor="propagate")
        except AdapterError:
            raise
        except Exception as error:
            if len(groups) == 1:
                return 0, [error]
            half = len(groups) // 2
            first, second = self._reconciled(groups[:half]), self._reconciled(groups[half:])
            return first[0] + second[0], first[1] + second[1]
        return report.counts()["planned"], list(outcomes)

    def _emails_of(
        self, live: Sequence[tuple[InboxEvent, RecordRef]], failures: dict[int, Exception]
    ) -> dict[tuple[str, str, str], list[str]]:
        """Each record's addresses, asked of its system in bulk (``emails_of_each``), once per
        record however many events name it; a gone record has none, and is logged. A system
        whose lookup fails fails its own events (into ``failures``), not the others."""
        found: dict[tuple[str, str, str], list[str]] = {}
        for system in sorted({record.system for _, record in live}):
            mine = list({_key(r): r for _, r in live if r.system == system}.values())
            try:
                answers = self.reconciler.adapters[system].emails_of_each(mine)
            except Exception as error:
                failures.update((e.id, error) for e, r in live if r.system == system)
                continue
            for record, emails in zip(mine, answers, strict=True):
                found[_key(record)] = emails
                if not emails:
                    log.info("propagate.record_gone", system=system, record_id=record.id)
        return found

    def _echo(self, event: InboxEvent, record: RecordRef) -> AuditEvent | None:
        """The audit event saying ``event`` is the echo of a bridge write; None if it is not."""
        if not event.occurred_at:
            return None
        occurred = datetime.fromisoformat(event.occurred_at)
        written = sync_rows.written_near(
            self.reconciler.store,
            (record.system, record.object_type, record.id),
            (occurred - ECHO_BEFORE).isoformat(timespec="microseconds"),
            (occurred + ECHO_AFTER).isoformat(timespec="microseconds"),
        )
        if not written:
            return None
        log.info("propagate.echo", system=record.system, record_id=record.id)
        return AuditEvent(
            actor="propagate",
            action="sync.echo",
            outcome="ignored",
            system=record.system,
            record_id=record.id,
            reason="the bridge's own write coming back",
            details={"event": event.event_type, "fields": sorted(w["field"] for w in written)},
        )


def _key(record: RecordRef) -> tuple[str, str, str]:
    return (record.system, record.object_type, record.id)
