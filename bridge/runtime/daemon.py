"""The daemon (``bridge run``): the scheduler and the webhook receiver in one process.

Leader jobs (sync, retention) run on the instance holding the leader lock, checked every
``schedule.leader_check_seconds``; shared jobs (inbox, erasure) run everywhere on leased
work items. Each job checks a stop event between items; SIGTERM or SIGINT drains and
returns within 30 seconds (ARCHITECTURE.md, "Several instances").
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bridge import metrics
from bridge.adapters.base import AdapterError
from bridge.config import WebSettings
from bridge.errors import ConfigError
from bridge.logs import get_logger

if TYPE_CHECKING:
    from bridge.runtime.listener import Face

log = get_logger("bridge.daemon")
STOP_SECONDS = 25.0  # from the signal to return: within the promised 30 s, with room to exit
HTTP_GRACE_SECONDS = 10  # the receiver's share: requests in flight get this long to finish


class Leadership(Protocol):
    """The leader lock, as the daemon uses it (:class:`bridge.store.leader.LeaderLock`)."""

    def try_lead(self) -> bool: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Job:
    """Work on a schedule. ``run`` gets an event that is set when it must stop, and checks it
    between items; ``trigger`` is an APScheduler trigger (interval or cron). Interval jobs run
    at once when scheduled (at start, or on becoming leader), then every interval."""

    name: str
    run: Callable[[threading.Event], object]
    trigger: Any
    leader_only: bool = False


class _DaemonThreads(BaseExecutor):  # type: ignore[misc]
    """Runs each job in a daemon thread: an item stuck past the shutdown budget (a vendor
    call that hangs) must not keep the process alive; its lease hands it to another instance.
    The standard thread pool's threads are joined at interpreter exit. ``ended`` is called
    with the job's id once a run no longer counts as running (another may start)."""

    def __init__(self, ended: Callable[[str], None]) -> None:
        super().__init__()
        self._ended = ended

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as error:
                self._run_job_error(job.id, error, error.__traceback__)
            else:
                self._run_job_success(job.id, events)
            self._ended(job.id)

        threading.Thread(target=target, name=f"job-{job.id}", daemon=True).start()


