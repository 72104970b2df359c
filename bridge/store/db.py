"""Engine set-up, transactions and schema state, for SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    create_engine,
    event,
    inspect,
    make_url,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from bridge.errors import BridgeError, ConfigError, SchemaError
from bridge.store import notify

if TYPE_CHECKING:  # Alembic is imported by the calls that need it: it is slow to load.
    from alembic.config import Config
    from sqlalchemy.engine import URL

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA = "0012"
"""The schema this code needs: the newest migration's revision (tests/store/test_db.py holds
it to Alembic's head). Checking a database against it takes no Alembic, slow to load."""
T = TypeVar("T")


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here, the driver the package installs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def safe_url(url: str) -> str:
    """The URL with any password hidden, fit for an error message."""
    return make_url(engine_url(url)).render_as_string(hide_password=True)


SUPPORTED_BACKENDS = ("sqlite", "postgresql")
URL_FORMS = "use sqlite:///path/to/bridge.db or postgresql://user@host/database"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name the bridge's database, or None: it parses, names a supported
    backend, and its driver is installed and synchronous. The answer never repeats the URL,
    which may hold a password."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(engine_url(url))
    except ArgumentError:
        return f"not a database URL; {URL_FORMS}"
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        return f"{backend} is not supported; {URL_FORMS}"
    driver = parsed.drivername.partition("+")[2]
    instead = f"use {backend}:// without +{driver}"
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        return f"{backend} has no driver {driver!r}; {instead}"
    if dialect.is_async:
        return f"the driver {driver} is asynchronous, the bridge needs a synchronous one; {instead}"
    try:
        dialect.import_dbapi()
    except ImportError:
        fix = f"{instead}, or install {driver}" if driver else f"install {dialect.driver}"
        return f"the {backend} driver {dialect.driver} is not installed; {fix}"
    return None


def insert_or_skip(conn: Connection, table: Table, unique: list[str]) -> Insert:
    """An INSERT that skips rows whose ``unique`` columns already exist, on either database."""
    from sqlalchemy.dialects import postgresql, sqlite  # each dialect is slow to load

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


@dataclass
class AuditChain:
    """What a store's audit log is chained with: a key that never enters the database (None
    when the settings give none), and whether this process appended (a checkpoint is due)."""

    key: bytes | None = field(default=None, repr=False)
    appended: bool = False


AUDIT_CHAIN = "bridge_audit_chain"
"""The execution option every connection of a store carries its :class:`AuditChain` in, so
that code appending inside its own transaction chains with the store's key."""


