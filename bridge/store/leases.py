"""Work items claimed under a lease, shared by every durable queue (inbox, erasure steps).

A claim marks rows ``processing`` until a time; a worker that dies leaves the lease to
expire and the row is claimed again. PostgreSQL workers skip each other's locked rows
(``FOR UPDATE SKIP LOCKED``); SQLite serialises the claim with its write lock.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Table, and_, or_, select, update

from bridge.store.db import Store

PENDING, PROCESSING, DONE, DEAD = "pending", "processing", "done", "dead"


def claim(
    store: Store,
    table: Table,
    where: ColumnElement[bool],
    now: str,
    lease_until: str,
    limit: int,
) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due rows matching ``where``, oldest first; attempts counted."""
    columns = table.c
    due = and_(
        where,
        columns.status.in_([PENDING, PROCESSING]),
        or_(columns.available_at.is_(None), columns.available_at <= now),
    )
    query = select(table).where(due).order_by(columns.id).limit(limit)
    exclusive = f"{table.name}.claim" if store.is_sqlite else None
    with store.transaction(serialize=exclusive) as conn:
        if not store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows: list[RowMapping] = list(conn.execute(query).mappings())
        ids = [row["id"] for row in rows]
        if ids:
            conn.execute(
                update(table)
                .where(columns.id.in_(ids))
                .values(status=PROCESSING, available_at=lease_until, attempts=columns.attempts + 1)
            )
    return [{**row, "attempts": row["attempts"] + 1} for row in rows]


def renew(store: Store, table: Table, row_id: int, attempts: int, lease_until: str) -> bool:
    """Extend a claim before working on the row, if it is still this claim's: ``attempts``
    (counted at each claim) tells claims apart. False: the lease ran out meanwhile and
    another worker claimed the row, so this one must leave it alone."""
    columns = table.c
    with store.transaction() as conn:
        result = conn.execute(
            update(table)
            .where(columns.id == row_id, columns.status == PROCESSING, columns.attempts == attempts)
            .values(available_at=lease_until)
        )
    return result.rowcount == 1


def settle(store: Store, table: Table, row_id: int, **values: Any) -> None:
    """Record a claimed row's outcome (done, retry later, or dead) in its own transaction."""
    with store.transaction() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(**values))


def release(store: Store, table: Table, ids: Collection[int]) -> None:
    """Give claimed rows back unworked (a worker shutting down): due again at once, and the
    claim's attempt not counted, since nothing was tried."""
    if not ids:
        return
    columns = table.c
    with store.transaction() as conn:
        conn.execute(
            update(table)
            .where(columns.id.in_(list(ids)), columns.status == PROCESSING)
            .values(status=PENDING, available_at=None, attempts=columns.attempts - 1)
        )
