"""Engine set-up, transactions and schema state, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, make_url, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import BridgeError, SchemaError

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here, the driver the package installs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for an error message."""
    return make_url(engine_url(url)).render_as_string(hide_password=True)


def insert_or_skip(conn: Connection, table: Table, unique: list[str]) -> Insert:
    """An INSERT that skips rows whose ``unique`` columns already exist, on either database."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement: Insert = dialect.insert(table).on_conflict_do_nothing(index_elements=unique)
    return statement


def chunked(values: Iterable[T], size: int = 1000) -> Iterator[list[T]]:
    """``values`` in lists of ``size``: one ``IN`` list each, well under SQLite's limit on
    bound parameters."""
    batch: list[T] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Store:
    """One database: SQLite (WAL, foreign keys on) by default, PostgreSQL when shared."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _create_engine(engine_url(url))
        self.is_sqlite = self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self, serialize: str | None = None) -> Iterator[Connection]:
        """A transaction; with ``serialize``, one at a time across processes for that name.

        SQLite takes its write lock up front (``BEGIN IMMEDIATE``); PostgreSQL takes a
        transaction-scoped advisory lock. Either way, read-then-write sequences such as
        appending to a hash chain cannot interleave.
        """
        with self.engine.connect() as conn:
            if serialize and self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                if serialize and not self.is_sqlite:
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(serialize)}
                    )
                yield conn

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            reason = type(getattr(error, "orig", None) or error).__name__
            raise BridgeError(f"database {safe_url(self.url)} unreachable ({reason})") from None

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def require_current_schema(self) -> None:
        """Refuse to work on a database whose schema is older (or newer) than this code."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            state = "has no schema" if current is None else f"is at schema {current}"
            raise SchemaError(
                f"database {safe_url(self.url)} {state}, this version needs {head}; "
                "run `bridge db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Migrate to ``revision``; returns the revisions before and after."""
        before = self.current_revision()
        with self.engine.begin() as conn:
            config = self._alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return before, self.current_revision()

    def dispose(self) -> None:
        self.engine.dispose()

    @staticmethod
    def _alembic_config() -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine
