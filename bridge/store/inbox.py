"""SQL for the webhook inbox: store once, claim with a lease, finish, retry or dead-letter.

A claim is a lease (``store.leases``), not a held transaction: vendor calls made while
processing can take seconds, and on SQLite a long write transaction would stall the
receiver's acknowledgements.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from bridge.store import leases
from bridge.store.db import Store, insert_or_skip
from bridge.store.leases import DONE, PENDING, PROCESSING
from bridge.store.tables import inbox


@dataclass(frozen=True)
class InboxRow:
    id: int
    source: str
    event_key: str
    event_type: str
    kind: str
    object_type: str | None
    object_id: str | None
    occurred_at: str | None
    received_at: str
    payload: bytes | None
    attempts: int


def add(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Insert events, skipping any already stored; True for each new one.

    An event repeated within ``rows`` counts as stored once, at its first occurrence.
    """
    first: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        first.setdefault((row["source"], row["event_key"]), index)
    if not first:
        return []
    statement = insert_or_skip(conn, inbox, ["source", "event_key"]).returning(
        inbox.c.source, inbox.c.event_key
    )
    optional = dict.fromkeys(c.name for c in inbox.c if c.nullable)
    params = [
        {**optional, **rows[i], "status": PENDING, "attempts": 0} for i in first.values()
    ]  # one statement shape for every row, so it compiles once and runs as executemany
    inserted = {(source, key) for source, key in conn.execute(statement, params)}
    return [
        first[(row["source"], row["event_key"])] == i
        and (row["source"], row["event_key"]) in inserted
        for i, row in enumerate(rows)
    ]


def claim(
    store: Store, kinds: Collection[str], now: str, lease_until: str, limit: int
) -> list[InboxRow]:
    """Lease up to ``limit`` due events of the given kinds, oldest receipt first."""
    rows = leases.claim(store, inbox, inbox.c.kind.in_(list(kinds)), now, lease_until, limit)
    fields = InboxRow.__dataclass_fields__
    return [InboxRow(**{f: row[f] for f in fields}) for row in rows]


def finish(store: Store, event_id: int, now: str) -> None:
    """Processed: keep the row as the record of it, drop the payload."""
    leases.settle(
        store, inbox, event_id,
        status=DONE, payload=None, processed_at=now, available_at=None, last_error=None,
    )  # fmt: skip


def fail(
    store: Store,
    row: InboxRow,
    policy: leases.RetryPolicy,
    *,
    permanent: bool,
    reason: str,
    now: datetime,
    stamp: str,
) -> leases.Verdict:
    """Handling failed: retry later, or give up (dead, processed at ``stamp``). A dead row
    keeps its payload (encrypted) so that a replay can still process it."""
    return leases.settle_failure(
        store, inbox, row.id, row.attempts, policy=policy, permanent=permanent, reason=reason,
        now=now, given_up={"processed_at": stamp},
    )  # fmt: skip


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status))
        return {status: int(count) for status, count in rows}


def oldest_pending_received_at(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(
            select(func.min(inbox.c.received_at)).where(inbox.c.status.in_([PENDING, PROCESSING]))
        ).scalar()


def all_rows(store: Store) -> list[dict[str, Any]]:
    """Every row without payloads, in order of receipt (tests and inspection)."""
    columns = [c for c in inbox.c if c.name != "payload"]
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(*columns).order_by(inbox.c.id)).mappings()]
