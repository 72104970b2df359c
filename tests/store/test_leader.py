"""The leader lock: one leader per PostgreSQL database, taken over when the holder's session
ends; on SQLite (one instance by design) always the leader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bridge.store.db import Store
from bridge.store.leader import LeaderLock


@pytest.fixture
def pg_stores(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    """Two instances' stores on one PostgreSQL database."""
    first, second = Store(postgres_url), Store(postgres_url)
    yield first, second
    first.dispose()
    second.dispose()


def lock_holders(url: str) -> list[int]:
    """Backend pids holding an advisory lock in this test's database, as PostgreSQL itself
    reports them (other tests' syncs hold advisory locks in databases of their own)."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return [row[0] for row in rows]


def test_only_one_instance_leads_and_release_hands_over(
    pg_stores: tuple[Store, Store], postgres_url: str
) -> None:
    first, second = LeaderLock(pg_stores[0]), LeaderLock(pg_stores[1])
    assert first.try_lead()
    assert not second.try_lead()
    assert first.try_lead() and first.try_lead()  # idempotent: still the one holder
    assert not second.try_lead()
    assert len(lock_holders(postgres_url)) == 1

    first.release()
    assert not first.leading
    assert second.try_lead()
    assert not first.try_lead()
    second.release()
    assert lock_holders(postgres_url) == []


def test_a_leader_whose_session_is_killed_loses_the_lock_to_the_next(
    pg_stores: tuple[Store, Store], postgres_url: str
) -> None:
    first, second = LeaderLock(pg_stores[0]), LeaderLock(pg_stores[1])
    assert first.try_lead()
    [holder] = lock_holders(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [holder]).fetchone() == (True,)

    assert second.try_lead()  # the server released the dead session's lock
    assert not first.try_lead()  # the old leader notices: its connection is gone
    assert not first.leading
    assert not first.try_lead()  # and cannot take it back while the new leader holds it
    assert second.try_lead()
    second.release()
    assert first.try_lead()
    first.release()


def test_on_sqlite_the_single_instance_always_leads(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'bridge.db'}")
    lock = LeaderLock(store)
    assert lock.try_lead() and lock.leading
    lock.release()
    assert lock.try_lead()
    store.dispose()
