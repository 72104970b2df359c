"""Which daemon instance schedules the leader-only jobs (sync, retention): one at a time.

PostgreSQL: a session advisory lock held on one dedicated connection, released by the server
when the leader's connection closes (TCP keepalives bound a vanished host to about half a
minute). SQLite: one instance by design, which always leads (ARCHITECTURE.md, "Several
instances").
"""

from __future__ import annotations

from contextlib import suppress

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from bridge.logs import get_logger
from bridge.store.db import Store, _lock_key

log = get_logger("bridge.leader")
NAME = "bridge.scheduler.leader"
# libpq: give up connecting after 5 s; notice a dead server within about 25 s.
CLIENT_TIMEOUTS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}
# The server side: notice a dead leader host (and release its lock) within about 25 s.
SERVER_KEEPALIVES = (
    "tcp_keepalives_idle = 10",
    "tcp_keepalives_interval = 5",
    "tcp_keepalives_count = 3",
)


class LeaderLock:
    """Leadership as a PostgreSQL session advisory lock; on SQLite, always the leader."""

    def __init__(self, store: Store, name: str = NAME) -> None:
        self._sqlite = store.is_sqlite
        self._key = _lock_key(name)
        # Its own engine without a pool: closing the connection must end the session (and so
        # release the lock), never park it, lock held, in a pool.
        self._engine: Engine | None = None
        if not self._sqlite:
            self._engine = create_engine(
                store.engine.url, poolclass=NullPool, connect_args=CLIENT_TIMEOUTS
            )
        self._conn: Connection | None = None

    @property
    def leading(self) -> bool:
        return self._sqlite or self._conn is not None

    def try_lead(self) -> bool:
        """Lead if possible; True while this instance leads. Call it again and again: a leader
        whose connection died has lost the lock (another instance may hold it now), and this
        says False once before trying to take it again."""
        if self._engine is None:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
            except SQLAlchemyError as error:
                log.warning("leader.connection_lost", error=type(error).__name__)
                self._close()
                return False
            return True
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as error:
            log.warning("leader.database_unreachable", error=type(error).__name__)
            return False
        try:
            for setting in SERVER_KEEPALIVES:
                conn.execute(text(f"SET {setting}"))
            got = bool(conn.execute(select(func.pg_try_advisory_lock(self._key))).scalar())
        except SQLAlchemyError as error:
            log.warning("leader.lock_failed", error=type(error).__name__)
            got = False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        """Stop leading: unlock and close the session, so a follower can take over at once."""
        if self._conn is not None:
            with suppress(SQLAlchemyError):  # if the session is gone, so is the lock
                self._conn.execute(select(func.pg_advisory_unlock(self._key)))
            self._close()
        if self._engine is not None:
            self._engine.dispose()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(SQLAlchemyError):
                conn.close()
