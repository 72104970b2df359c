"""SQL for the webhook inbox: store once, claim with a lease, finish, retry or dead-letter.

A claim is a lease (``store.leases``), not a held transaction: vendor calls made while
processing can take seconds, and on SQLite a long write transaction would stall the
receiver's acknowledgements.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, and_, func, select, update

from bridge.store import data_keys, leases, notify
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
    wrapped_key: bytes | None  # the payload's data key; None for a payload stored before them


_TEXT_COLUMNS = {c.name: c.type.length for c in inbox.c if isinstance(c.type, String)}


def unstorable(row: Mapping[str, Any]) -> str | None:
    """Why ``row`` could not be stored on both databases, or None: PostgreSQL refuses a NUL
    and text longer than its column (SQLite would keep both), and neither takes what UTF-8
    cannot encode. The answer names the column, never the value."""
    for name, value in row.items():
        if name not in _TEXT_COLUMNS or not isinstance(value, str):
            continue
        length = _TEXT_COLUMNS[name]
        if "\x00" in value:
            return f"{name} holds a NUL character"
        if length is not None and len(value) > length:
            return f"{name} is longer than {length} characters"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{name} is not valid text"
    return None


def add(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Insert events, skipping any already stored; True for each new one. Each ``payload`` is
    :class:`~bridge.sealing.Sealed`: its data key is stored for the new rows.

    An event repeated within ``rows`` counts as stored once, at its first occurrence.
    """
    first: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        first.setdefault((row["source"], row["event_key"]), index)
    if not first:
        return []
    statement = insert_or_skip(conn, inbox, ["source", "event_key"]).returning(
        inbox.c.source, inbox.c.event_key, inbox.c.id
    )
    optional = dict.fromkeys(c.name for c in inbox.c if c.nullable)
    sealed = {event: rows[i]["payload"] for event, i in first.items()}
    params = [
        {**optional, **rows[i], "payload": sealed[event].token, "status": PENDING, "attempts": 0}
        for event, i in first.items()
    ]  # one statement shape for every row, so it compiles once and runs as executemany
    inserted = {(source, key): row_id for source, key, row_id in conn.execute(statement, params)}
    keys = {str(row_id): sealed[event].wrapped_key for event, row_id in inserted.items()}
    data_keys.add(conn, data_keys.INBOX, keys)
    if inserted:  # the inbox job takes them at once, here or on another instance
        notify.notify(conn, notify.INBOX)
    return [
        first[(row["source"], row["event_key"])] == i
        and (row["source"], row["event_key"]) in inserted
        for i, row in enumerate(rows)
    ]


def claim(
    store: Store,
    kinds: Collection[str],
    now: str,
    lease_until: str,
    limit: int,
    skip: Collection[int] = (),
) -> list[InboxRow]:
    """Lease up to ``limit`` due events of the given kinds, oldest receipt first, but for the
    ids in ``skip``."""
    wanted: ColumnElement[bool] = inbox.c.kind.in_(list(kinds))
    if skip:
        wanted = and_(wanted, inbox.c.id.not_in(list(skip)))
    # Each payload with its data key, read in the one statement that claims it.
    rows = leases.claim(
        store, inbox, wanted, now, lease_until, limit,
        also=[data_keys.WRAPPED.label("wrapped_key")], source=data_keys.with_keys(data_keys.INBOX),
    )  # fmt: skip
    fields = InboxRow.__dataclass_fields__
    return [InboxRow(**{f: row[f] for f in fields}) for row in rows]


def finish(store: Store, event_ids: Collection[int], now: str) -> None:
    """Processed: keep each row as the record of it; its payload is destroyed with its data
    key (the row first, then the key: ``store.data_keys``). One transaction for them all: a
    batch of events handled together is settled without a commit per event."""
    if not event_ids:
        return
    with store.transaction() as conn:
        conn.execute(
            update(inbox)
            .where(inbox.c.id.in_(list(event_ids)))
            .values(status=DONE, payload=None, processed_at=now, available_at=None, last_error=None)
        )
        for event_id in event_ids:
            data_keys.destroy(conn, data_keys.INBOX, str(event_id))


def set_aside(store: Store, row: InboxRow, reason: str) -> None:
    """Give a claimed event back whole, its attempt not counted, and say why: it is not at
    fault (its key is missing from these settings), so it never uses up its attempts or dies
    of it, and another instance, or this one restarted with the key, may process it."""
    leases.settle(
        store, inbox, row.id,
        status=PENDING, available_at=None, attempts=row.attempts - 1, last_error=reason,
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
