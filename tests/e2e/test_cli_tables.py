"""Tables as a user meets them off a terminal (a pipe, a file): a header line and one
tab-separated line per row, every value whole; ``audit --limit/--since``; empty answers
that say so."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from bridge import audit
from bridge.model import AuditEvent
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import AUDIT_KEY, PURPOSES, BridgeCli, Crms

on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

AUDIT_COLUMNS = ["seq", "time", "actor", "action", "outcome", "system", "record", "subject"]
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
LONG_ACTION = "retention.warning_mark_cleared_after_legal_hold"
LONG_RECORD = "0030000000000Xy9AAE-with-a-long-suffix-that-no-80-column-table-would-keep-whole"


def tab_rows(stdout: str, columns: list[str]) -> list[dict[str, str]]:
    """The table in ``stdout``: its header line, then its rows, every line tab-separated."""
    lines = stdout.splitlines()
    start = lines.index("\t".join(columns))
    rows = []
    for line in lines[start + 1 :]:
        cells = line.split("\t")
        if len(cells) != len(columns):
            break  # the lines after the table
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def add_events(bridge: BridgeCli, count: int) -> None:
    """``count`` events after ``db upgrade``'s, with values longer than a terminal's column."""
    store = Store(bridge.env["BRIDGE_DATABASE_URL"], AUDIT_KEY)
    for number in range(count):
        audit.record(
            store,
            AuditEvent(
                actor="sync",
                action=LONG_ACTION,
                outcome="done",
                system="salesforce",
                record_id=f"{LONG_RECORD}-{number}",
                subject_ref=f"{number:x}" * 64,
            ),
        )
    store.dispose()


@pytest.fixture
def upgraded(bridge: BridgeCli) -> BridgeCli:
    assert bridge("db", "upgrade").returncode == 0
    return bridge


def test_audit_into_a_pipe_prints_every_value_whole(upgraded: BridgeCli) -> None:
    add_events(upgraded, 3)
    result = upgraded("audit")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "\t".join(AUDIT_COLUMNS) and len(lines) == 5  # header, 4 events
    rows = tab_rows(result.stdout, AUDIT_COLUMNS)
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4"]
    assert all(ISO_TIME.match(row["time"]) for row in rows), rows
    assert [row["action"] for row in rows] == ["db.upgrade", *[LONG_ACTION] * 3]
    assert [row["record"] for row in rows[1:]] == [f"{LONG_RECORD}-{n}" for n in range(3)]
    assert [row["subject"] for row in rows] == ["", "0" * 64, "1" * 64, "2" * 64]
    assert "…" not in result.stdout


def test_audit_limit_shows_the_newest_oldest_first_and_says_how_many_are_left_out(
    upgraded: BridgeCli,
) -> None:
    add_events(upgraded, 5)  # six events in all

    result = upgraded("audit", "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert [row["seq"] for row in tab_rows(result.stdout, AUDIT_COLUMNS)] == ["5", "6"]
    assert result.stdout.splitlines()[-1].startswith("4 earlier events not shown; ")

    assert len(tab_rows(upgraded("audit", "--limit", "0").stdout, AUDIT_COLUMNS)) == 6
    default = upgraded("audit")
    assert len(tab_rows(default.stdout, AUDIT_COLUMNS)) == 6
    assert "not shown" not in default.stdout

    listed = json.loads(upgraded("audit", "--json").stdout)  # --json: all, unless limited
    assert (len(listed["events"]), listed["left_out"]) == (6, 0)
    limited = json.loads(upgraded("audit", "--json", "--limit", "1").stdout)
    assert ([e["seq"] for e in limited["events"]], limited["left_out"]) == ([6], 5)


def test_audit_default_limit_is_the_newest_hundred(upgraded: BridgeCli) -> None:
    add_events(upgraded, 104)  # 105 events in all
    result = upgraded("audit")
    rows = tab_rows(result.stdout, AUDIT_COLUMNS)
    assert (rows[0]["seq"], rows[-1]["seq"], len(rows)) == ("6", "105", 100)
    assert result.stdout.splitlines()[-1].startswith("5 earlier events not shown; ")


def test_audit_since_takes_a_time_or_a_date(upgraded: BridgeCli) -> None:
    add_events(upgraded, 3)
    events = json.loads(upgraded("audit", "--json").stdout)["events"]

    third = upgraded("audit", "--since", events[2]["occurred_at"])
    assert [row["seq"] for row in tab_rows(third.stdout, AUDIT_COLUMNS)] == ["3", "4"]
    # An offset is honoured; the same instant in another zone selects the same events.
    instant = datetime.fromisoformat(events[2]["occurred_at"])
    elsewhere = instant.astimezone(UTC).replace(tzinfo=None).isoformat() + "-00:00"
    shifted = upgraded("audit", "--since", elsewhere)
    assert [row["seq"] for row in tab_rows(shifted.stdout, AUDIT_COLUMNS)] == ["3", "4"]

    today = datetime.now(UTC).date()
    from_today = upgraded("audit", "--since", today.isoformat())
    assert len(tab_rows(from_today.stdout, AUDIT_COLUMNS)) == 4
    tomorrow = (today + timedelta(days=1)).isoformat()
    nothing = upgraded("audit", "--since", tomorrow)
    assert (nothing.returncode, nothing.stdout) == (0, f"no audit events since {tomorrow}\n")

    with_limit = upgraded("audit", "--since", today.isoformat(), "--limit", "1")
    assert [row["seq"] for row in tab_rows(with_limit.stdout, AUDIT_COLUMNS)] == ["4"]
    assert f"3 earlier events since {today.isoformat()} not shown" in with_limit.stdout


def test_empty_audit_answers_say_so(upgraded: BridgeCli) -> None:
    nobody = upgraded("audit", "--subject", "nobody@example.com")
    assert (nobody.returncode, nobody.stdout) == (0, "no audit events about this person\n")
    assert "nobody@example.com" not in nobody.stdout + nobody.stderr


@on_sqlite
def test_empty_request_lists_say_so(cli: BridgeCli) -> None:
    for args, said in [
        ((), "no erasure requests"),
        (("--overdue",), "no overdue erasure requests"),
        (("--failed",), "no failed erasure requests"),
        (("--reappeared",), "no erased person has re-appeared in any CRM"),
    ]:
        result = cli("requests", *args)
        assert (result.returncode, result.stdout) == (0, said + "\n"), result.stderr
    dry = cli("erase", "--dry-run", "nobody@example.com")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].startswith(("would erase", "nothing to erase"))


@on_sqlite
def test_sync_dry_run_into_a_pipe_prints_whole_record_ids(
    configured_cli: BridgeCli, crms: Crms
) -> None:
    opted_out = Held(opted_out_at=datetime(2025, 3, 1, 9, tzinfo=UTC))
    people = [Person(f"p{n}@example.com", hubspot=opted_out) for n in range(3)]
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)
    plan = json.loads(configured_cli("sync", "--dry-run", "--json").stdout)["changes"]

    result = configured_cli("sync", "--dry-run")
    assert result.returncode == 0, result.stderr
    columns = ["system", "object", "record", "change", "purpose", "value", "reason"]
    rows = tab_rows(result.stdout, columns)
    expected = [(c["record_id"], c["change"], c["reason"]) for c in plan]
    assert [(r["record"], r["change"], r["reason"]) for r in rows] == expected
    assert any(len(r["record"]) == 18 for r in rows)  # Salesforce ids, whole
    assert result.stdout.splitlines()[len(rows) + 1].endswith(f"would apply {len(plan)} changes")