class Store:
    """One database: SQLite (WAL, foreign keys on) by default, PostgreSQL when shared."""

    def __init__(self, url: str, audit_key: bytes | None = None) -> None:
        self.url = url
        if problem := url_problem(url):  # settings check it too; a Store may come without
            raise ConfigError([f"database_url: {problem}"])
        self.audit = AuditChain(audit_key)
        self.signals = notify.Signals()  # this process's waiters for new work
        self.engine = _create_engine(engine_url(url), {AUDIT_CHAIN: self.audit})
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._file = _sqlite_file(self.engine.url) if self.is_sqlite else None

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
            conn.info[notify.PENDING] = set()  # what this transaction names (store.notify)
            with conn.begin():
                if serialize and not self.is_sqlite:
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(serialize)}
                    )
                yield conn
            named = conn.info.pop(notify.PENDING, set())
        if named:  # committed: wake this process's waiters (PostgreSQL's NOTIFY went too)
            self.signals.fire(sorted(named))

    @property
    def absent(self) -> bool:
        """A SQLite file that does not exist yet (``bridge db upgrade`` creates it)."""
        return self._file is not None and not self._file.exists()

    def ping(self, *, create: bool = True) -> None:
        """Connect once. A SQLite file that cannot be opened or created (no such directory,
        permission denied) is configuration, exit 2; any other failure is exit 1, naming the
        driver's reason. Without ``create`` a SQLite file not there yet is left so
        (``absent``): there is nothing to connect to, and ``bridge check`` creates nothing."""
        if self._file is not None:
            _sqlite_file_usable(self._file, create=create)
            if self.absent:
                return
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            # The driver's own words (first line): SQLAlchemy's would add the statement.
            cause = getattr(error, "orig", None)
            lines = [line.strip() for line in str(cause or "").splitlines() if line.strip()]
            reason = lines[0][:200] if lines else type(cause or error).__name__
            raise BridgeError(f"database {safe_url(self.url)} unreachable: {reason}") from None

    def current_revision(self) -> str | None:
        """The database's schema revision, None before the first upgrade; read as Alembic
        records it, without loading Alembic."""
        if self.absent:
            return None  # connecting would create the file
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(found) > 1:
            raise SchemaError(f"database {safe_url(self.url)} has several schema heads: {found}")
        return str(found[0]) if found else None

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def require_current_schema(self) -> None:
        """Refuse to work on a database whose schema is older (or newer) than this code."""
        current, head = self.current_revision(), SCHEMA
        if current != head:
            state = "has no schema" if current is None else f"is at schema {current}"
            raise SchemaError(
                f"database {safe_url(self.url)} {state}, this version needs {head}; "
                "run `bridge db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Migrate to ``revision``; returns the revisions before and after."""
        from alembic import command

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
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return config


def _sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names; None for in-memory databases and ``file:`` URIs."""
    database = url.database
    if not database or database == ":memory:" or url.query.get("uri"):
        return None
    return Path(database)


def _sqlite_file_usable(path: Path, *, create: bool = True) -> None:
    """Report a database file the settings name but SQLite cannot use, with its cause, as
    configuration; create it (unless ``create`` is off) where it could be. Looks, never
    opens: closing a descriptor of a database file this process has open would drop
    SQLite's locks on it (and ``/readyz`` pings a live store). In-memory databases and
    ``file:`` URIs (no ``_sqlite_file``) are left to SQLite."""
    parent = path.parent
    problem, fix = None, ""
    if path.is_dir():
        problem = "it is a directory, not a file"
    elif path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            problem, fix = "permission denied", f"let the bridge's user write it and {parent}, or "
    elif parent.exists() and not parent.is_dir():
        problem = f"{parent} is not a directory"
    elif not parent.is_dir():
        problem, fix = f"no such directory {parent}", "create it, or "
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem, fix = "permission denied", f"let the bridge's user write {parent}, or "
    elif create:  # create it, as SQLite would: a file that does not exist is open nowhere
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as error:
            problem = f"cannot create it ({error.strerror or type(error).__name__})"
    if problem is None:
        return
    raise ConfigError(
        [
            f"database_url: SQLite database {path}: {problem}; {fix}point database_url "
            "(BRIDGE_DATABASE_URL) at a file in a writable directory"
        ]
    )


SIDE_FILES = ("-wal", "-shm")
BUSY_TIMEOUT_MS = 30_000  # how long a SQLite connection waits for a lock before giving up


def _owner_only(*paths: Path) -> None:
    """Take group and other permissions off SQLite's files: they hold the bridge's data.
    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode, so a database an
    earlier version created 0644 would spread it. By path, never
    by opening them: closing a descriptor of a database file this process has open would drop
    SQLite's locks on it. A file missing, or owned by another user, is left as it is."""
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                os.chmod(path, mode & 0o700)
        except OSError:
            continue


def _create_engine(url: str, options: dict[str, Any]) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, execution_options=options)
    engine = create_engine(url, connect_args={"timeout": 30}, execution_options=options)
    private = _sqlite_file(engine.url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Deleted content is overwritten with zeros, not left in free space (a destroyed data
        # key must not stay readable in the file: store.data_keys.scrub).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()
        if private is not None:  # now the WAL and shared-memory files exist too
            _owner_only(private, *(private.with_name(private.name + end) for end in SIDE_FILES))

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine
