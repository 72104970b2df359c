"""SQL for the audit log. Appends must run inside ``Store.transaction(serialize=LOCK)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select

from bridge.store.db import Store
from bridge.store.tables import audit_log

LOCK = "audit_log"


def last_link(conn: Connection) -> tuple[int, str] | None:
    """The sequence number and hash of the newest row, which the next row chains onto."""
    row = conn.execute(
        select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    return (int(row.seq), str(row.hash)) if row else None


def insert_row(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(audit_log).values(**row))


def rows(store: Store, subject_ref: str | None = None) -> Iterator[RowMapping]:
    """Rows in chain order, streamed so that verifying a long log needs little memory."""
    query = select(audit_log).order_by(audit_log.c.seq)
    if subject_ref is not None:
        query = query.where(audit_log.c.subject_ref == subject_ref)
    with store.engine.connect() as conn:
        yield from conn.execution_options(yield_per=1000).execute(query).mappings()
