"""SQL for the sync: the lawful basis each subject's systems last agreed on, the ledger
of the sync's own writes, and the record of each run (for the console)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, tuple_

from bridge.store.db import Store, chunked, insert_or_skip
from bridge.store.tables import sync_runs, sync_state, sync_writes

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
