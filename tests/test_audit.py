"""The audit log: a chain that catches edits and deletions, and never forks, on both databases."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, update

from bridge import audit
from bridge.checkpoints import Checkpoint
from bridge.errors import BridgeError, ConfigError
from bridge.model import AuditEvent
from bridge.store.db import Store
from bridge.store.tables import audit_log
from tests.conftest import AUDIT_KEY


def event(n: int, subject: str | None = None) -> AuditEvent:
    return AuditEvent(
        actor="test",
        action="consent.opt_out",
        outcome="done",
        system="hubspot",
        record_id=str(n),
        subject_ref=subject,
        reason="propagation",
        details={"n": n, "purpose": "marketing_email"},
    )


def test_chain_of_appended_events_verifies(store: Store) -> None:
    for n in range(1, 21):
        assert audit.record(store, event(n)) == n
    result = audit.verify(store)
    assert result.ok and result.checked == 20
    listed = list(audit.events(store))
    assert [e["seq"] for e in listed] == list(range(1, 21))
    assert listed[4]["details"] == {"n": 5, "purpose": "marketing_email"}


def test_events_can_be_listed_by_subject(store: Store) -> None:
    audit.record(store, event(1, "a" * 64))
    audit.record(store, event(2, "b" * 64))
    audit.record(store, event(3, "a" * 64))
    assert [e["record_id"] for e in audit.events(store, "a" * 64)] == ["1", "3"]


def test_newest_events_by_subject_and_time_with_the_count_left_out(store: Store) -> None:
    for n in range(1, 8):
        audit.record(store, event(n, "a" * 64 if n % 2 else "b" * 64))
    listed = list(audit.events(store))
    newest, left_out = audit.newest(store, limit=3)
    assert ([e["seq"] for e in newest], left_out) == ([5, 6, 7], 4)
    assert newest[0]["details"] == {"n": 5, "purpose": "marketing_email"}
    assert audit.newest(store, "a" * 64, limit=2)[1] == 2  # 1, 3 left out; 5, 7 shown
    since = datetime.fromisoformat(listed[3]["occurred_at"])
    assert [e["seq"] for e in audit.newest(store, since=since)[0]] == [4, 5, 6, 7]
    later = audit.newest(store, "a" * 64, since.astimezone(timezone(timedelta(hours=5))), 1)
    assert ([e["seq"] for e in later[0]], later[1]) == ([7], 1)
    assert audit.newest(store, since=since + timedelta(days=1)) == ([], 0)
    assert audit.newest(store, limit=50) == (listed, 0)


def test_verify_catches_an_edited_row(store: Store) -> None:
    for n in range(1, 11):
        audit.record(store, event(n))
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 6).values(outcome="failed"))
    result = audit.verify(store)
    assert (result.ok, result.broken_at, result.checked) == (False, 6, 5)
    assert result.findings == ("row 6 was edited: its content does not match its keyed hash",)


def test_verify_catches_a_row_deleted_from_the_middle(store: Store) -> None:
    for n in range(1, 11):
        audit.record(store, event(n))
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
    result = audit.verify(store)
    assert (result.ok, result.broken_at) == (False, 4)
    assert result.findings == ("row 4 is missing (the next row is 5)",)


def test_verify_catches_a_row_replaced_with_a_self_consistent_forgery(store: Store) -> None:
    """Even by someone holding the key: the next row no longer links to it."""
    for n in range(1, 6):
        audit.record(store, event(n))
    with store.transaction() as conn:
        row = dict(conn.execute(audit_log.select().where(audit_log.c.seq == 3)).mappings().one())
        row["outcome"] = "skipped"
        row["hash"] = audit.row_hash(row, AUDIT_KEY)
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(**row))
    result = audit.verify(store)
    assert (result.ok, result.broken_at) == (False, 4)
    assert result.findings[0].startswith("row 4 does not link to row 3: row 3 was replaced")


def test_an_event_holding_an_email_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="details"):
        audit.record(store, AuditEvent("test", "x", "done", details={"who": "ann@example.com"}))
    assert audit.verify(store).checked == 0


WRITER = textwrap.dedent(
    """
    import sys, time
    from bridge import audit
    from bridge.model import AuditEvent
    from bridge.store.db import Store
    url, name, count, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = Store(url, bytes.fromhex(sys.argv[5]))
    time.sleep(max(0.0, start - time.time()))
    for n in range(count):
        audit.record(store, AuditEvent(actor=name, action="test.append", outcome="done",
                                       record_id=str(n)))
        time.sleep(0.005)  # other work between events, as real writers do
    """
)


@pytest.mark.parametrize("writers", [2, 3])
def test_concurrent_writer_processes_never_fork_the_chain(store: Store, writers: int) -> None:
    per_writer = 60
    start = time.time() + 1.5  # all processes begin appending at the same instant
    key = AUDIT_KEY.hex()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store.url, f"w{i}", str(per_writer), str(start), key]
        )
        for i in range(writers)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0] * writers
    result = audit.verify(store)
    assert result.ok, result.problem
    assert result.checked == writers * per_writer
    actors = [e["actor"] for e in audit.events(store)]
    assert {actors.count(f"w{i}") for i in range(writers)} == {per_writer}
    interleaved = sum(1 for a, b in itertools.pairwise(actors) if a != b)
    assert interleaved > writers  # they really did write at the same time


def rehash(store: Store, start: int, key: bytes | None) -> None:
    """Recompute every hash from row ``start`` on, as an earlier version (``key`` None) or
    someone holding ``key`` would have written them."""
    with store.transaction() as conn:
        query = audit_log.select().order_by(audit_log.c.seq)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        prev = audit.GENESIS
        for row in rows:
            if row["seq"] >= start:
                row["prev_hash"], row["hash"] = (
                    prev,
                    audit.row_hash({**row, "prev_hash": prev}, key),
                )
                conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(**row))
            prev = row["hash"]


def test_rows_hashed_before_the_chain_was_keyed_are_told_apart_then_keyed(store: Store) -> None:
    for n in range(1, 6):
        audit.record(store, event(n))
    rehash(store, 1, None)  # as the version before the keyed chain wrote them
    for n in range(6, 8):
        audit.record(store, event(n))  # this version, after the upgrade
    before = audit.verify(store)
    assert (before.ok, before.findings, before.unkeyed, before.checked) == (False, (), 5, 7)

    assert audit.rekey(store) == 5
    after = audit.verify(store)
    assert (after.ok, after.checked, after.unkeyed) == (True, 8, 0)
    assert [e["action"] for e in audit.events(store)][-1] == "audit.rekey"
    assert audit.rekey(store) == 0


def test_a_plain_hash_after_keyed_rows_is_a_rewrite_and_is_not_rekeyed(store: Store) -> None:
    for n in range(1, 11):
        audit.record(store, event(n))
    with store.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 6).values(outcome="failed"))
    rehash(store, 6, None)  # what someone without the key can do
    result = audit.verify(store)
    assert (result.broken_at, result.unkeyed) == (6, 0)
    assert result.findings[0].startswith(
        "row 6 has a plain SHA-256 hash after keyed rows: it was rewritten by someone without"
    )
    with pytest.raises(BridgeError, match="refused, row 6 has a plain SHA-256 hash"):
        audit.rekey(store)


def test_swapped_rows_and_renumbered_rows_are_named(store: Store) -> None:
    for n in range(1, 9):
        audit.record(store, event(n))

    def swap() -> None:
        with store.transaction() as conn:
            for at, to in ((4, -1), (5, 4), (-1, 5)):
                conn.execute(update(audit_log).where(audit_log.c.seq == at).values(seq=to))

    swap()
    assert audit.verify(store).findings == (
        "rows 4 and 5 are swapped: each holds the other's entry",
    )
    swap()  # back
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
        for seq in range(5, 9):
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=seq - 1))
    assert audit.verify(store).findings == (
        "row 4 holds the entry written as row 5: a row before it was removed and the rest "
        "renumbered",
    )


def test_another_key_is_named_as_a_possible_cause(store: Store) -> None:
    audit.record(store, event(1))
    other = Store(store.url, b"another key".ljust(32, b"-"))
    try:
        assert audit.verify(other).findings == (
            f"row 1 was edited: its content does not match its keyed hash, {audit.KEY_HINT}",
        )
    finally:
        other.dispose()


def test_appending_without_a_key_is_refused_naming_the_setting(store: Store) -> None:
    keyless = Store(store.url)
    try:
        with pytest.raises(ConfigError, match="BRIDGE_PSEUDONYM_KEY"):
            audit.record(keyless, event(1))
        with pytest.raises(ConfigError, match="BRIDGE_AUDIT__KEY"):
            audit.verify(keyless)
    finally:
        keyless.dispose()


def test_verify_holds_the_log_against_a_checkpoint(store: Store) -> None:
    for n in range(1, 21):
        audit.record(store, event(n))
    head = audit.head(store)
    assert head is not None and head[0] == 20
    signed = Checkpoint(head[0], head[1], "2026-01-31T09:00:00+00:00")
    assert audit.verify(store, signed).ok
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq > 17))
    covers = "the checkpoint of 2026-01-31T09:00:00+00:00 covers 20 rows"
    assert audit.verify(store, signed).findings == (
        f"rows 18-20 are missing: {covers}, the log has 17",
    )
    assert audit.verify(store, replace(signed, seq=17)).findings == (
        "row 17 is not the row the checkpoint of 2026-01-31T09:00:00+00:00 signed: the log was "
        "rewritten up to it",
    )
    with store.transaction() as conn:
        conn.execute(delete(audit_log))
    assert audit.verify(store, signed).findings == (f"the log is empty but {covers}",)
