"""New work wakes its waiters once it commits: in the process through the store's signals,
and across processes on PostgreSQL through LISTEN/NOTIFY (bridge.store.notify)."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.store import notify
from bridge.store.db import Store


def heard(store: Store, channel: str) -> list[str]:
    got: list[str] = []
    store.signals.subscribe(channel, lambda: got.append(channel))
    return got


def test_waiters_are_woken_after_the_commit_and_never_for_a_rollback(store: Store) -> None:
    inbox, erasure = heard(store, notify.INBOX), heard(store, notify.ERASURE)
    with store.transaction() as conn:
        notify.notify(conn, notify.INBOX)
        notify.notify(conn, notify.INBOX)  # once per transaction
        assert inbox == []  # not before the commit: the work is not visible yet
    assert (inbox, erasure) == ([notify.INBOX], [])

    def rolled_back() -> None:
        with store.transaction() as conn:
            notify.notify(conn, notify.ERASURE)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    with store.transaction():
        pass  # the connection, back from the pool, carries nothing over
    assert (inbox, erasure) == ([notify.INBOX], [])


def test_a_channel_must_be_one_of_the_bridges(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown channel"), store.transaction() as conn:
        notify.notify(conn, "anything; DROP TABLE inbox")


def test_a_listener_hears_a_notify_committed_by_another_connection(postgres_url: str) -> None:
    sender, receiver = Store(postgres_url), Store(postgres_url)
    woken = threading.Event()
    receiver.signals.subscribe(notify.ERASURE, woken.set)
    listener = notify.Listener(receiver.url, receiver.signals)
    listener.start()
    try:
        assert listener.listening.wait(5), "the listener did not start listening"
        started = time.monotonic()
        with sender.transaction() as conn:
            notify.notify(conn, notify.ERASURE)
        assert woken.wait(1), "not woken within a second"
        assert time.monotonic() - started < 1
    finally:
        listener.stop()
        sender.dispose()
        receiver.dispose()


def test_a_listener_that_cannot_connect_retries_quietly_and_stops() -> None:
    listener = notify.Listener("postgresql://nobody@127.0.0.1:1/none", notify.Signals())
    listener.start()
    time.sleep(1.2)  # a few attempts, with backoff
    listener.stop()
    assert listener._thread is not None and not listener._thread.is_alive()
    assert not listener.listening.is_set()
