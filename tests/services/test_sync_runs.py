"""Every ``Reconciler.sync`` is recorded for the console, however it ends: a run that raises
is kept as failed (or stopped) and the error goes on up; a CRM's error keeps its class and
vendor code, never its message."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bridge.adapters.base import AdapterError, Transient
from bridge.model import CrmRecord, System
from bridge.policies.minimisation import Minimisation
from bridge.services.reconcile import Reconciler
from bridge.services.watch import Watch
from bridge.store import sync as sync_rows
from bridge.store.db import Store
from tests.conftest import PSEUDONYM_KEY, PURPOSES

KEY = PSEUDONYM_KEY.encode()


class Failing:
    """An adapter whose read fails with ``error`` (the sync asks nothing else of it here)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def read(self, since: datetime | None = None) -> Iterator[CrmRecord]:
        raise self.error
        yield  # a generator, as the adapters' reads are


def reconciler(store: Store, error: BaseException) -> Reconciler:
    adapters: Any = {System("hubspot"): Failing(error)}
    return Reconciler(store, adapters, KEY, PURPOSES, Minimisation({}), watch=Watch(store, KEY))


def vendor_error() -> AdapterError:
    error = Transient(System("hubspot"), "503 from https://x: ada@example.com is busy")
    error.code = "INTERNAL_ERROR"
    return error


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the other: both
@pytest.mark.parametrize(
    ("error", "outcome", "counts", "kept"),
    [
        (vendor_error(), "failed", {}, {"error": "Transient", "failure": "unavailable",
                                        "code": "INTERNAL_ERROR", "summary": None}),
        (RuntimeError("ada@example.com"), "failed", {"error": "RuntimeError"}, None),
        (KeyboardInterrupt(), "stopped", {}, None),
    ],
)  # fmt: skip
def test_a_run_that_raises_is_recorded_then_raises(
    store: Store,
    error: BaseException,
    outcome: str,
    counts: dict[str, str],
    kept: dict[str, str] | None,
) -> None:
    with pytest.raises(type(error)):
        reconciler(store, error).sync(trigger="daemon")
    [run] = sync_rows.runs(store, 5)
    assert (run["trigger"], run["outcome"], run["full"], run["dry_run"]) == (
        "daemon", outcome, True, False,
    )  # fmt: skip
    assert run["counts"] == counts
    assert run["systems"] == {"hubspot": {"records": 0, "error": kept}}
    assert "ada@example.com" not in str(run)


def test_a_stopped_run_is_recorded_as_stopped(store: Store) -> None:
    stop = threading.Event()
    stop.set()
    report = reconciler(store, RuntimeError()).sync(stop=stop)
    assert report.stopped
    [run] = sync_rows.runs(store, 5)
    assert (run["trigger"], run["outcome"]) == ("cli", "stopped")
