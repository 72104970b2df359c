"""Who leads, as the console's Today page reads it: never by taking the lock itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from bridge.store.db import Store
from bridge.store.leader import RUN_LOCK_SUFFIX, Holder, LeaderLock, holder


def test_the_postgresql_holder_is_the_session_holding_the_lock(postgres_url: str) -> None:
    leading, looking = Store(postgres_url), Store(postgres_url)
    lock = LeaderLock(leading)
    try:
        assert holder(looking) is None
        assert lock.try_lead()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            # This test's database only: other tests' syncs hold advisory locks of their own.
            [(pid,)] = admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        found = holder(looking)
        assert found is not None and found.pid == pid and found.since
        assert holder(looking, "another lock") is None
        assert lock.try_lead(), "reading took nothing from the leader"
        lock.release()
        assert holder(looking) is None
    finally:
        lock.release()
        leading.dispose()
        looking.dispose()


def test_the_sqlite_holder_is_the_live_process_in_the_lock_file(tmp_path: Path) -> None:
    database = tmp_path / "bridge.db"
    store = Store(f"sqlite:///{database}")
    lock_file = tmp_path / f"bridge.db{RUN_LOCK_SUFFIX}"
    try:
        assert holder(store) is None, "no daemon ever ran"
        lock_file.write_text(f"{os.getpid()}\n")
        assert holder(store) == Holder(os.getpid())
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        lock_file.write_text(gone.stdout)
        assert holder(store) is None, "the file outlived its daemon"
    finally:
        store.dispose()
