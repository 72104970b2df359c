"""The store: migrations, schema checks and connection set-up on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from bridge.errors import BridgeError, SchemaError
from bridge.store.db import SCHEMA, Store, engine_url, safe_url
from bridge.store.tables import metadata


def test_upgrade_creates_the_schema_and_is_idempotent(database_url: str) -> None:
    store = Store(database_url)
    assert store.current_revision() is None
    before, after = store.upgrade()
    assert (before, after) == (None, store.head_revision())
    assert store.upgrade() == (after, after)
    assert "audit_log" in inspect(store.engine).get_table_names()
    store.require_current_schema()
    store.dispose()


def test_the_schema_this_code_needs_is_the_newest_migration(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/b.db")
    assert store.head_revision() == SCHEMA, "a new migration: set SCHEMA in bridge/store/db.py"
    store.dispose()


def test_an_old_schema_is_refused_with_the_fix(database_url: str) -> None:
    store = Store(database_url)
    with pytest.raises(SchemaError, match=r"has no schema.*run `bridge db upgrade`"):
        store.require_current_schema()
    store.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_secure_delete(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/b.db")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
    store.dispose()


def test_unreachable_database_is_one_line_without_the_password() -> None:
    store = Store("postgresql://bridge:hunter2@127.0.0.1:1/nowhere")
    with pytest.raises(BridgeError) as caught:
        store.ping()
    message = str(caught.value)
    assert "unreachable" in message and "hunter2" not in message and "\n" not in message


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    assert engine_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("sqlite:///./bridge.db") == "sqlite:///./bridge.db"
    assert "***" in safe_url("postgresql://u:pw@h/db")


def test_the_migrations_build_exactly_the_tables_the_code_declares(store: Store) -> None:
    """A column added to ``tables.py`` without a migration (or the reverse) fails here."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        differences = compare_metadata(context, metadata)
    assert differences == []
