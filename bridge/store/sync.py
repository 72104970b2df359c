"""SQL for the sync: the lawful basis each subject's systems last agreed on, the ledger
of the sync's own writes, the intents of the batches being written, and the record of each
run (for the console)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import uuid
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, create_engine, delete, func, select, text, tuple_
from sqlalchemy.pool import NullPool

from bridge.store.db import Store, _lock_key, _sqlite_file, chunked, insert_or_skip
from bridge.store.leader import CLIENT_TIMEOUTS, SERVER_KEEPALIVES
from bridge.store.tables import sync_intents, sync_runs, sync_state, sync_writes

FieldKey = tuple[str, str, str, str]  # system, object type, record id, field
LEDGER_KEY = ["system", "object_type", "record_id", "field"]


def agreed_bases(store: Store, refs: Collection[str]) -> dict[str, str]:
    """The lawful basis last agreed for each of these subjects that has one."""
    found: dict[str, str] = {}
    with store.engine.connect() as conn:
        for chunk in chunked(refs):
            query = select(sync_state).where(sync_state.c.subject_ref.in_(chunk))
            found.update((row.subject_ref, row.lawful_basis) for row in conn.execute(query))
    return found


def set_agreed_bases(conn: Connection, bases: Mapping[str, str], now: str) -> None:
    for chunk in chunked(bases):
        conn.execute(delete(sync_state).where(sync_state.c.subject_ref.in_(chunk)))
        conn.execute(
            sync_state.insert(),
            [{"subject_ref": ref, "lawful_basis": bases[ref], "agreed_at": now} for ref in chunk],
        )


def ledger(store: Store, records: Collection[tuple[str, str, str]]) -> dict[FieldKey, Any]:
    """The ledger rows of these records (system, object type, id), by record and field."""
    found: dict[FieldKey, Any] = {}
    record = tuple_(sync_writes.c.system, sync_writes.c.object_type, sync_writes.c.record_id)
    with store.engine.connect() as conn:
        for chunk in chunked(records, 500):
            for row in conn.execute(select(sync_writes).where(record.in_(chunk))).mappings():
                found[(row["system"], row["object_type"], row["record_id"], row["field"])] = row
    return found


def written_near(
    store: Store, record: tuple[str, str, str], start: str, end: str
) -> list[dict[str, Any]]:
    """The sync's writes to one record between two times: what an event then may echo."""
    system, object_type, record_id = record
    query = select(sync_writes).where(
        and_(
            sync_writes.c.system == system,
            sync_writes.c.object_type == object_type,
            sync_writes.c.record_id == record_id,
            sync_writes.c.outcome == "done",
            sync_writes.c.written_at >= start,
            sync_writes.c.written_at <= end,
        )
    )
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def key_of(row: Mapping[str, Any]) -> FieldKey:
    return (row["system"], row["object_type"], row["record_id"], row["field"])


def forget_writes(conn: Connection, keys: Sequence[FieldKey]) -> None:
    field = tuple_(*(sync_writes.c[k] for k in LEDGER_KEY))
    for chunk in chunked(keys, 500):
        conn.execute(delete(sync_writes).where(field.in_(chunk)))


def record_writes(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the ledger rows of these fields with the outcomes just had."""
    if not rows:
        return
    forget_writes(conn, [key_of(row) for row in rows])
    # Skip rows another instance wrote meanwhile: the same write, the same act.
    conn.execute(insert_or_skip(conn, sync_writes, LEDGER_KEY), list(rows))


def writes_with_outcome(store: Store, outcome: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """How many ledger rows have ``outcome``, and the newest ``limit`` of them: record keys,
    fields and values, never a person's data."""
    where = sync_writes.c.outcome == outcome
    newest = sync_writes.select().where(where).order_by(sync_writes.c.written_at.desc())
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(sync_writes).where(where)).scalar()
        rows = [dict(row) for row in conn.execute(newest.limit(limit)).mappings()]
    return int(total or 0), rows


# -- intents --------------------------------------------------------------------------------


