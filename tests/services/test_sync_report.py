"""A sync's report counts every change and keeps only the first ``keep``; a caller that
wants them all is told each change once it is settled (audited), batch by batch, not at the
end. The report alone, then a real sync against both emulators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge import audit
from bridge.cli import sync as sync_cli
from bridge.model import ConsentStatus
from bridge.services import reconcile
from bridge.services.reconcile import KEEP, SyncReport
from bridge.store.db import Store
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PURPOSES, Crms
from tests.services.test_sync_recovery import reconciler

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


def change(n: int, outcome: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"record_id": str(n), "change": "opt_out"}
    return entry | ({"outcome": outcome} if outcome else {})


def test_the_report_counts_everything_and_keeps_the_first_few() -> None:
    report = SyncReport(dry_run=False, full=True, keep=3)
    for n in range(5):
        report.add("changes", change(n, "failed" if n == 4 else "done"))
    for n in range(4):
        report.add("not_allowed", change(n))
    report.add("awaiting_person", change(9))

    assert report.changes == [change(n, "done") for n in range(3)]
    assert report.not_allowed == [change(n) for n in range(3)]
    counts = report.counts()
    assert (counts["planned"], counts["done"], counts["failed"]) == (5, 4, 1)
    assert (counts["not_allowed"], counts["awaiting_person"]) == (4, 1)
    assert report.failed == 1
    document = report.as_dict()
    assert (document["changes_shown"], document["changes_total"]) == (3, 5)
    assert document["awaiting_person"] == [change(9)] and document["counts"] == counts


@pytest.mark.parametrize(("keep", "kept"), [(None, 30), (0, 0), (KEEP, 20)])
def test_keep_none_keeps_all_and_zero_none(keep: int | None, kept: int) -> None:
    report = SyncReport(dry_run=True, full=False, keep=keep)
    for n in range(30):
        report.add("changes", change(n))
    assert len(report.changes) == kept and report.counts()["planned"] == 30
    assert sum(report.outcomes.values()) == 0, "a planned change has no outcome"


def test_the_cli_lists_as_many_by_default_as_the_report_keeps() -> None:
    assert int(sync_cli.KEEP) == KEEP


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_change_is_told_once_audited_before_the_next_batch_is_written(
    crms: Crms, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    consenting = Held(acts=(Act("marketing_email", ConsentStatus.GRANTED, T0),))
    people = [
        Person(f"p{n}@example.com", hubspot=Held(opted_out_at=T0), salesforce=consenting)
        for n in range(6)
    ]
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)
    monkeypatch.setattr(reconcile, "APPLY_BATCH", 2)
    told: list[tuple[dict[str, Any], int]] = []

    def on_change(entry: dict[str, Any]) -> None:
        written = [e for e in audit.events(store) if e["action"].startswith("sync.")]
        told.append((entry, len(written)))

    report = reconciler(crms, store).sync(keep=4, on_change=on_change)

    planned = report.counts()["planned"]
    assert planned > 4 and len(told) == planned == report.counts()["done"]
    assert [entry for entry, _ in told[:4]] == report.changes
    # Told with its outcome once its own batch was audited, and before the last batches ran.
    assert all(audited >= n for n, (_, audited) in enumerate(told, 1))
    assert told[0][1] < planned
    assert {entry["outcome"] for entry, _ in told} == {"done"}
    assert "@example.com" not in str(told)
