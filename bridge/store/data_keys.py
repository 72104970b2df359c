"""SQL for data keys: the key of each held value (an inbox event's payload, an erasure
request's emails, a portal sign-in proof's or session's addresses), wrapped by the configured
keys (``bridge/sealing.py``) and named by the row that holds the value.

Deleting a data key destroys its value wherever copies of the ciphertext remain. A holder's
row is always written before its key in the same transaction (first the row, then the key):
that order, not a lock, keeps ``bridge keys rotate`` and a worker finishing the row from
leaving a key behind. ``scrub`` then removes deleted keys' bytes from the database's files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Join,
    String,
    Table,
    and_,
    cast,
    delete,
    exists,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import OperationalError

from bridge.logs import get_logger
from bridge.sealing import Sealed
from bridge.store.db import BUSY_TIMEOUT_MS, Store
from bridge.store.tables import (
    data_keys,
    erasure_requests,
    inbox,
    portal_proofs,
    portal_sessions,
)

log = get_logger("bridge.data_keys")
SCRUB_WAIT_MS = 1000
"""How long a scrub waits for other connections: SQLite holds back writers (the receiver's
commits) while its checkpoint waits, so it gives up soon and is tried again later."""


@dataclass(frozen=True)
class Holder:
    """A table whose rows hold sealed values: ``name`` in ``data_keys.holder``, ``noun`` for
    messages (no personal data: the kind and the row's id)."""

    name: str
    noun: str
    table: Table
    row_id: Column[Any]
    value: Column[Any]


INBOX = Holder("inbox", "inbox event", inbox, inbox.c.id, inbox.c.payload)
ERASURE_REQUEST = Holder(
    "erasure_request",
    "erasure request",
    erasure_requests,
    erasure_requests.c.id,
    erasure_requests.c.emails_encrypted,
)
PORTAL_PROOF = Holder(
    "portal_proof",
    "portal sign-in proof",
    portal_proofs,
    portal_proofs.c.id,
    portal_proofs.c.email_sealed,
)
PORTAL_SESSION = Holder(
    "portal_session",
    "portal session",
    portal_sessions,
    portal_sessions.c.id,
    portal_sessions.c.emails_sealed,
)
HOLDERS = {holder.name: holder for holder in (INBOX, ERASURE_REQUEST, PORTAL_PROOF, PORTAL_SESSION)}
WRAPPED = data_keys.c.wrapped


def key_of(holder: Holder) -> ColumnElement[bool]:
    """Joins a holder's rows to their data keys (none for a value stored before data keys)."""
    row_id = (
        holder.row_id if isinstance(holder.row_id.type, String) else cast(holder.row_id, String)
    )
    return and_(data_keys.c.holder == holder.name, data_keys.c.holder_id == row_id)


def with_keys(holder: Holder) -> Join:
    """The holder's table, each row with its data key (none for a value stored before them)."""
    return holder.table.outerjoin(data_keys, key_of(holder))


def add(conn: Connection, holder: Holder, keys: Mapping[str, bytes]) -> None:
    """Store wrapped data keys, by the id of the row holding each value."""
    if not keys:
        return
    # RETURNING has SQLAlchemy send the rows as multi-row INSERTs ("insertmanyvalues"), as the
    # inbox's own insert is sent; without it psycopg runs one statement per row.
    statement = insert(data_keys).returning(data_keys.c.holder_id)
    rows = [{"holder": holder.name, "holder_id": i, "wrapped": w} for i, w in keys.items()]
    conn.execute(statement, rows).all()


def destroy(conn: Connection, holder: Holder, holder_id: str) -> None:
    """Delete the data key of the value a row holds (the row's value is destroyed with it)."""
    conn.execute(
        delete(data_keys).where(
            data_keys.c.holder == holder.name, data_keys.c.holder_id == holder_id
        )
    )


def replace(conn: Connection, holder: Holder, holder_id: str, wrapped: bytes) -> None:
    """The row now holds a value sealed under a new data key: the old one goes."""
    destroy(conn, holder, holder_id)
    add(conn, holder, {holder_id: wrapped})


# -- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    holder: Holder
    holder_id: str
    wrapped: bytes


def keys_after(store: Store, after: tuple[str, str] | None, limit: int) -> list[DataKey]:
    """Up to ``limit`` data keys, in order of (holder, id), after ``after``."""
    columns = (data_keys.c.holder, data_keys.c.holder_id)
    query = select(data_keys).order_by(*columns).limit(limit)
    if after is not None:
        query = query.where(tuple_(*columns) > tuple_(*after))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [DataKey(HOLDERS[holder], holder_id, wrapped) for holder, holder_id, wrapped in rows]


def rewrap(conn: Connection, key: DataKey, wrapped: bytes) -> bool:
    """Store ``key`` wrapped anew, unless it was destroyed or replaced since it was read."""
    result = conn.execute(
        update(data_keys)
        .where(
            data_keys.c.holder == key.holder.name,
            data_keys.c.holder_id == key.holder_id,
            data_keys.c.wrapped == key.wrapped,
        )
        .values(wrapped=wrapped)
    )
    return result.rowcount == 1


def unkeyed_after(store: Store, holder: Holder, after: Any, limit: int) -> list[tuple[Any, bytes]]:
    """Up to ``limit`` of the holder's values stored before data keys (sealed with a
    configured key itself), by row id after ``after``: (row id, value)."""
    query = (
        select(holder.row_id, holder.value)
        .where(holder.value.is_not(None), ~exists().where(key_of(holder)))
        .order_by(holder.row_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(holder.row_id > after)
    with store.engine.connect() as conn:
        return [(row_id, value) for row_id, value in conn.execute(query)]


def give_key(conn: Connection, holder: Holder, row_id: Any, value: bytes, sealed: Sealed) -> bool:
    """Replace a value stored before data keys with the same value under a data key, unless
    the row changed since it was read (then it is left as it now is)."""
    result = conn.execute(
        update(holder.table)
        .where(holder.row_id == row_id, holder.value == value)
        .values({holder.value: sealed.token})
    )
    if result.rowcount != 1:
        return False
    add(conn, holder, {str(row_id): sealed.wrapped_key})
    return True


# -- scrubbing --------------------------------------------------------------------------------


def scrub(store: Store) -> bool:
    """Remove destroyed data keys' bytes from the database's own files; False if that could
    not be done now, to be tried again later.

    SQLite has zeroed them in the database file (``secure_delete``), but older copies of the
    pages stay in its write-ahead log: a checkpoint moves the log into the file and empties
    it. PostgreSQL keeps deleted rows until a vacuum, and a plain one leaves their bytes in the
    pages' free space: VACUUM FULL rewrites this small table into a new file (and ANALYZE keeps
    the planner's view of a table that churns this much current).
    """
    return _checkpoint(store) if store.is_sqlite else _rewrite(store)


def _checkpoint(store: Store) -> bool:
    connection = store.engine.raw_connection()  # no transaction: a checkpoint needs none
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SCRUB_WAIT_MS}")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result = cursor.fetchone()  # (busy, pages in the log, pages moved)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        connection.close()
    return result is not None and int(result[0]) == 0


def _rewrite(store: Store) -> bool:
    file = text(f"SELECT pg_relation_filenode('{data_keys.name}')")
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        before = conn.execute(file).scalar()
        conn.execute(text(f"SET lock_timeout = {SCRUB_WAIT_MS}"))
        try:
            conn.execute(text(f"VACUUM (FULL, ANALYZE) {data_keys.name}"))
        except OperationalError:  # the lock not granted in time, or the connection lost
            conn.invalidate()  # never back to the pool with this lock_timeout
            return False
        conn.execute(text("RESET lock_timeout"))
        rewritten = conn.execute(file).scalar() != before
    if not rewritten:  # PostgreSQL skips, with a mere warning, a table the user does not own
        log.warning(
            "scrub.skipped",
            problem="only the owner of the data_keys table may VACUUM FULL it",
            fix="make the bridge's database user its owner (run `bridge db upgrade` as it)",
        )
    return rewritten