@contextmanager
def intending(store: Store, rows: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Commit one batch's intents (the changes it is about to write) under a lock of the
    batch's own, held until the block ends; yields the batch's id. The block writes, then
    audits the outcomes and deletes the intents in one transaction (``forget_intents``): so
    intents whose lock is free belong to a batch cut short, whatever cut it."""
    batch = uuid.uuid4().hex
    with locked_batches(store, [batch]):  # a fresh id: no one else holds it
        with store.transaction() as conn:
            conn.execute(sync_intents.insert(), [{**row, "batch": batch} for row in rows])
        yield batch


def forget_intents(conn: Connection, batches: Collection[str]) -> None:
    """Delete these batches' intents: their outcomes are audited in this transaction."""
    for chunk in chunked(batches, 500):
        conn.execute(delete(sync_intents).where(sync_intents.c.batch.in_(chunk)))


@contextmanager
def orphaned_intents(store: Store) -> Iterator[list[dict[str, Any]]]:
    """The intents of every batch cut short (its lock free: the process that wrote it died,
    or raised before auditing), oldest first; each such batch stays locked until the block
    ends, so that no other process recovers it too. Read again once locked: a batch
    settled meanwhile has none left."""
    with store.engine.connect() as conn:
        batches = list(conn.execute(select(sync_intents.c.batch).distinct()).scalars())
    if not batches:
        yield []
        return
    with locked_batches(store, batches) as mine:
        found: list[dict[str, Any]] = []
        with store.engine.connect() as conn:
            for chunk in chunked(mine, 500):
                query = select(sync_intents).where(sync_intents.c.batch.in_(chunk))
                found += [dict(row) for row in conn.execute(query).mappings()]
        yield sorted(found, key=lambda row: row["id"])


@contextmanager
def locked_batches(store: Store, batches: Sequence[str]) -> Iterator[list[str]]:
    """Lock each of these batches that no one holds, without waiting; yields those locked,
    held until the block ends, or until the process dies, however it dies. A batch is an
    apply batch's intents, or a run's staged records (``store.staging``): both named by a
    fresh uuid.

    PostgreSQL: session advisory locks, on a connection of their own outside the store's
    pool (closing it ends the session, and so releases them; a writer waiting on a vendor
    holds none of the pool's connections). SQLite: an ``flock`` on a file per batch beside
    the database (processes sharing a SQLite file share its host); the holder removes it.
    """
    if store.is_sqlite:
        with ExitStack() as stack:
            yield [b for b in batches if stack.enter_context(_file_lock(_lock_path(store, b)))]
        return
    with _lock_engine(store).connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        for setting in SERVER_KEEPALIVES:  # a vanished host's locks go within about 25 s
            conn.execute(text(f"SET {setting}"))
        lock = func.pg_try_advisory_lock
        yield [b for b in batches if conn.execute(select(lock(_batch_key(b)))).scalar()]


_LOCK_ENGINES: weakref.WeakKeyDictionary[Store, Engine] = weakref.WeakKeyDictionary()


def _lock_engine(store: Store) -> Engine:
    """One engine without a pool per store, for the batch locks (as the leader lock's)."""
    engine = _LOCK_ENGINES.get(store)
    if engine is None:
        engine = create_engine(store.engine.url, poolclass=NullPool, connect_args=CLIENT_TIMEOUTS)
        _LOCK_ENGINES[store] = engine
    return engine


def _batch_key(batch: str) -> int:
    return _lock_key(f"bridge.sync.intents:{batch}")


def _lock_path(store: Store, batch: str) -> Path:
    """Beside the database file; for a database in memory, in the temporary directory."""
    database = _sqlite_file(store.engine.url)
    if database is None:
        return Path(tempfile.gettempdir()) / f"bridge-intents-{batch}.lock"
    database = database.resolve()  # one lock file whatever path or link names it
    return database.with_name(f"{database.name}.intents-{batch}.lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` if free (True), released when the block ends; the
    holder removes the file first (a file missing is a lock no one holds)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


# -- runs ------------------------------------------------------------------------------------


def record_run(conn: Connection, run: Mapping[str, Any]) -> None:
    """One finished run: ``counts`` (the report's counts; ``error``, the class of an error no
    CRM raised) and ``systems`` (per system: records read and its error, if any) as JSON."""
    row = {**run, "counts": json.dumps(run["counts"]), "systems": json.dumps(run["systems"])}
    conn.execute(sync_runs.insert().values(**row))


def runs(
    store: Store, limit: int, *, dry_run: bool | None = None, outcome: str | None = None
) -> list[dict[str, Any]]:
    """The newest runs first (by when they started), their JSON read back."""
    query = sync_runs.select().order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc())
    if dry_run is not None:
        query = query.where(sync_runs.c.dry_run == int(dry_run))
    if outcome is not None:
        query = query.where(sync_runs.c.outcome == outcome)
    with store.engine.connect() as conn:
        found = [dict(row) for row in conn.execute(query.limit(limit)).mappings()]
    for row in found:
        row["counts"], row["systems"] = json.loads(row["counts"]), json.loads(row["systems"])
        row["full"], row["dry_run"] = bool(row["full"]), bool(row["dry_run"])
    return found
