"""Data-subject rights beside erasure: who a person is across systems, and access (Art. 15/20)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bridge import audit
from bridge.adapters.base import CrmAdapter
from bridge.identity import normalise_email, subject_ref
from bridge.model import System
from bridge.store.db import Store


def subject_emails(adapters: Mapping[System, CrmAdapter], emails: Sequence[str]) -> list[str]:
    """A person's every email: those given, plus every other email their records hold."""
    found = {normalise_email(e) for e in emails if e.strip()}
    for adapter in adapters.values():
        for record in adapter.find_by_emails(sorted(found)):
            found.update(normalise_email(e) for e in record.emails if e.strip())
    return sorted(found)


def export_subject(
    store: Store, adapters: Mapping[System, CrmAdapter], key: bytes, emails: Sequence[str]
) -> dict[str, Any]:
    """One document with everything held about a person: every record in every system (all
    the fields the adapters expose, consent with the history vendors keep) and the audit
    events about them. It is the person's own data, so it is given to them in clear."""
    everyone = subject_emails(adapters, emails)
    refs = {subject_ref(key, e) for e in everyone}
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "emails": everyone,
        "systems": {system.value: adapter.export(everyone) for system, adapter in adapters.items()},
        "audit_events": [e for ref in sorted(refs) for e in audit.events(store, ref)],
    }
