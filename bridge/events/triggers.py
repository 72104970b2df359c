"""Vendor events that ask for an erasure: the inbox handler for ``deletion`` events.

- HubSpot ``contact.privacyDeletion``: HubSpot has already erased the contact, and its event
  holds no email; the record index (:mod:`bridge.services.watch`) says whom the contact held, so
  the person's other records are found and erased, and the contact's pseudonyms suppressed.
  Its twin ``contact.deletion`` (also sent for an ordinary, restorable delete) does nothing:
  the privacy deletion is the one request.
- Salesforce ``Individual.ShouldForget = true`` (an outbound message): the person is erased
  everywhere, found through the Individual's people and contact points.

Each triggering event makes at most one request (its ``origin``); the request's audit event
names it. A person the bridge cannot find is an audit event saying so, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge import audit
from bridge.adapters.base import CrmAdapter, RecordRef
from bridge.events.inbox import InboxEvent
from bridge.model import AuditEvent, ObjectType, System
from bridge.services.erasure import Erasure
from bridge.store import erasure as erasure_rows
from bridge.store import records
from bridge.store.audit_log import LOCK as AUDIT_LOCK

PRIVACY_DELETION = "contact.privacyDeletion"
NEVER_SEEN = (
    "the bridge never read this contact, so it cannot tell who it was; "
    "erase the person elsewhere with `bridge erase`"
)
NO_ADDRESS = (
    "the Individual is gone or no person or address points at it; "
    "erase the person elsewhere with `bridge erase`"
)


class ErasureTriggers:
    """Turns vendor deletion events into erasure requests, and runs them as far as they go."""

    def __init__(self, erasure: Erasure, adapters: Mapping[System, CrmAdapter]) -> None:
        self.erasure = erasure
        self.adapters = dict(adapters)

    def __call__(self, event: InboxEvent) -> None:
        if event.source == System.HUBSPOT.value and event.event_type == PRIVACY_DELETION:
            self._hubspot_privacy_deletion(event)
        elif event.source == System.SALESFORCE.value and event.object_type == "Individual":
            self._salesforce_should_forget(event)

    def _hubspot_privacy_deletion(self, event: InboxEvent) -> None:
        store = self.erasure.store
        contact = (System.HUBSPOT.value, ObjectType.CONTACT.value, str(event.object_id))
        origin = f"hubspot contact {event.object_id} privacyDeletion"
        refs = records.refs_of(store, contact)
        if not refs:
            self._unresolved(event, origin, NEVER_SEEN)
            return
        with store.transaction(serialize=AUDIT_LOCK) as conn:
            now = self.erasure.clock().isoformat(timespec="microseconds")
            erasure_rows.suppress(conn, refs, origin, now)
        elsewhere = [key for key in records.records_of(store, refs) if key != contact]
        emails = sorted({e for key in elsewhere for e in self._emails_of(*key)})
        if emails:
            self._request(emails, "hubspot.privacyDeletion", origin)
        else:
            audit.record(
                store,
                AuditEvent(
                    actor="hubspot.privacyDeletion",
                    action="erasure.triggered",
                    outcome="suppressed",
                    system=System.HUBSPOT.value,
                    record_id=str(event.object_id),
                    subject_ref=min(refs),
                    reason=f"{origin}: no other record of the person; suppressed",
                ),
            )

    def _salesforce_should_forget(self, event: InboxEvent) -> None:
        origin = f"salesforce Individual {event.object_id} ShouldForget {event.occurred_at}"
        emails = self._emails_of(
            System.SALESFORCE.value, ObjectType.INDIVIDUAL.value, str(event.object_id)
        )
        if emails:
            self._request(emails, "salesforce.ShouldForget", origin)
        else:
            self._unresolved(event, origin, NO_ADDRESS)

    def _emails_of(self, system: str, object_type: str, record_id: str) -> list[str]:
        adapter = self.adapters.get(System(system))
        if adapter is None:
            return []
        return adapter.emails_of(RecordRef(System(system), object_type, record_id))

    def _request(self, emails: list[str], trigger: str, origin: str) -> None:
        request_id = self.erasure.submit(emails, "delete", None, trigger, origin)
        self.erasure.run(request_id, wait_seconds=0)

    def _unresolved(self, event: InboxEvent, origin: str, why: str) -> None:
        audit.record(
            self.erasure.store,
            AuditEvent(
                actor=f"{event.source}.{event.event_type}",
                action="erasure.trigger_unresolved",
                outcome="failed",
                system=event.source,
                record_id=event.object_id,
                reason=f"{origin}: {why}",
            ),
        )
