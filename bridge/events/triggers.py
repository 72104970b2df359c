"""Vendor events that ask for an erasure: the inbox handler for ``deletion`` events.

The person is found through the addresses the CRM still gives for the record, or the record
index (whom a record held after the CRM forgot it). Each event makes at most one request
(its ``origin``); a person the bridge cannot find is an audit event, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge import audit
from bridge.adapters.base import CrmAdapter, RecordRef
from bridge.events.inbox import InboxEvent
from bridge.model import AuditEvent, System
from bridge.services.erasure import Erasure
from bridge.store import erasure as erasure_rows
from bridge.store import records
from bridge.store.audit_log import LOCK as AUDIT_LOCK

UNRESOLVED = (
    "the bridge cannot tell whom this record held (it never read it, and the CRM gives no "
    "address for it); erase the person elsewhere with `bridge erase`"
)


class ErasureTriggers:
    """Turns vendor deletion events into erasure requests, and runs them as far as they go."""

    def __init__(self, erasure: Erasure, adapters: Mapping[System, CrmAdapter]) -> None:
        self.erasure = erasure
        self.adapters = dict(adapters)

    def __call__(self, event: InboxEvent) -> None:
        store = self.erasure.store
        system = System(event.source)
        record = RecordRef(system, (event.object_type or "").lower(), str(event.object_id))
        what = event.event_type.rpartition(".")[2]
        trigger = f"{system}.{what}"
        origin = f"{system} {event.object_type} {event.object_id} {what} {event.occurred_at}"
        key = (record.system, record.object_type, record.id)
        refs = records.refs_of(store, key)
        if refs:  # whatever else happens, the people this record held stay erased
            with store.transaction(serialize=AUDIT_LOCK) as conn:
                now = self.erasure.clock().isoformat(timespec="microseconds")
                erasure_rows.suppress(conn, refs, origin, now)
        others = [
            RecordRef(System(s), o, i)
            for s, o, i in records.records_of(store, refs)
            if (s, o, i) != key
        ]
        emails = sorted({e for ref in [record, *others] for e in self._emails_of(ref)})
        if emails:
            self._request(emails, trigger, origin)
        elif refs:
            audit.record(
                store,
                AuditEvent(
                    actor=trigger,
                    action="erasure.triggered",
                    outcome="suppressed",
                    system=system,
                    record_id=record.id,
                    subject_ref=min(refs),
                    reason=f"{origin}: no other record of the person; suppressed",
                ),
            )
        else:
            audit.record(
                store,
                AuditEvent(
                    actor=trigger,
                    action="erasure.trigger_unresolved",
                    outcome="failed",
                    system=system,
                    record_id=record.id,
                    reason=f"{origin}: {UNRESOLVED}",
                ),
            )

    def _emails_of(self, record: RecordRef) -> list[str]:
        adapter = self.adapters.get(record.system)
        return adapter.emails_of(record) if adapter is not None else []

    def _request(self, emails: list[str], trigger: str, origin: str) -> None:
        request_id = self.erasure.submit(emails, "delete", None, trigger, origin)
        self.erasure.run(request_id, wait_seconds=0)
