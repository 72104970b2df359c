"""The audit log: a chain that catches edits and deletions, and never forks, on both databases."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, update

from bridge import audit
from bridge.model import AuditEvent
from bridge.store.db import Store
from bridge.store.tables import audit_log


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
    assert "edited" in (result.problem or "")


def test_verify_catches_a_row_deleted_from_the_middle(store: Store) -> None:
    for n in range(1, 11):
        audit.record(store, event(n))
    with store.transaction() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq == 4))
    result = audit.verify(store)
    assert (result.ok, result.broken_at) == (False, 4)
    assert "missing" in (result.problem or "")


def test_verify_catches_a_row_replaced_with_a_self_consistent_forgery(store: Store) -> None:
    for n in range(1, 6):
        audit.record(store, event(n))
    with store.transaction() as conn:
        row = dict(conn.execute(audit_log.select().where(audit_log.c.seq == 3)).mappings().one())
        row["outcome"], row["prev_hash"] = "skipped", "f" * 64
        row["hash"] = audit.row_hash(row)
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(**row))
    result = audit.verify(store)
    assert (result.ok, result.broken_at) == (False, 3)


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
    store = Store(url)
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
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, store.url, f"w{i}", str(per_writer), str(start)]
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
