"""New work, said at once: the rows that make work (an inbox event, an erasure request) name
their channel inside their transaction, and whoever waits for that work is woken once the
transaction commits.

In this process, :class:`Signals` calls the subscribers after the commit (on either database);
across processes, PostgreSQL's ``NOTIFY`` goes out with the commit and a :class:`Listener` on
a connection of its own hears it. Either may be missed (a listener reconnecting, a process on
SQLite writing from elsewhere): the jobs keep polling as before, and a wake only comes sooner.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable

from sqlalchemy import Connection, make_url, text

from bridge.logs import get_logger

log = get_logger("bridge.notify")

INBOX = "bridge_inbox"
ERASURE = "bridge_erasure"
CHANNELS = (INBOX, ERASURE)

PENDING = "bridge_notify_pending"
"""The key, in a connection's ``info``, of the channels its open transaction named."""


def notify(conn: Connection, channel: str) -> None:
    """Wake ``channel``'s waiters when this transaction commits (nobody, if it rolls back).
    Must be called inside :meth:`bridge.store.db.Store.transaction`, which wakes this
    process's subscribers after the commit; on PostgreSQL every listening process hears it."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    pending: set[str] = conn.info.setdefault(PENDING, set())
    if channel in pending:
        return
    pending.add(channel)
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {channel}"))  # a fixed name, checked above


class Signals:
    """This process's subscribers to each channel, called after a commit that named it (and
    by a :class:`Listener` for the other processes' commits). A subscriber must be quick and
    never raise: it runs in the thread that committed."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, channel: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._subscribers[channel].append(callback)

    def fire(self, channels: Iterable[str]) -> None:
        for channel in channels:
            with self._lock:
                callbacks = list(self._subscribers.get(channel, ()))
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a wake is only ever a hint: the poll still runs
                    log.warning("notify.subscriber_failed", channel=channel, exc_info=True)


class Listener:
    """``LISTEN`` on a PostgreSQL connection of its own, in a thread, handing each channel
    heard to ``signals``. A lost connection is retried with backoff (logged once per outage,
    and once when restored); when it is back, every channel fires, for what was said
    meanwhile. Never raises into its caller."""

    POLL_SECONDS = 1.0  # how often the thread looks at its stop event while idle
    MAX_BACKOFF_SECONDS = 30.0

    def __init__(self, url: str, signals: Signals, channels: Collection[str] = CHANNELS) -> None:
        self._conninfo = _libpq_url(url)
        self._signals = signals
        self._channels = [c for c in channels if c in CHANNELS]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while LISTEN is in force (tests wait on it)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        backoff, lost = 0.5, False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    for channel in self._channels:
                        conn.execute(f"LISTEN {channel}")  # fixed names, checked above
                    self.listening.set()
                    if lost:
                        log.info("notify.listening_again")
                        self._signals.fire(self._channels)  # what was said while away
                    backoff, lost = 0.5, False
                    while not self._stop.is_set():  # each as it comes; a look at stop between
                        for heard in conn.notifies(timeout=self.POLL_SECONDS):
                            if heard.channel in self._channels:
                                self._signals.fire([heard.channel])
            except Exception as error:
                self.listening.clear()
                if not lost:
                    log.warning(
                        "notify.listen_lost", error=type(error).__name__, retry_seconds=backoff
                    )
                lost = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.MAX_BACKOFF_SECONDS)
        self.listening.clear()


def _libpq_url(url: str) -> str:
    """The database URL as libpq takes it: without SQLAlchemy's ``+driver``."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
