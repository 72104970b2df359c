"""SQL for the audit log. Appends must run inside ``Store.transaction(serialize=LOCK)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, func, insert, select, update

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


def batch(conn: Connection, after: int | None, size: int = 1000) -> list[RowMapping]:
    """The first ``size`` rows after row ``after`` (None: from the first), in chain order."""
    query = select(audit_log).order_by(audit_log.c.seq).limit(size)
    if after is not None:
        query = query.where(audit_log.c.seq > after)
    return list(conn.execute(query).mappings())


def extent(conn: Connection) -> tuple[int, int]:
    """How many rows there are, and the highest sequence number (0 when empty)."""
    count, last = conn.execute(select(func.count(), func.max(audit_log.c.seq))).one()
    return int(count), int(last or 0)


def hash_at(conn: Connection, seq: int) -> str | None:
    row = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).first()
    return str(row.hash) if row else None


def relink(conn: Connection, links: list[tuple[int, str, str]]) -> None:
    """Set each ``(seq, prev_hash, hash)``: the rows' contents stay as they are."""
    statement = (
        update(audit_log)
        .where(audit_log.c.seq == bindparam("at"))
        .values(prev_hash=bindparam("prev"), hash=bindparam("new"))
    )
    conn.execute(statement, [{"at": s, "prev": p, "new": h} for s, p, h in links])


def newest(
    store: Store,
    subject_ref: str | None = None,
    since: str | None = None,
    limit: int | None = None,
) -> tuple[list[RowMapping], int]:
    """The newest ``limit`` rows (all without one) about ``subject_ref``, appended at or
    after ``since`` (an ``occurred_at`` value: they compare as text), in chain order; and
    how many older rows match but were left out. Read backwards along the primary key, so
    that the newest rows of a long log come without reading the rest."""
    where = []
    if subject_ref is not None:
        where.append(audit_log.c.subject_ref == subject_ref)
    if since is not None:
        where.append(audit_log.c.occurred_at >= since)
    query = select(audit_log).where(*where).order_by(audit_log.c.seq.desc()).limit(limit)
    with store.engine.connect() as conn:
        found = list(conn.execute(query).mappings())[::-1]
        if limit is None or len(found) < limit:
            return found, 0
        older = [*where, audit_log.c.seq < found[0]["seq"]] if found else where
        left_out = conn.execute(select(func.count()).select_from(audit_log).where(*older))
        return found, int(left_out.scalar_one())
