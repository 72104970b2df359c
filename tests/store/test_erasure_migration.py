"""Migration 0007 on both databases: open erasure requests stored with the old due date
(+30 days) get the one the law counts (a calendar month), failed ones a retry by the daemon,
completed ones stay as they are; downgrading takes the new columns away again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import inspect, text

from bridge.store.db import Store
from tests.conftest import AUDIT_KEY

JANUARY_31 = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
NEW = ("extensions", "failing_since", "failures", "retry_at", "problem", "flagged_at")


def test_open_requests_get_calendar_month_due_dates_and_failed_ones_a_retry(
    database_url: str,
) -> None:
    store = Store(database_url, AUDIT_KEY)
    store.upgrade("0006")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    with store.engine.begin() as conn:
        for name, status, received in (
            ("a", "planned", JANUARY_31),
            ("b", "failed", yesterday),
            ("c", "completed", JANUARY_31),
        ):
            conn.execute(
                text(
                    "INSERT INTO erasure_requests (id, subject_ref, mode, trigger, status,"
                    " received_at, due_at) VALUES (:id, :ref, 'delete', 'cli', :status,"
                    " :received, :due)"
                ),
                {
                    "id": name * 32,
                    "ref": name * 64,
                    "status": status,
                    "received": received.isoformat(timespec="microseconds"),
                    "due": (received + timedelta(days=30)).isoformat(timespec="microseconds"),
                },
            )
    store.upgrade()
    with store.engine.connect() as conn:
        query = text("SELECT id, due_at, retry_at, failing_since, failures FROM erasure_requests")
        found = {row.id[0]: row for row in conn.execute(query)}
    assert found["a"].due_at == "2027-02-28T09:30:00.000000+00:00"  # not 2 March
    assert found["a"].retry_at is None
    assert found["c"].due_at == "2027-03-02T09:30:00.000000+00:00"  # as its receipt says
    assert found["b"].retry_at is not None and found["b"].failing_since is not None
    assert {row.failures for row in found.values()} == {0}

    with store.engine.begin() as conn:
        config = store._alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")
    columns = {c["name"] for c in inspect(store.engine).get_columns("erasure_requests")}
    assert not columns & set(NEW)
    store.dispose()
