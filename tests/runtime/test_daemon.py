"""The daemon's scheduling, in process: leader jobs only while leading, stopped when the lead
is lost; failures logged and survived; stopping waits for the item under way, within a budget."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import REGISTRY

from bridge.adapters.base import Advice, Failure, Transient
from bridge.adapters.salesforce import SALESFORCE
from bridge.logs import configure
from bridge.runtime.daemon import Daemon, Job

FAST = 0.05  # seconds between runs and leadership checks


class FakeLock:
    """The leader lock, as the test decides it."""

    def __init__(self) -> None:
        self.available = False
        self.checks = 0
        self.released = False
        self.checked = threading.Condition()

    def try_lead(self) -> bool:
        with self.checked:
            self.checks += 1
            self.checked.notify_all()
        return self.available

    def release(self) -> None:
        self.released = True

    def wait_checks(self, more: int) -> None:
        """Until ``more`` further leadership checks have run."""
        with self.checked:
            target = self.checks + more
            assert self.checked.wait_for(lambda: self.checks >= target, timeout=5)


def leader_gauge() -> float | None:
    return REGISTRY.get_sample_value("bridge_scheduler_leader")


def every(seconds: float = FAST) -> IntervalTrigger:
    return IntervalTrigger(seconds=seconds)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure("info", stream)
    yield stream
    configure("info")


def test_leader_jobs_run_only_while_leading_and_stop_when_the_lead_is_lost() -> None:
    lock = FakeLock()
    started, stopped = threading.Event(), threading.Event()
    leader_runs: list[int] = []
    shared_runs = threading.Semaphore(0)

    def sync(stop: threading.Event) -> None:
        leader_runs.append(1)
        started.set()
        if stop.wait(10):  # a long sync, checking between items
            stopped.set()

    def shared(_stop: threading.Event) -> None:
        shared_runs.release()

    daemon = Daemon(
        [Job("sync", sync, every(3600), leader_only=True), Job("inbox", shared, every())],
        lock,
        leader_check_seconds=FAST,
    )
    daemon.start()
    try:
        for _ in range(3):
            assert shared_runs.acquire(timeout=5)  # shared jobs run on a follower
        lock.wait_checks(2)
        assert leader_runs == [] and not daemon.leading
        assert leader_gauge() == 0

        lock.available = True
        assert started.wait(5)  # the new leader runs its interval job at once
        assert daemon.leading and leader_gauge() == 1

        lock.available = False
        assert stopped.wait(5)  # the running sync is told to stop
        lock.wait_checks(3)
        assert not daemon.leading and leader_gauge() == 0
        assert leader_runs == [1]  # and it is no longer scheduled
    finally:
        assert daemon.close(time.monotonic() + 5)
    assert lock.released


def test_a_failing_job_is_logged_by_name_and_error_type_only_and_runs_again(
    log_lines: io.StringIO,
) -> None:
    runs: list[int] = []
    recovered = threading.Event()

    def flaky(_stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("could not erase ann.smith@example.com")
        recovered.set()

    failures = failed_until_recovered(Job("erasure", flaky, every()), recovered, log_lines)
    assert [(f["job"], f["error"], f["level"]) for f in failures] == [
        ("erasure", "ValueError", "error")
    ]
    assert "ann.smith" not in log_lines.getvalue()
    failed = REGISTRY.get_sample_value(
        "bridge_daemon_job_runs_total", {"job": "erasure", "outcome": "failed"}
    )
    assert failed is not None and failed >= 1


def failed_until_recovered(
    job: Job, recovered: threading.Event, log_lines: io.StringIO
) -> list[dict[str, Any]]:
    """Run ``job`` in a daemon until it sets ``recovered``; the failures it logged."""
    daemon = Daemon([job], FakeLock(), leader_check_seconds=FAST)
    daemon.start()
    try:
        assert recovered.wait(5)
    finally:
        daemon.close(time.monotonic() + 5)
    return [
        line for line in map(json.loads, log_lines.getvalue().splitlines())
        if line["event"] == "daemon.job_failed"
    ]  # fmt: skip


def test_a_job_failing_on_a_crm_logs_its_one_line_at_warning_and_runs_again(
    log_lines: io.StringIO,
) -> None:
    runs: list[int] = []
    recovered = threading.Event()
    words = {Failure.UNAVAILABLE: ("Acme unreachable at {where} ({reason})", "try later")}

    def sync(_stop: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            down = Transient(SALESFORCE, "read: no answer CONNECTION: ConnectionError")
            raise Advice("https://crm.example", words).apply(down, "read", "connection refused")
        recovered.set()

    failures = failed_until_recovered(Job("sync", sync, every()), recovered, log_lines)
    reason = "Acme unreachable at https://crm.example (connection refused): try later"
    assert [(f["job"], f["level"], f["reason"]) for f in failures] == [("sync", "warning", reason)]
    assert "Traceback" not in log_lines.getvalue()


def test_stopping_lets_the_item_under_way_finish() -> None:
    in_item, finished = threading.Event(), threading.Event()
    items_started: list[int] = []

    def drain(stop: threading.Event) -> None:
        while not stop.is_set():
            items_started.append(1)
            in_item.set()
            time.sleep(0.3)  # one item: not interrupted
        finished.set()

    daemon = Daemon([Job("erasure", drain, every())], FakeLock(), leader_check_seconds=FAST)
    daemon.start()
    assert in_item.wait(5)
    began = time.monotonic()
    assert daemon.close(began + 10)
    assert finished.is_set()
    assert time.monotonic() - began < 5  # the item under way, not the endless backlog
    count = len(items_started)
    time.sleep(FAST * 4)
    assert len(items_started) == count  # nothing runs after close


def test_stopping_gives_up_at_the_deadline_on_an_item_that_hangs() -> None:
    hanging, release = threading.Event(), threading.Event()

    def stuck(_stop: threading.Event) -> None:
        hanging.set()
        release.wait(30)  # a vendor call that never returns, ignoring stop

    daemon = Daemon([Job("inbox", stuck, every())], FakeLock(), leader_check_seconds=FAST)
    daemon.start()
    assert hanging.wait(5)
    began = time.monotonic()
    assert not daemon.close(began + 0.3)  # not finished: left to its lease
    assert time.monotonic() - began < 3
    release.set()


def test_job_names_must_be_unique() -> None:
    job = Job("inbox", lambda _stop: None, every())
    with pytest.raises(ValueError, match="unique"):
        Daemon([job, job], FakeLock(), leader_check_seconds=1)


def test_a_woken_job_runs_at_once_and_again_if_woken_while_running() -> None:
    runs: list[float] = []
    ran = threading.Semaphore(0)
    inside, go_on = threading.Event(), threading.Event()

    def inbox(_stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:  # woken again while this run works: it must not be lost
            inside.set()
            go_on.wait(5)
        ran.release()

    daemon = Daemon([Job("inbox", inbox, every(3600))], FakeLock(), leader_check_seconds=FAST)
    daemon.wake("inbox")  # before the start: nothing to wake, no harm
    daemon.start()
    try:
        assert ran.acquire(timeout=5)  # the run at start; the next would be in an hour
        woken = time.monotonic()
        daemon.wake("inbox")
        assert inside.wait(2), "a wake did not run the job at once"
        assert runs[1] - woken < 1
        daemon.wake("inbox")
        go_on.set()
        assert ran.acquire(timeout=5)
        assert ran.acquire(timeout=2), "a wake during a run was lost"
        assert len(runs) == 3
        time.sleep(0.3)
        assert len(runs) == 3  # once per wake, not a loop
        daemon.wake("nonesuch")  # not a job: ignored
    finally:
        assert daemon.close(time.monotonic() + 5)
    daemon.wake("inbox")  # after the stop: ignored
    assert len(runs) == 3
