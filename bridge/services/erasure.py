"""Erasure (GDPR Art. 17): asked once, erased in every system, verified, kept erased, receipted.

Stored first (emails encrypted), planned into one step per system and record or address,
run with retries, verified by searching again, then suppressed and receipted; every stage
resumes from the store after a crash (ARCHITECTURE.md, "An erasure"). Due one calendar month
from receipt, extendable by two (Art. 12(3)); a request that fails is retried by the daemon
until then and flagged well before (:class:`Escalation`).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from bridge import audit
from bridge.adapters.base import (
    AdapterError,
    CrmAdapter,
    ErasureMode,
    ErasureResult,
    ErasureStatus,
    ErasureTarget,
    NotFound,
    Permanent,
)
from bridge.config import ErasureSettings, LegalHold
from bridge.errors import BridgeError, ConfigError
from bridge.identity import normalise_email, subject_ref
from bridge.logs import get_logger, personal_kind
from bridge.model import AuditEvent, System
from bridge.policies.deadlines import MAX_EXTENSION_MONTHS, answer_due
from bridge.sealing import KeyNotConfigured, Keyring, Sealed
from bridge.services.people import LookupBoundReached, find_people
from bridge.store import data_keys, leases
from bridge.store import erasure as rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store, chunked

log = get_logger("bridge.erasure")
T = TypeVar("T")
RECEIVED, PLANNED, COMPLETED, FAILED = "received", "planned", "completed", "failed"
CANCELLED = "cancelled"  # withdrawn before any step was tried (the console's cancel)
OPEN = (RECEIVED, PLANNED, FAILED)
CLOSED = (COMPLETED, CANCELLED)  # nothing more happens to these; they hold no address
ID_PREFIX = 8  # the shortest prefix that names a request (the demo prints 8 characters)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def check_reason(option: str, reason: str | None) -> None:
    """A reason is kept in clear, on the receipt and in the audit log: refuse one that holds
    personal data, saying so and why."""
    if reason and (kind := personal_kind(reason)):
        raise ConfigError(
            [
                f"{option} holds what looks like {kind}; it is kept in clear on the receipt and "
                "in the audit log, which hold no personal data: give a ticket number or a few "
                "words instead"
            ]
        )


@dataclass(frozen=True)
class Escalation:
    """How the daemon keeps at a request that fails: it tries again after an exponential,
    jittered wait (``retry_seconds``, doubling up to ``retry_max_seconds``) until the due
    date, and flags the request once it has failed for ``flag_after``, or is unfinished
    within ``flag_before_due`` of its due date: well before it is overdue."""

    retry_seconds: float = 300.0
    retry_max_seconds: float = 6 * 3600.0
    flag_after: timedelta = timedelta(hours=24)
    flag_before_due: timedelta = timedelta(days=7)

    @classmethod
    def of(cls, settings: ErasureSettings) -> Escalation:
        return cls(
            retry_seconds=settings.retry_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            flag_after=timedelta(hours=settings.flag_after_hours),
            flag_before_due=timedelta(days=settings.flag_days_before_due),
        )

    def retry_at(self, failures: int, now: datetime, due: datetime) -> datetime | None:
        """When to try again after the ``failures``-th failure: never past the due date, and
        not at all once it has come (the operator's ``bridge requests --retry`` then)."""
        if now >= due:
            return None
        wait = leases.backoff(self.retry_seconds, failures, random.random(), self.retry_max_seconds)
        return min(now + wait, due)

    def flagged(self, request: Mapping[str, Any], now: datetime) -> bool:
        """Whether the request is flagged now: once flagged, until it completes (or is
        extended, and judged again)."""
        if request["status"] in CLOSED:
            return False
        if request["flagged_at"] is not None:
            return True
        if datetime.fromisoformat(request["due_at"]) - now <= self.flag_before_due:
            return True
        since = request["failing_since"]
        return since is not None and now - datetime.fromisoformat(since) >= self.flag_after


def standing(store: Store, escalation: Escalation, now: datetime) -> dict[str, int]:
    """How many requests are open, failed, flagged and overdue (one may be several): the
    ``bridge_erasure_requests`` gauges."""
    counts = dict.fromkeys(("open", "failed", "flagged", "overdue"), 0)
    for request in rows.requests(store, OPEN):
        counts["open"] += 1
        counts["failed"] += request["status"] == FAILED
        counts["flagged"] += escalation.flagged(request, now)
        counts["overdue"] += request["due_at"] < _iso(now)
    return counts


def days_left(due_at: str, now: datetime) -> int:
    """Whole days until a request's due date, below zero exactly when :meth:`Erasure.view`
    says it is overdue: the console's badge."""
    return (datetime.fromisoformat(due_at) - now) // timedelta(days=1)


class Erasure:
    """Runs erasure requests against every configured adapter."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[System, CrmAdapter],
        keyring: Keyring,
        pseudonym_key: bytes,
        *,
        holds: Sequence[LegalHold] = (),
        max_attempts: int = 6,
        backoff_seconds: float = 2.0,
        lease_seconds: float = 30,
        escalation: Escalation = Escalation(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.adapters = dict(adapters)
        self.keyring = keyring
        self.key = pseudonym_key
        self.holds = list(holds)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.escalation = escalation
        self.clock = clock

    # -- requests ---------------------------------------------------------------------------

    def dry_run(self, emails: Sequence[str]) -> list[tuple[ErasureTarget, LegalHold | None]]:
        """What a request for these emails would erase now, and which legal hold keeps what;
        nothing is stored or changed."""
        [person] = find_people(self.adapters, [emails])
        [planned] = self._targets([person.emails])
        return planned

    def _targets(
        self, people: Sequence[Sequence[str]]
    ) -> list[list[tuple[ErasureTarget, LegalHold | None]]]:
        """Per person, every record and address to erase in every system, with the hold on
        it, if any: each system asked about everyone at once."""
        planned: list[list[tuple[ErasureTarget, LegalHold | None]]] = [[] for _ in people]
        for adapter in self.adapters.values():
            found = adapter.erasure_targets(people)
            every = [target for targets in found for target in targets]
            held = adapter.related(every, self.holds) if self.holds and every else {}
            for mine, targets in zip(planned, found, strict=True):
                mine += [(t, held.get(t.id) if t.id else None) for t in targets]
        return planned

    def submit(
        self,
        emails: Sequence[str],
        mode: ErasureMode,
        reason: str | None,
        trigger: str,
        origin: str | None = None,
    ) -> str:
        """Store a request (the emails encrypted); nothing is erased until it runs.

        Asking again for a person whose request is still open returns that request, so a
        command interrupted half-way is simply run again, and a failed one is tried again
        (planned again: what was never planned is); so does a triggering event (``origin``,
        e.g. a vendor's deletion event) that already made one.
        """
        addresses = sorted({normalise_email(e) for e in emails if e.strip()})
        if not addresses:
            raise BridgeError("erase needs at least one email address")
        check_reason("--reason", reason)
        request_id = uuid.uuid4().hex  # no dashes: dashed digit groups read as a phone number
        now = self.clock()
        ref = subject_ref(self.key, addresses[0])
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if origin and (earlier := rows.request_for_origin(conn, origin)):
                return earlier
            if open_request := rows.open_request_for(conn, ref):
                if rows.reopen(conn, open_request, failed_only=True):
                    audit.append(conn, _retried(open_request, ref, trigger))
                return open_request
            rows.add_request(
                conn,
                {
                    "id": request_id,
                    "subject_ref": ref,
                    "mode": mode,
                    "reason": reason,
                    "trigger": trigger,
                    "status": RECEIVED,
                    "received_at": _iso(now),
                    "due_at": _iso(answer_due(now)),
                    "origin": origin,
                },
                self._seal(addresses),
            )
            audit.append(
                conn,
                AuditEvent(
                    actor=trigger,
                    action="erasure.requested",
                    outcome="received",
                    subject_ref=ref,
                    reason=f"request {request_id}",
                    details={"mode": mode, "emails": len(addresses)}
                    | ({"origin": origin} if origin else {}),
                ),
            )
        return request_id

    def plan(self, request_ids: Sequence[str]) -> int:
        """Plan these requests and leave them to the daemon's erasure job, woken to run them
        at once (``erase --no-wait``, the console); returns how many steps were planned."""
        return self._plan(request_ids, for_the_daemon=True)

    def _plan(self, request_ids: Sequence[str], for_the_daemon: bool = False) -> int:
        """Find every record of each request's subject in every system, for all of them at
        once, and store one step for each; returns how many steps were planned. A caller
        that runs them itself does not wake the daemon's job to compete for their steps.

        Another instance may plan or complete the same requests meanwhile (the daemon runs on
        several): steps already stored are skipped, the emails found join those stored, and a
        request completed in the meantime is left as it is, its emails destroyed.
        """
        requests = [r for r in map(self._request, request_ids) if r["status"] not in CLOSED]
        people = find_people(self.adapters, [self._open(r) for r in requests])
        planned = self._targets([person.emails for person in people])
        count = 0
        # The audit lock, as completion takes it: a plan and a completion never interleave.
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            for request, person, targets in zip(requests, people, planned, strict=True):
                current = rows.current_request(conn, request["id"])
                if current is None or current["status"] in CLOSED:
                    continue
                steps = [self._step(request["id"], t, hold) for t, hold in targets]
                rows.add_steps(conn, steps)
                emails = sorted({*self._open(current), *person.emails})
                rows.set_emails(conn, request["id"], self._seal(emails), status=PLANNED)
                count += len(steps)
            if for_the_daemon and requests:
                rows.left_to_the_daemon(conn)
        return count

    def _step(
        self, request_id: str, target: ErasureTarget, hold: LegalHold | None
    ) -> dict[str, Any]:
        email_ref = self._ref(target.email)
        return {
            "request_id": request_id,
            "target_key": _target_key(target, email_ref),
            "system": target.system,
            "object_type": target.object_type,
            "record_id": target.id,
            "email_ref": email_ref,
            "action": hold.action if hold else None,
            "hold": hold.name if hold else None,
            "hold_reason": hold.reason if hold else None,
        }

    def run(
        self, request_id: str, wait_seconds: float = 60, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        """:meth:`run_many` for one request; its view."""
        self.run_many([request_id], wait_seconds, stop)
        return self.view(request_id)

    def run_many(
        self,
        request_ids: Sequence[str],
        wait_seconds: float = 60,
        stop: threading.Event | None = None,
        ended: Callable[[str], None] = lambda _: None,
    ) -> None:
        """Plan what needs it, run every due step, then verify and complete each request
        whose steps are all done: many requests together, in the vendors' batch sizes.

        Steps that failed transiently are retried until ``wait_seconds`` pass; a request that
        cannot finish now stays open, and a later run (or the daemon) picks it up. Once
        ``stop`` is set, the batch under way finishes and the requests stay open. A vendor
        refusing to plan or verify fails the requests concerned and its error is raised. A
        failed request is left as it is: it runs again once tried again (:meth:`retry`, the
        daemon's :meth:`drain`, or asked for again). ``ended`` hears of each request that
        completes or fails here, as it does.
        """
        stop = stop or threading.Event()
        for chunk in chunked(dict.fromkeys(request_ids), REQUEST_BATCH):
            if stop.is_set():
                return
            self._run_batch(chunk, wait_seconds, stop, ended)

    def _run_batch(
        self,
        request_ids: Sequence[str],
        wait_seconds: float,
        stop: threading.Event,
        ended: Callable[[str], None],
    ) -> None:
        if received := [i for i in request_ids if self._request(i)["status"] == RECEIVED]:
            self._plan_together(received)
        # Completed meanwhile (perhaps by another instance) or failed (it waits to be tried
        # again, planning included): left as they are.
        active = {i: r for i in request_ids if (r := self._request(i))["status"] == PLANNED}
        emails = {i: self._open(r) for i, r in active.items()}
        by_ref = {subject_ref(self.key, e): e for addresses in emails.values() for e in addresses}
        deadline = time.monotonic() + wait_seconds
        ready: list[dict[str, Any]] = []  # settled, to verify with the next ones
        # Requests are verified and completed while the next batches of steps run: a vendor's
        # searches have a limit of their own, which its deletes leave unused.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="erasure-verify") as pool:
            verifying: Future[None] | None = None

            def verify(settled: list[dict[str, Any]]) -> None:
                nonlocal verifying
                if verifying:
                    verifying.result()  # one at a time; its error raised here
                verifying = pool.submit(self._conclude, settled, emails, ended)

            try:
                while active and not stop.is_set():
                    claimed = self._execute(active, by_ref)
                    pending = rows.open_steps(self.store, list(active))
                    if stop.is_set():  # what settled is verified by the next run
                        break
                    ready += [active.pop(i) for i in list(active) if i not in pending]
                    idle = verifying is None or verifying.done()
                    if ready and (idle or len(ready) >= VERIFY_BATCH):
                        verify(ready)
                        ready = []
                    if active and not claimed:
                        if time.monotonic() >= deadline:
                            break
                        due = [at for ats in pending.values() for at in ats]
                        _sleep_until_due(due, self.clock, stop)
                if ready and not stop.is_set():
                    verify(ready)
                if verifying:
                    verifying.result()
            finally:
                with self.store.transaction() as conn:
                    for request_id in active:
                        rows.mark_unfinished(conn, request_id, PLANNED)

    def _plan_together(self, request_ids: Sequence[str]) -> None:
        """Plan these requests together; a vendor's refusal fails them and is raised. When
        someone's addresses run on through shared emails (``LookupBoundReached``), each is
        planned alone: that one fails, saying why, and the others go on (a request alone
        raises it: a command asked about that one)."""
        try:
            self._or_fail(request_ids, lambda: self._plan(request_ids))
        except LookupBoundReached:
            if len(request_ids) == 1:
                raise
            for request_id in request_ids:
                try:
                    self._or_fail([request_id], partial(self.plan, [request_id]))
                except LookupBoundReached as error:
                    self._fail(request_id, str(error)[:500])

    def _or_fail(self, request_ids: Sequence[str], work: Callable[[], T]) -> T:
        """``work`` for these requests; a vendor's refusal fails them all, and is raised."""
        try:
            return work()
        except AdapterError as error:
            for request_id in request_ids:
                self._fail(request_id, str(error)[:500])
            raise

    def _conclude(
        self,
        requests: Sequence[Mapping[str, Any]],
        emails: Mapping[str, list[str]],
        ended: Callable[[str], None],
    ) -> None:
        """Requests whose steps are all settled: failed if a step is dead (the view's
        failures name it), else verified together, then completed one by one."""
        steps = {r["id"]: rows.steps(self.store, r["id"]) for r in requests}
        verifying = []
        for request in requests:
            if any(s["status"] == leases.DEAD for s in steps[request["id"]]):
                self._fail(request["id"], None)
                ended(request["id"])
            else:
                verifying.append(request)
        ids = [r["id"] for r in verifying]
        if not ids:
            return
        found = self._or_fail(ids, partial(self._verify, {i: emails[i] for i in ids}, steps))
        for request in verifying:
            self._finish(request, emails[request["id"]], steps[request["id"]], found[request["id"]])
            ended(request["id"])

    def retry(
        self, request_id: str, wait_seconds: float = 60, actor: str = "cli", run: bool = True
    ) -> dict[str, Any]:
        """Try a request again now, planning included (``bridge requests --retry``): what was
        never planned is planned, dead steps get a fresh set of attempts. Without ``run``, it
        is only planned again and its steps left to the daemon's erasure job (the console: a
        page answers in seconds, whatever the vendors' pace). Audited as ``actor``'s."""
        request = self._request(request_id)
        if request["status"] in CLOSED:
            raise BridgeError(f"request {request_id} is {request['status']}: nothing to retry")
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if rows.reopen(conn, request_id):
                audit.append(conn, _retried(request_id, request["subject_ref"], actor))
        if not run:
            if self._request(request_id)["status"] == RECEIVED:
                self._plan_together([request_id])
            return self.view(request_id)
        return self.run(request_id, wait_seconds)

    def drain(self, stop: threading.Event) -> int:
        """Flag what cannot finish on time, then run every open request as far as it goes
        now, and retry the failed ones whose retry is due, oldest first, until ``stop`` is
        set: the daemon's erasure job. Returns how many completed.

        Instances drain side by side: each step is a leased row claimed with ``SKIP LOCKED``,
        so it runs on one of them, planning and completion re-check the request under a lock,
        and a failed request is reopened by one of them. A request that fails here is logged
        and left for its next retry.
        """
        now = self.clock()
        self.flag(now)
        workable = []
        for request in rows.workable(self.store, _iso(now)):
            if request["status"] == FAILED:
                with self.store.transaction(serialize=AUDIT_LOCK) as conn:
                    due = rows.reopen(conn, request["id"], retry_due_by=_iso(now))
                    if due:
                        retried = _retried(request["id"], request["subject_ref"], "daemon")
                        audit.append(conn, retried)
                if not due:  # another instance took it
                    continue
            workable.append(request["id"])
        completed: list[str] = []

        def ended(request_id: str) -> None:
            if self._request(request_id)["status"] == COMPLETED:
                completed.append(request_id)

        for batch in chunked(workable, REQUEST_BATCH):
            try:
                self.run_many(batch, wait_seconds=0, stop=stop, ended=ended)
            except AdapterError as error:  # the vendor's, for all of them: logged, retried
                log.warning("erasure.drain_failed", requests=len(batch), problem=error.line())
            except Exception:  # one request's trouble (a key gone) must not hold up the others
                for request_id in batch:
                    self._drain_alone(request_id, stop, ended)
        return len(completed)

    def _drain_alone(
        self, request_id: str, stop: threading.Event, ended: Callable[[str], None]
    ) -> None:
        try:
            self.run_many([request_id], wait_seconds=0, stop=stop, ended=ended)
        except Exception as error:
            problem = {"problem": str(error)} if isinstance(error, KeyNotConfigured) else {}
            log.warning(
                "erasure.drain_failed", request=request_id, error=type(error).__name__, **problem
            )

    def flag(self, now: datetime | None = None) -> int:
        """Flag each open request that has failed too long or is near its due date
        (:class:`Escalation`): one audit event and one warning the first time. Returns how
        many were flagged now."""
        now = now or self.clock()
        flagged = 0
        for request in rows.requests(self.store, OPEN):
            if request["flagged_at"] is not None or not self.escalation.flagged(request, now):
                continue  # flagged before, or not (yet) to be
            with self.store.transaction(serialize=AUDIT_LOCK) as conn:
                if not rows.flag(conn, request["id"], _iso(now)):
                    continue  # another instance flagged it a moment ago
                details = {
                    "status": request["status"],
                    "due": request["due_at"][:10],
                    "failing": request["failing_since"] is not None,
                }
                audit.append(
                    conn,
                    AuditEvent(
                        actor="daemon",
                        action="erasure.flagged",
                        outcome="flagged",
                        subject_ref=request["subject_ref"],
                        reason=f"request {request['id']}",
                        details=details,
                    ),
                )
            log.warning("erasure.flagged", request=request["id"], **details)
            flagged += 1
        return flagged

    def extend(
        self, request_id: str, months: int, reason: str | None, actor: str = "cli"
    ) -> dict[str, Any]:
        """Extend an open request's deadline by ``months`` (Art. 12(3)): two further months at
        most in all, each counted from receipt, with the reasons for the delay (no personal
        data), decided within the first month, when the person must be told. Audited as
        ``actor``'s; the receipt states it."""
        if not reason or not reason.strip():
            raise ConfigError(["--extend needs --reason: Art. 12(3) asks for the reasons"])
        check_reason("--reason", reason)
        now = self.clock()
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            request = rows.existing_request(conn, request_id)
            if request["status"] in CLOSED:
                raise BridgeError(f"request {request_id} is {request['status']}: nothing to extend")
            received = datetime.fromisoformat(request["received_at"])
            extensions: list[dict[str, Any]] = json.loads(request["extensions"] or "[]")
            total = sum(e["months"] for e in extensions) + months
            if total > MAX_EXTENSION_MONTHS:
                raise BridgeError(
                    f"request {request_id} would be extended by {total} months in all; Art. "
                    f"12(3) allows {MAX_EXTENSION_MONTHS} further months at most"
                )
            if now > (told_by := answer_due(received)):
                raise BridgeError(
                    f"request {request_id} can no longer be extended: Art. 12(3) requires "
                    f"telling the person within one month of receipt, by {told_by:%Y-%m-%d}"
                )
            due = answer_due(received, total)
            extensions.append({"months": months, "reason": reason, "at": _iso(now)})
            rows.update_request(
                conn, request_id, extensions=json.dumps(extensions), due_at=_iso(due),
                flagged_at=None,  # judged again against the new date
            )  # fmt: skip
            audit.append(
                conn,
                AuditEvent(
                    actor=actor,
                    action="erasure.extended",
                    outcome="extended",
                    subject_ref=request["subject_ref"],
                    reason=reason,
                    details={
                        "request": request_id,
                        "months": months,
                        "total_months": total,
                        "due": f"{due:%Y-%m-%d}",
                    },
                ),
            )
        return self.view(request_id)

    def cancel(self, request_id: str, reason: str, actor: str) -> dict[str, Any]:
        """Withdraw a request not yet started: received, or planned with no step tried yet.
        Its addresses are destroyed with their data key as completion destroys them; nothing
        is suppressed, no receipt written; audited as ``actor``'s, with the reason (no
        personal data). One under way or ended is refused: records may be erased already."""
        if not reason.strip():
            raise ConfigError(["a cancellation needs a reason (no personal data)"])
        check_reason("the reason", reason)
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            request = rows.existing_request(conn, request_id)
            status = request["status"]
            # Its steps are withdrawn first, so that none is claimed meanwhile; if one was
            # tried already, raising undoes that.
            if status not in (RECEIVED, PLANNED) or not rows.withdraw_steps(conn, request_id):
                raise BridgeError(
                    f"request {request_id} has started ({status}); only a request with no step "
                    "tried yet can be cancelled"
                )
            now = _iso(self.clock())
            rows.set_emails(
                conn, request_id, None, status=CANCELLED, completed_at=now, retry_at=None
            )
            audit.append(
                conn,
                AuditEvent(
                    actor=actor,
                    action="erasure.cancelled",
                    outcome="cancelled",
                    subject_ref=request["subject_ref"],
                    reason=reason,
                    details={"request": request_id, "was": status},
                ),
            )
        self._scrub(request_id)
        return self.view(request_id)

    def reveal(self, request_id: str, actor: str) -> list[str]:
        """The addresses an open request holds, for an operator who must see them; audited
        as ``actor``'s. A completed or cancelled request holds none."""
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            request = rows.existing_request(conn, request_id)
            if request["status"] in CLOSED:
                raise BridgeError(
                    f"request {request_id} is {request['status']}: its addresses were "
                    "destroyed with it; there is none to reveal"
                )
            emails = self._open(request)
            audit.append(
                conn,
                AuditEvent(
                    actor=actor,
                    action="erasure.revealed",
                    outcome="revealed",
                    subject_ref=request["subject_ref"],
                    reason=f"request {request_id}",
                    details={"emails": len(emails)},
                ),
            )
        return emails

    # -- steps ------------------------------------------------------------------------------

    def _execute(self, requests: Mapping[str, Mapping[str, Any]], by_ref: Mapping[str, str]) -> int:
        """Claim and run a batch of due steps of these requests: per system as many as one
        of its erase calls carries (``erase_batch``), the systems side by side, leases kept
        while they run; then settle them, the done ones audited in one transaction. Returns
        how many steps were claimed. ``by_ref``: the requests' addresses by pseudonym (a
        step names its address by pseudonym)."""
        now = self.clock()
        lease = _iso(now + self.lease)
        claimed = {
            system: rows.claim_steps(
                self.store, list(requests), system, _iso(now), lease, adapter.erase_batch
            )
            for system, adapter in self.adapters.items()
        }
        steps = [step for batch in claimed.values() for step in batch]
        if not steps:
            return 0
        with self._leases_kept(steps) as mine:
            answers = _side_by_side(
                {
                    system: partial(
                        self._erase, system, [s for s in batch if s["id"] in mine], requests, by_ref
                    )
                    for system, batch in claimed.items()
                    if batch
                }
            )
        answered = [pair for pairs in answers.values() for pair in pairs]
        self._settle_done(requests, [(s, a) for s, a in answered if isinstance(a, str)])
        for step, answer in answered:
            if isinstance(answer, AdapterError):
                self._failed_step(requests[step["request_id"]], step, answer)
        return len(steps)

    def _erase(
        self,
        system: System,
        steps: Sequence[Mapping[str, Any]],
        requests: Mapping[str, Mapping[str, Any]],
        by_ref: Mapping[str, str],
    ) -> list[tuple[Mapping[str, Any], str | AdapterError]]:
        """One system's steps, one erase call per mode (a hold's anonymisation beside the
        requests' own modes); each step's outcome, or the error it failed with. A step a
        legal hold refuses is settled as refused without a call."""
        answers: list[tuple[Mapping[str, Any], str | AdapterError]] = []
        by_mode: dict[ErasureMode, list[Mapping[str, Any]]] = {}
        for step in steps:
            if step["action"] == REFUSE:
                answers.append((step, REFUSED))
            else:
                asked: ErasureMode = requests[step["request_id"]]["mode"]
                mode: ErasureMode = "anonymize" if step["action"] == ANONYMIZE else asked
                by_mode.setdefault(mode, []).append(step)
        for mode, batch in by_mode.items():
            targets = [
                ErasureTarget(
                    system, s["object_type"], s["record_id"], by_ref.get(s["email_ref"] or "")
                )
                for s in batch
            ]
            try:
                results: Sequence[ErasureResult | AdapterError] = self.adapters[system].erase(
                    targets, mode
                )
            except AdapterError as error:
                results = [error] * len(batch)
            answers += [
                (step, _answer(result)) for step, result in zip(batch, results, strict=True)
            ]
        return answers

    @contextmanager
    def _leases_kept(self, steps: Sequence[Mapping[str, Any]]) -> Iterator[set[int]]:
        """The ids of the steps still this claim's, their leases renewed now and every third
        of a lease while the batch runs (a batch paced by a vendor's limit may outlast one
        lease), so no other instance starts them meanwhile."""
        mine = rows.renew_steps(self.store, steps, _iso(self.clock() + self.lease))
        kept = [s for s in steps if s["id"] in mine]
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lease.total_seconds() / 3):
                rows.renew_steps(self.store, kept, _iso(self.clock() + self.lease))

        heartbeat = threading.Thread(target=renew, name="erasure-leases", daemon=True)
        heartbeat.start()
        try:
            yield mine
        finally:
            done.set()
            heartbeat.join()

    def _settle_done(
        self,
        requests: Mapping[str, Mapping[str, Any]],
        done: Sequence[tuple[Mapping[str, Any], str]],
    ) -> None:
        """Steps done, each with its outcome and audit event, in one transaction."""
        if not done:
            return
        now = _iso(self.clock())
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            for step, outcome in done:
                if rows.settle_done(conn, step, outcome, now):
                    event = self._step_event(requests[step["request_id"]], step, outcome, "done")
                    audit.append(conn, event)

    def _failed_step(
        self, request: Mapping[str, Any], step: Mapping[str, Any], error: AdapterError
    ) -> None:
        reason = str(error)[:500]
        policy = leases.RetryPolicy(self.max_attempts, self.backoff_seconds)
        verdict = rows.fail_step(
            self.store, step, policy, permanent=isinstance(error, Permanent), reason=reason,
            now=self.clock(),
        )  # fmt: skip
        if verdict.dead:
            audit.record(
                self.store, self._step_event(request, step, "dead_letter", "failed", reason)
            )
            return
        log.info("erasure step will be retried", step=step["id"], reason=reason)

    def _step_event(
        self,
        request: Mapping[str, Any],
        step: Mapping[str, Any],
        outcome: str,
        status: str,
        error: str | None = None,
    ) -> AuditEvent:
        why = f"request {request['id']}"
        if step["hold"]:
            article = "Art. 17(3) refusal" if step["action"] == REFUSE else "anonymised instead"
            why += f"; legal hold {step['hold']} ({article}): {step['hold_reason']}"
        return AuditEvent(
            actor=request["trigger"],
            action="erasure.refused" if outcome == REFUSED else "erasure.step",
            outcome=outcome,
            system=step["system"],
            record_id=step["record_id"],
            subject_ref=request["subject_ref"],
            reason=why,
            details={"object_type": step["object_type"], "status": status}
            | ({"hold": step["hold"]} if step["hold"] else {})
            | ({"error": error} if error else {}),
        )

    # -- verification and completion --------------------------------------------------------

    def _verify(
        self, emails: Mapping[str, list[str]], steps: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> dict[str, dict[str, int]]:
        """Per request, how many records each system still holds for its emails (all zero
        to pass), besides the records a legal hold refused to erase: each system searched
        once for every address of them all, the systems side by side."""
        every = sorted({email for addresses in emails.values() for email in addresses})
        found = _side_by_side(
            {
                system: partial(adapter.find_by_emails, every)
                for system, adapter in self.adapters.items()
            }
        )
        held = {
            system: [(r.id, {normalise_email(e) for e in r.emails}) for r in records]
            for system, records in found.items()
        }
        counts: dict[str, dict[str, int]] = {}
        for request_id, addresses in emails.items():
            mine = set(addresses)
            kept = {s["record_id"] for s in steps[request_id] if s["outcome"] == REFUSED}
            counts[request_id] = {
                str(system): sum(
                    1
                    for record_id, held_emails in records
                    if record_id not in kept and mine & held_emails
                )
                for system, records in held.items()
            }
        return counts

    def _finish(
        self,
        request: Mapping[str, Any],
        emails: list[str],
        steps: Sequence[Mapping[str, Any]],
        found: Mapping[str, int],
    ) -> None:
        now = _iso(self.clock())
        receipt = {
            "request_id": request["id"],
            "mode": request["mode"],
            "trigger": request["trigger"],
            "reason": request["reason"],
            "received_at": request["received_at"],
            "due_at": request["due_at"],
            "extensions": _extensions(request),
            "completed_at": now,
            "systems": _outcomes_by_system(steps),
            "legal_holds": _holds(steps),
            "verification": {
                "ok": not any(found.values()),
                "emails_searched": len(emails),
                "records_found": found,
            },
        }
        ok = receipt["verification"]["ok"]
        problem = "verification found records: " + ", ".join(
            f"{system} {n}" for system, n in found.items() if n
        )
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            # Another instance may have completed the request, or planned more steps for it,
            # since we looked: completion happens once, and only with every step settled.
            current = rows.current_request(conn, request["id"])
            if current is None or current["status"] in CLOSED:
                return
            if rows.open_step_count(conn, request["id"]):
                return
            if ok:  # the emails are destroyed with their data key
                refs = {subject_ref(self.key, e) for e in emails}
                rows.suppress(conn, refs, f"request {request['id']}", now)
                rows.set_emails(
                    conn, request["id"], None, status=COMPLETED, completed_at=now,
                    receipt=json.dumps(receipt), retry_at=None, problem=None,
                )  # fmt: skip
            else:
                rows.update_request(conn, request["id"], receipt=json.dumps(receipt))
                rows.fail_request(conn, request["id"], **self._failure(current, problem))
            audit.append(
                conn,
                AuditEvent(
                    actor=request["trigger"],
                    action="erasure.completed" if ok else "erasure.verification_failed",
                    outcome="completed" if ok else "failed",
                    subject_ref=request["subject_ref"],
                    reason=f"request {request['id']}",
                    details={"records_found": found},
                ),
            )
        # One line per request that ends here, by id and pseudonym, whatever started it (a
        # command, a vendor's deletion event, a retention rule); never an address.
        outcome = {"request": request["id"], "subject_ref": request["subject_ref"]}
        if ok:
            log.info("erasure.completed", **outcome, trigger=request["trigger"])
            self._scrub(request["id"])
        else:
            log.warning("erasure.verification_failed", **outcome, records_found=found)

    # -- reading ----------------------------------------------------------------------------

    def view(self, request_id: str) -> dict[str, Any]:
        """A request's state with per-system outcomes; no personal data."""
        request = self._request(request_id)
        steps = rows.steps(self.store, request_id)
        return {
            **self._summary(request, self.clock()),
            "systems": _outcomes_by_system(steps),
            "legal_holds": _holds(steps),
            "failures": [
                {"system": s["system"], "object_type": s["object_type"], "reason": s["last_error"]}
                for s in steps
                if s["status"] == leases.DEAD
            ],
        }

    def _summary(self, request: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """A request's state without its steps: dates, deadline, flags."""
        done = request["status"] in CLOSED
        return {
            "id": request["id"],
            "status": request["status"],
            "mode": request["mode"],
            "trigger": request["trigger"],
            "reason": request["reason"],
            "received_at": request["received_at"],
            "due_at": request["due_at"],
            "extensions": _extensions(request),
            "completed_at": request["completed_at"],
            "overdue": not done and request["due_at"] < _iso(now),
            "flagged": self.escalation.flagged(request, now),
            "failing_since": None if done else request["failing_since"],
            "retry_at": request["retry_at"],
            "problem": request["problem"],
        }

    def summaries(self) -> list[dict[str, Any]]:
        """Every request, oldest first, as :meth:`view` states it less the steps: one query
        for them all (the console's list and its CSV)."""
        now = self.clock()
        return [self._summary(request, now) for request in rows.requests(self.store)]

    def steps(self, request_id: str) -> list[dict[str, Any]]:
        """A request's steps in the order planned: system, object, record (None: an address
        erased by email alone), the legal hold on it, status and outcome; no personal data."""
        shown = ("system", "object_type", "record_id", "hold", "action", "status", "outcome",
                 "attempts", "last_error", "finished_at")  # fmt: skip
        return [{k: step[k] for k in shown} for step in rows.steps(self.store, request_id)]

    def trail(self, request_id: str) -> list[dict[str, Any]]:
        """The audit events of a request, oldest first: its subject's that name it."""
        request = self._request(request_id)
        named = f"request {request_id}"
        return [
            event
            for event in audit.events(self.store, request["subject_ref"])
            if named in (event["reason"] or "") or event["details"].get("request") == request_id
        ]

    def requests(self, overdue: bool = False, failed: bool = False) -> list[dict[str, Any]]:
        views = [self.view(r["id"]) for r in rows.requests(self.store)]
        if overdue:
            views = [v for v in views if v["overdue"]]
        if failed:
            views = [v for v in views if v["status"] == FAILED or v["failures"] or v["flagged"]]
        return views

    def receipt(self, request_id: str) -> dict[str, Any]:
        request = self._request(request_id)
        if request["receipt"] is None:
            raise BridgeError(
                f"request {request_id} has no receipt yet (status {request['status']})"
            )
        receipt: dict[str, Any] = json.loads(request["receipt"])
        return receipt

    def resolve(self, given: str) -> str:
        """The id of the request ``given`` names: its id, or a unique prefix of
        :data:`ID_PREFIX` characters or more."""
        prefix = given.strip().lower()
        if len(prefix) < ID_PREFIX or prefix.strip("0123456789abcdef-"):
            raise ConfigError(
                [f"a request id is its hex digits, or its first {ID_PREFIX} or more of them"]
            )
        found = rows.ids_starting(self.store, prefix, limit=2)
        if not found:
            raise BridgeError(f"no erasure request {prefix}")
        if len(found) > 1:
            raise ConfigError([f"request id {prefix} names several requests; give more of it"])
        return found[0]

    # -- helpers ----------------------------------------------------------------------------

    def _request(self, request_id: str) -> dict[str, Any]:
        request = rows.request(self.store, request_id)
        if request is None:
            raise BridgeError(f"no erasure request {request_id}")
        return request

    def _scrub(self, request_id: str) -> None:
        """The bytes of a destroyed data key out of the database's files now; if the database
        is busy, the daemon's scrub job does it."""
        if not data_keys.scrub(self.store):
            log.info("erasure.scrub_deferred", request=request_id)

    def _seal(self, emails: Sequence[str]) -> Sealed:
        return self.keyring.seal(json.dumps(list(emails)).encode())

    def _open(self, request: Mapping[str, Any]) -> list[str]:
        sealed = request["emails_encrypted"]
        if sealed is None:
            raise BridgeError(f"request {request['id']} is complete; its emails are destroyed")
        what = f"erasure request {request['id']}"
        emails: list[str] = json.loads(
            self.keyring.open(what, sealed, request["emails_wrapped_key"])
        )
        return emails

    def _ref(self, email: str | None) -> str | None:
        return subject_ref(self.key, email) if email else None

    def _fail(self, request_id: str, problem: str | None) -> None:
        """The request failed now: its problem kept, and, with one, audited."""
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            current = rows.current_request(conn, request_id)
            if current is None or current["status"] in CLOSED:
                return
            rows.fail_request(conn, request_id, **self._failure(current, problem))
            if problem:
                audit.append(
                    conn,
                    AuditEvent(
                        actor=current["trigger"],
                        action="erasure.failed",
                        outcome="failed",
                        subject_ref=current["subject_ref"],
                        reason=f"request {request_id}",
                        details={"problem": problem},
                    ),
                )

    def _failure(self, request: Mapping[str, Any], problem: str | None) -> dict[str, Any]:
        """What to record of a failure of ``request`` now: the problem, and when the daemon
        tries it again."""
        now = self.clock()
        due = datetime.fromisoformat(request["due_at"])
        retry = self.escalation.retry_at(request["failures"] + 1, now, due)
        return {"problem": problem, "now": _iso(now), "retry_at": _iso(retry) if retry else None}


ANONYMIZE, REFUSE = "anonymize", "refuse"  # what a legal hold does instead of deleting
REFUSED = "refused"  # the outcome of a step a hold refused
REQUEST_BATCH = 1000
"""Requests planned and run together: each vendor asked about all of them in its batch
sizes, and one of its erase calls carries records of many of them (``erase_batch``)."""
VERIFY_BATCH = 200
"""Requests whose steps are settled are verified together as soon as the verification
before is done, and once this many wait, the steps wait for it: fewer searches than one per
handful, and no verification left over at the end."""


def _answer(result: ErasureResult | AdapterError) -> str | AdapterError:
    """A step's outcome from its target's answer: a record not found is already gone."""
    if isinstance(result, NotFound):
        return ErasureStatus.ALREADY_GONE.value
    if isinstance(result, AdapterError):
        return result
    return result.status.value


def _side_by_side(calls: Mapping[System, Callable[[], T]]) -> dict[System, T]:
    """Each system's call in a thread of its own: the vendors' limits are separate, so the
    slowest one, not their sum, sets the pace. An error of any is raised."""
    if len(calls) <= 1:
        return {system: call() for system, call in calls.items()}
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="erasure") as pool:
        futures = {system: pool.submit(call) for system, call in calls.items()}
        return {system: future.result() for system, future in futures.items()}


def _retried(request_id: str, ref: str, actor: str) -> AuditEvent:
    """The audit event of a request tried again, planning included."""
    return AuditEvent(
        actor=actor,
        action="erasure.retried",
        outcome="reopened",
        subject_ref=ref,
        reason=f"request {request_id}",
    )


def _extensions(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    extensions: list[dict[str, Any]] = json.loads(request["extensions"] or "[]")
    return extensions


def _target_key(target: ErasureTarget, email_ref: str | None) -> str:
    what = target.id if target.id is not None else f"email:{email_ref}"
    return f"{target.system}/{target.object_type}/{what}"


def _outcomes_by_system(steps: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: how many steps; per object type, how many records ended in each outcome;
    and how many addresses erased by email alone (a vendor that blocklists them), by outcome.
    Counts of records, never of steps: one person's record and address are one record."""
    systems: dict[str, dict[str, Any]] = {}
    for step in steps:
        entry = systems.setdefault(step["system"], {"steps": 0, "objects": {}, "addresses": {}})
        entry["steps"] += 1
        outcome = step["outcome"] or step["status"]
        if step["record_id"] is None:
            entry["addresses"][outcome] = entry["addresses"].get(outcome, 0) + 1
        else:
            objects: dict[str, Counter[str]] = entry["objects"]
            objects.setdefault(step["object_type"], Counter())[outcome] += 1
    return {
        name: {**e, "objects": {k: dict(v) for k, v in e["objects"].items()}}
        for name, e in systems.items()
    }


def _holds(steps: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records a legal hold kept (anonymised or refused), with the hold's name and reason."""
    return [
        {
            "system": s["system"],
            "object_type": s["object_type"],
            "record_id": s["record_id"],
            "hold": s["hold"],
            "outcome": s["outcome"] or s["status"],
            "reason": s["hold_reason"],
        }
        for s in steps
        if s["hold"]
    ]


def _sleep_until_due(
    pending: Sequence[str | None], clock: Callable[[], datetime], stop: threading.Event
) -> None:
    due = min(at or _iso(clock()) for at in pending)
    wait = (datetime.fromisoformat(due) - clock()).total_seconds()
    stop.wait(min(max(wait, 0.05), 5.0))
