"""Which daemon instance schedules the leader-only jobs (sync, retention): one at a time.

PostgreSQL: a session advisory lock held on one dedicated connection, released by the server
when the leader's connection closes (TCP keepalives bound a vanished host to about half a
minute). SQLite: one instance by design, which always leads (ARCHITECTURE.md, "Several
instances"); :func:`hold_sqlite_database` makes it the only one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from bridge.errors import ConfigError
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
RUN_LOCK_SUFFIX = ".run.lock"
_held_run_locks: list[int] = []  # descriptors kept open, so their locks last the process's life


def hold_sqlite_database(store: Store) -> Path | None:
    """On SQLite, make this process the one daemon on its database file, for its whole life.

    An exclusive, non-blocking ``flock`` on ``<database>.run.lock`` beside the file, never
    released: the kernel drops it when the process ends, however it ends (SIGKILL too). A
    separate file, because closing any descriptor of a SQLite database file drops this
    process's SQLite locks on it. The lock file holds the holder's pid, for the message a
    second daemon gets (:class:`ConfigError`: exit 2, naming PostgreSQL as the way to run
    several). Returns the lock file; None where there is nothing to hold (PostgreSQL, an
    in-memory database, a ``file:`` URI).
    """
    url = store.engine.url
    if not store.is_sqlite or not url.database or url.database == ":memory:":
        return None
    if url.query.get("uri"):
        return None
    database = Path(url.database).resolve()  # one lock file whatever path or link names it
    lock = database.with_name(database.name + RUN_LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            [f"database_url: cannot create the lock file {lock} ({reason}); "
             "let the bridge's user write its directory"]
        ) from None  # fmt: skip
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd)
        os.close(fd)
        pid = f" (pid {holder})" if holder else ""
        raise ConfigError(
            [f"another bridge run already uses {database}{pid}; run one daemon per SQLite "
             "database, or use PostgreSQL (BRIDGE_DATABASE_URL=postgresql://...) to run several"]
        ) from None  # fmt: skip
    except OSError as error:  # a file system without flock: refuse rather than run unguarded
        os.close(fd)
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            [f"database_url: cannot lock {lock} ({reason}); put the SQLite database on a "
             "local file system"]
        ) from None  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held_run_locks.append(fd)
    return lock


def _pid_in(fd: int) -> int | None:
    """The pid a lock file's holder wrote; None if it has not written it yet."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


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


@dataclass(frozen=True)
class Holder:
    """Who holds the leader lock, as far as the database or the lock file tells: the
    process (on PostgreSQL, its server backend's) and, on PostgreSQL, where it connects from
    and since when."""

    pid: int
    address: str | None = None
    since: str | None = None


def holder(store: Store, name: str = NAME) -> Holder | None:
    """The instance leading now; None when none does (or it cannot be told). Read-only:
    it never takes the lock, not even for a moment, so it cannot stand in a daemon's way."""
    if store.is_sqlite:
        return _sqlite_holder(store)
    # A bigint advisory lock appears in pg_locks as its high and low 32 bits, objsubid 1.
    key = _lock_key(name) & 0xFFFFFFFFFFFFFFFF
    query = text(
        "SELECT a.pid, host(a.client_addr) AS address, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND l.classid::bigint = :high AND l.objid::bigint = :low "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with store.engine.connect() as conn:
        row = conn.execute(query, {"high": key >> 32, "low": key & 0xFFFFFFFF}).first()
    if row is None:
        return None
    since = row.backend_start.isoformat() if row.backend_start else None
    return Holder(int(row.pid), row.address, since)


def _sqlite_holder(store: Store) -> Holder | None:
    """The pid a ``bridge run`` on this file wrote into its lock file, if that process lives."""
    url = store.engine.url
    if not url.database or url.database == ":memory:" or url.query.get("uri"):
        return None
    database = Path(url.database).resolve()
    try:
        fd = os.open(database.with_name(database.name + RUN_LOCK_SUFFIX), os.O_RDONLY)
    except OSError:
        return None
    try:
        pid = _pid_in(fd)
    finally:
        os.close(fd)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # the file outlived its daemon
    except PermissionError:
        pass  # alive, under another user
    return Holder(pid)
