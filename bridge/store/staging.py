"""SQL for a sync's staged records: kept sealed, linked into people by the pseudonyms of their
addresses, and read back a partition of whole people at a time (``services.staging``)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, delete, func, select, tuple_, update

from bridge.store.db import Store, chunked
from bridge.store.sync import locked_batches
from bridge.store.tables import sync_staged, sync_staged_refs

RecordKey = tuple[str, str, str]  # system, object type, record id


@contextmanager
def holding(store: Store, run: str) -> Iterator[None]:
    """The run's staging area, locked while the block runs and emptied as it ends; first, the
    rows of every run whose lock is free (its process died) are deleted: sealed under a key
    that died with it, no one can open them."""
    with locked_batches(store, [run]):
        _drop_abandoned(store)
        try:
            yield
        finally:
            with store.transaction() as conn:
                _drop(conn, run)


def _drop_abandoned(store: Store) -> None:
    with store.engine.connect() as conn:
        runs = list(conn.execute(select(sync_staged.c.run).distinct()).scalars())
    if runs:
        with locked_batches(store, runs) as dead, store.transaction() as conn:
            for run in dead:
                _drop(conn, run)


def _drop(conn: Connection, run: str) -> None:
    conn.execute(delete(sync_staged_refs).where(sync_staged_refs.c.run == run))
    conn.execute(delete(sync_staged).where(sync_staged.c.run == run))


def staged(store: Store, run: str, keys: Collection[RecordKey]) -> set[RecordKey]:
    """Which of these records the run holds already."""
    columns = (sync_staged.c.system, sync_staged.c.object_type, sync_staged.c.record_id)
    found: set[RecordKey] = set()
    with store.engine.connect() as conn:
        for chunk in chunked(keys, 300):
            query = select(*columns).where(sync_staged.c.run == run, tuple_(*columns).in_(chunk))
            found |= {(row[0], row[1], row[2]) for row in conn.execute(query)}
    return found


def stage(
    conn: Connection,
    run: str,
    rows: Sequence[Mapping[str, Any]],
    refs: Sequence[tuple[int, str]],
) -> None:
    """Records (``seq``, key, ``part``, ``sealed``) and their pseudonyms (``seq``, ref)."""
    if rows:
        conn.execute(sync_staged.insert(), [{**row, "run": run} for row in rows])
    if refs:
        conn.execute(
            sync_staged_refs.insert(),
            [{"run": run, "seq": seq, "subject_ref": ref} for seq, ref in refs],
        )


def link(store: Store, run: str) -> int:
    """Give every record of a person the least ``part`` of any record it shares a pseudonym
    with, until none changes: then each person's records share one ``part`` (the least
    pseudonym of all their addresses). Returns the rounds it took; each lowers a part by at
    least one link, so a person linked through k records settles within k rounds."""
    mine, theirs, other = sync_staged_refs.alias(), sync_staged_refs.alias(), sync_staged.alias()
    # Nested INs, not joins: they keep every database to index lookups from the record out
    # (joined, SQLite without statistics scans a whole run's refs for each record).
    its_refs = (
        select(mine.c.subject_ref)
        .where(mine.c.run == run, mine.c.seq == sync_staged.c.seq)
        .correlate(sync_staged)  # the record being updated, two queries out
    )
    linked = select(theirs.c.seq).where(theirs.c.run == run, theirs.c.subject_ref.in_(its_refs))
    least = (
        select(func.min(other.c.part))
        .where(other.c.run == run, other.c.seq.in_(linked))
        .scalar_subquery()
    )
    lower = (
        update(sync_staged)
        .where(sync_staged.c.run == run, sync_staged.c.part > least)
        .values(part=least)
        .execution_options(synchronize_session=False)
    )
    rounds = 0
    while True:
        rounds += 1
        with store.transaction() as conn:
            if not conn.execute(lower).rowcount:
                return rounds


def partitions(store: Store, run: str, people: int) -> Iterator[list[bytes]]:
    """The sealed records, ``people`` parts (people) at a time, in the order of their parts."""
    after = ""
    while True:
        with store.engine.connect() as conn:
            query = (
                select(sync_staged.c.part)
                .where(sync_staged.c.run == run, sync_staged.c.part > after)
                .group_by(sync_staged.c.part)
                .order_by(sync_staged.c.part)
                .limit(people)
            )
            parts = list(conn.execute(query).scalars())
            if not parts:
                return
            upto = parts[-1]
            query = select(sync_staged.c.sealed).where(
                sync_staged.c.run == run, sync_staged.c.part > after, sync_staged.c.part <= upto
            )
            sealed = list(conn.execute(query).scalars())
        after = upto
        yield sealed