class Daemon:
    """Schedules the jobs: the shared ones from the start, the leader ones while leading."""

    def __init__(
        self, jobs: Sequence[Job], leader: Leadership, leader_check_seconds: float
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names) or "leader_check" in names:
            raise ValueError(f"job names must be unique and not 'leader_check': {names}")
        self.jobs = list(jobs)
        self.stopping = threading.Event()
        self.leading = False
        self._leader = leader
        self._check_seconds = leader_check_seconds
        self._term = threading.Event()  # set when this leadership term ends
        self._term.set()
        self._lock = threading.Lock()  # leadership changes and stopping
        self._running: Counter[str] = Counter()
        self._idle = threading.Condition()
        self._woken: set[str] = set()  # jobs woken since their last run began
        self._scheduler = BackgroundScheduler(
            executors={"default": _DaemonThreads(self._run_again_if_woken)},
            # One run at a time; runs missed while busy collapse into one; never skip a run
            # only because the process was briefly slow to start it.
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )

    def start(self) -> None:
        # APScheduler logs every run at info and every skipped overlap as a warning; both
        # are normal here, and job outcomes are logged below.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        metrics.SCHEDULER_LEADER.set(0)
        check = IntervalTrigger(seconds=self._check_seconds)
        self._schedule(Job("leader_check", self._check_leadership, check), self.stopping)
        for job in self.jobs:
            if not job.leader_only:
                self._schedule(job, self.stopping)
        self._scheduler.start()
        log.info(
            "daemon.started",
            shared=[j.name for j in self.jobs if not j.leader_only],
            leader_only=[j.name for j in self.jobs if j.leader_only],
        )

    def request_stop(self) -> None:
        """Stop taking work. Safe in a signal handler: it only sets events."""
        self.stopping.set()
        self._term.set()

    def close(self, deadline: float) -> bool:
        """Stop, wait until ``deadline`` (``time.monotonic()``) for running jobs to finish
        their current item, then give up leadership. True if every job finished in time."""
        with self._idle:
            self.request_stop()
        self._scheduler.shutdown(wait=False)
        with self._idle:
            finished = self._idle.wait_for(
                lambda: not self._running, timeout=max(deadline - time.monotonic(), 0)
            )
            unfinished = sorted(self._running)
        # The leader check holds the lock while it talks to the database: wait for it no longer
        # than the budget (exiting closes the lock's connection anyway).
        if self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.1)):
            try:
                self._leader.release()
                self._set_leading(False)
            finally:
                self._lock.release()
        if finished:
            log.info("daemon.stopped")
        else:
            log.warning("daemon.stopped_with_jobs_running", jobs=unfinished)
        return finished

    def wake(self, name: str) -> None:
        """Run job ``name`` now, not at its next time: new work came (the inbox's, an
        erasure request). Woken while it runs, it runs again when this run ends, since this
        run may have looked before the work came. Quick and safe from any thread."""
        with self._idle:
            if self.stopping.is_set():
                return
            self._woken.add(name)
        self._run_now(name)

    def _run_again_if_woken(self, name: str) -> None:
        with self._idle:
            woken = name in self._woken and not self.stopping.is_set()
        if woken:
            self._run_now(name)

    def _run_now(self, name: str) -> None:
        # Already running, the scheduler skips this run; then _run_again_if_woken, called
        # once that run no longer counts, asks again.
        with contextlib.suppress(JobLookupError):  # not scheduled (not started yet)
            self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    # -- leadership -------------------------------------------------------------------------

    def _check_leadership(self, _stop: threading.Event) -> None:
        with self._lock:
            if self.stopping.is_set():
                return
            leading = self._leader.try_lead()
            if leading == self.leading:
                return
            # Said before the leader jobs start (or stop): a job never runs while the daemon
            # (and its gauge) still says it is not leading.
            self._set_leading(leading)
            if leading:
                self._term = threading.Event()
                for job in self.jobs:
                    if job.leader_only:
                        self._schedule(job, self._term)
            else:
                self._term.set()  # running leader jobs stop after their current item
                for job in self.jobs:
                    if job.leader_only and self._scheduler.get_job(job.name):
                        self._scheduler.remove_job(job.name)

    def _set_leading(self, leading: bool) -> None:
        if leading != self.leading:
            log.info("daemon.leader", leading=leading)
        self.leading = leading
        metrics.SCHEDULER_LEADER.set(1 if leading else 0)

    # -- running jobs -----------------------------------------------------------------------

    def _schedule(self, job: Job, stop: threading.Event) -> None:
        first: dict[str, Any] = {}
        if isinstance(job.trigger, IntervalTrigger):
            first["next_run_time"] = datetime.now(UTC)
        self._scheduler.add_job(
            self._runner(job, stop), job.trigger, id=job.name, name=job.name, **first
        )

    def _runner(self, job: Job, stop: threading.Event) -> Callable[[], None]:
        def run() -> None:
            with self._idle:  # either close() waits for this run, or it never starts
                if self.stopping.is_set() or stop.is_set():
                    return
                self._running[job.name] += 1
                self._woken.discard(job.name)  # this run sees whatever woke it
            try:
                job.run(stop)
            except AdapterError as error:  # a CRM down or refusing: its line names which, why
                metrics.DAEMON_JOB_RUNS.labels(job.name, "failed").inc()
                log.warning("daemon.job_failed", job=job.name, reason=error.line())
            except Exception as error:
                metrics.DAEMON_JOB_RUNS.labels(job.name, "failed").inc()
                log.error("daemon.job_failed", job=job.name, error=type(error).__name__)
                log.debug("daemon.job_failed", job=job.name, exc_info=True)
            else:
                metrics.DAEMON_JOB_RUNS.labels(job.name, "ok").inc()
            finally:
                with self._idle:
                    self._running[job.name] -= 1
                    if not self._running[job.name]:
                        del self._running[job.name]
                    self._idle.notify_all()

        return run


def serve(
    daemon: Daemon,
    app: Any,
    web: WebSettings,
    host: str,
    port: int,
    faces: Sequence[Face] = (),
) -> bool:
    """Run the daemon beside the receiver ``app`` on uvicorn (listening as ``web`` says, and
    each of ``faces`` on its own listener) until SIGTERM or SIGINT, then stop both within
    :data:`STOP_SECONDS`. True if every job finished its item in time."""
    import uvicorn

    from bridge.runtime import listener

    listening = listener.listening(app, web, host, port, HTTP_GRACE_SECONDS, faces)
    signalled: list[float] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not signalled:
                signalled.append(time.monotonic())
            daemon.request_stop()
            super().handle_exit(sig, frame)

    server = Server(listening.config)
    # Until uvicorn installs its own handlers (and after it restores these), a signal still
    # stops the daemon in order; uvicorn re-raises the signals it caught to these on its way out.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.handle_exit)
    daemon.start()
    try:
        server.run(sockets=listening.sockets)
    except SystemExit:  # uvicorn could not listen; it has logged why
        daemon.close(time.monotonic() + STOP_SECONDS)
        raise ConfigError(
            [f"web: cannot listen on {host}:{port} (see the log); choose another --host/--port"]
        ) from None
    stopped_at = signalled[0] if signalled else time.monotonic()
    return daemon.close(stopped_at + STOP_SECONDS)
