"""SQL for what the bridge has seen of people: the record index, re-appearances, cursors."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_, update

from bridge.store.db import Store, insert_or_skip
from bridge.store.tables import cursors, reappearances, record_index

RecordKey = tuple[str, str, str]  # system, object type, record id
INDEX_KEY = ["system", "object_type", "record_id", "subject_ref"]


def remember(conn: Connection, seen: Mapping[RecordKey, Collection[str]], now: str) -> None:
    """These records now hold exactly these pseudonyms (their emails' ``subject_ref``): one
    delete and one insert for the whole batch."""
    if not seen:
        return
    record = tuple_(record_index.c.system, record_index.c.object_type, record_index.c.record_id)
    conn.execute(delete(record_index).where(record.in_(list(seen))))
    rows = [
        {"system": system, "object_type": object_type, "record_id": record_id,
         "subject_ref": ref, "seen_at": now}
        for (system, object_type, record_id), refs in seen.items()
        for ref in refs
    ]  # fmt: skip
    if rows:  # skip rows another instance inserted meanwhile
        conn.execute(insert_or_skip(conn, record_index, INDEX_KEY), rows)


def refs_of(store: Store, key: RecordKey) -> set[str]:
    system, object_type, record_id = key
    query = select(record_index.c.subject_ref).where(
        record_index.c.system == system,
        record_index.c.object_type == object_type,
        record_index.c.record_id == record_id,
    )
    with store.engine.connect() as conn:
        return {row[0] for row in conn.execute(query)}


def records_of(store: Store, refs: Collection[str]) -> set[RecordKey]:
    """Every record seen holding any of these pseudonyms."""
    columns = (record_index.c.system, record_index.c.object_type, record_index.c.record_id)
    query = select(*columns).where(record_index.c.subject_ref.in_(list(refs)))
    with store.engine.connect() as conn:
        return {(row[0], row[1], row[2]) for row in conn.execute(query)}


def flag_reappearance(conn: Connection, ref: str, key: RecordKey, now: str) -> int | None:
    """Record an erased person found again; the row id, or None if already flagged."""
    system, object_type, record_id = key
    row = {"subject_ref": ref, "system": system, "object_type": object_type,
           "record_id": record_id, "detected_at": now}  # fmt: skip
    result = conn.execute(
        insert_or_skip(conn, reappearances, INDEX_KEY).values(**row).returning(reappearances.c.id)
    )
    return result.scalar()


def link_reappearance(conn: Connection, reappearance_id: int, request_id: str) -> None:
    query = update(reappearances).where(reappearances.c.id == reappearance_id)
    conn.execute(query.values(request_id=request_id))


def all_reappearances(store: Store) -> list[dict[str, Any]]:
    query = select(reappearances).order_by(reappearances.c.id)
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def cursor(store: Store, name: str) -> str | None:
    query = select(cursors.c.value).where(cursors.c.name == name)
    with store.engine.connect() as conn:
        return conn.execute(query).scalar()


def set_cursor(conn: Connection, name: str, value: str) -> None:
    conn.execute(delete(cursors).where(cursors.c.name == name))
    conn.execute(insert(cursors).values(name=name, value=value))
