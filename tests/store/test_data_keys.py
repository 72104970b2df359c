"""Data keys on both databases: one per held value, destroyed with it, and scrubbed from the
database's own files (SQLite's WAL, PostgreSQL's dead rows)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, make_url, select, text

from bridge.sealing import Keyring
from bridge.store import data_keys, inbox, tables
from bridge.store.db import Store

KEYRING = Keyring([Fernet.generate_key()])


def event(key: str, value: dict[str, str]) -> dict[str, object]:
    return {
        "source": "hubspot", "event_key": key, "event_type": "contact.privacyDeletion",
        "kind": "deletion", "received_at": "2026-12-04T10:00:00.000000+00:00",
        "payload": KEYRING.seal(json.dumps(value).encode()),
    }  # fmt: skip


def key_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.data_keys)).scalar_one())


def claim_all(store: Store) -> list[inbox.InboxRow]:
    return inbox.claim(store, {"deletion"}, "2026-12-04T11:00", "2026-12-04T11:05", 100)


def test_one_data_key_per_stored_event_none_for_a_duplicate_and_gone_when_finished(
    store: Store,
) -> None:
    with store.transaction() as conn:
        assert inbox.add(conn, [event("a", {"n": "1"}), event("b", {}), event("a", {})]) == [
            True, True, False,
        ]  # fmt: skip
    assert key_count(store) == 2
    rows = {row.event_key: row for row in claim_all(store)}
    opened = KEYRING.open("inbox event", rows["a"].payload or b"", rows["a"].wrapped_key)
    assert json.loads(opened) == {"n": "1"}

    inbox.finish(store, [rows["a"].id], "2026-12-04T11:01")
    with store.transaction() as conn:  # delivered again after it was finished
        assert inbox.add(conn, [event("a", {})]) == [False]
    assert key_count(store) == 1
    done = next(r for r in inbox.all_rows(store) if r["event_key"] == "a")
    assert done["status"] == "done"
    with store.engine.connect() as conn:
        query = select(tables.inbox.c.payload).where(tables.inbox.c.id == done["id"])
        assert conn.execute(query).scalar() is None


def test_a_scrub_leaves_no_destroyed_key_in_the_database_files(store: Store) -> None:
    sealed = KEYRING.seal(b'{"email": "ada@example.com"}')
    with store.transaction() as conn:
        inbox.add(conn, [event("a", {}) | {"payload": sealed}])
    [row] = claim_all(store)
    inbox.finish(store, [row.id], "2026-12-04T11:01")
    assert sealed.wrapped_key in database_bytes(store)  # destroyed, but still in the files
    assert data_keys.scrub(store)
    assert sealed.wrapped_key not in database_bytes(store)


def test_rewrapping_and_converting_leave_a_row_changed_meanwhile_as_it_now_is(
    store: Store,
) -> None:
    with store.transaction() as conn:
        inbox.add(conn, [event("a", {})])
    [key] = data_keys.keys_after(store, None, 10)
    with store.transaction() as conn:
        data_keys.replace(conn, data_keys.INBOX, key.holder_id, b"sealed anew meanwhile")
        assert not data_keys.rewrap(conn, key, b"rewrapped from what was read")
    with store.engine.connect() as conn:
        assert conn.execute(select(tables.data_keys.c.wrapped)).scalar() == (
            b"sealed anew meanwhile"
        )
        row_id = conn.execute(select(tables.inbox.c.id)).scalar()
    with store.transaction() as conn:
        other = KEYRING.seal(b"{}")
        assert not data_keys.give_key(conn, data_keys.INBOX, row_id, b"not its value", other)
    assert key_count(store) == 1


def database_bytes(store: Store) -> bytes:
    """Every byte of the database's files as they are on disk: SQLite's file and its WAL, or
    the files of PostgreSQL's data key table (after a checkpoint writes its pages out)."""
    if store.is_sqlite:
        path = Path(store.engine.url.database or "")
        files = [path, path.with_name(path.name + "-wal")]
        return b"".join(p.read_bytes() for p in files if p.exists())
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))
        return bytes(
            conn.execute(
                text("SELECT pg_read_binary_file(pg_relation_filepath('data_keys'))")
            ).scalar_one()
        )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_scrub_the_database_user_may_not_do_is_not_taken_for_done(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL skips VACUUM of a table the user does not own with a mere warning."""
    role = f"bridge_reader_{uuid.uuid4().hex[:8]}"
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
    other = Store(make_url(str(store.url)).set(username=role).render_as_string(False))
    try:
        assert not data_keys.scrub(other)
        assert "only the owner of the data_keys table may VACUUM FULL it" in caplog.text
        assert data_keys.scrub(store)
    finally:
        other.dispose()
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
