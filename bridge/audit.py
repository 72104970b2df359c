"""The audit log: append-only, hash-chained, and free of personal data.

Each row stores the SHA-256 of the previous row and of its own canonical JSON (which includes
that previous hash and its sequence number), so editing, deleting or reordering any row but
the newest breaks the chain at a row ``verify`` can name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from bridge.logs import looks_personal
from bridge.model import AuditEvent
from bridge.store import audit_log
from bridge.store.db import Store

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "seq",
    "occurred_at",
    "actor",
    "action",
    "outcome",
    "system",
    "record_id",
    "subject_ref",
    "reason",
    "details",
    "prev_hash",
)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(row: Mapping[str, Any] | RowMapping) -> str:
    return hashlib.sha256(canonical_json({f: row[f] for f in CHAINED_FIELDS}).encode()).hexdigest()


def _refuse_personal_data(event: AuditEvent) -> None:
    """An audit row is kept for years: a programming error that leaks an email must fail."""
    for name, value in asdict(event).items():
        text = canonical_json(value) if not isinstance(value, str) else value
        if looks_personal(text):
            raise ValueError(f"audit event field {name!r} looks like personal data")


def append(conn: Connection, event: AuditEvent) -> int:
    """Append inside a transaction opened with ``store.transaction(serialize=audit_log.LOCK)``.

    Callers that change state pass their own transaction, so the change and its audit row
    commit together or not at all.
    """
    _refuse_personal_data(event)
    last = audit_log.last_link(conn)
    seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
    row: dict[str, Any] = {
        **asdict(event),
        "details": canonical_json(event.details),
        "seq": seq,
        "occurred_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "prev_hash": prev_hash,
    }
    row["hash"] = row_hash(row)
    audit_log.insert_row(conn, row)
    return seq


def record(store: Store, event: AuditEvent) -> int:
    """Append one event in a transaction of its own."""
    with store.transaction(serialize=audit_log.LOCK) as conn:
        return append(conn, event)


def events(store: Store, subject_ref: str | None = None) -> Iterator[dict[str, Any]]:
    """Events in order, as plain dicts with ``details`` decoded."""
    for row in audit_log.rows(store, subject_ref):
        yield {**row, "details": json.loads(row["details"])}


def newest(
    store: Store,
    subject_ref: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` events (all without one), at or after ``since`` (an aware time),
    oldest first, as :func:`events` gives them; and how many older ones match but are left
    out."""
    bound = since.astimezone(UTC).isoformat(timespec="microseconds") if since else None
    found, left_out = audit_log.newest(store, subject_ref, bound, limit)
    return [{**row, "details": json.loads(row["details"])} for row in found], left_out


@dataclass(frozen=True)
class Verification:
    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(store: Store) -> Verification:
    """Recompute the chain from the first row; stop at the first row that does not fit."""
    expected_seq, expected_prev, checked = 1, GENESIS, 0
    for row in audit_log.rows(store):
        seq = int(row["seq"])
        if seq != expected_seq:
            return Verification(
                checked, expected_seq, f"row {expected_seq} is missing (next row is {seq})"
            )
        if row["prev_hash"] != expected_prev:
            return Verification(
                checked, seq, "its link to the previous row is broken (a row was replaced)"
            )
        if row_hash(row) != row["hash"]:
            return Verification(checked, seq, "its content does not match its hash (edited)")
        expected_seq, expected_prev, checked = seq + 1, row["hash"], checked + 1
    return Verification(checked)
