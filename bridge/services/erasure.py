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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import audit
from bridge.adapters.base import (
    AdapterError,
    CrmAdapter,
    ErasureMode,
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
from bridge.services.people import find_person
from bridge.store import data_keys, leases
from bridge.store import erasure as rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

log = get_logger("bridge.erasure")
RECEIVED, PLANNED, COMPLETED, FAILED = "received", "planned", "completed", "failed"
OPEN = (RECEIVED, PLANNED, FAILED)
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
        if request["status"] == COMPLETED:
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
        return self._targets(find_person(self.adapters, emails).emails)

    def _targets(self, emails: Sequence[str]) -> list[tuple[ErasureTarget, LegalHold | None]]:
        """Every record and address to erase in every system, with the hold on it, if any."""
        planned = []
        for adapter in self.adapters.values():
            targets = adapter.erasure_targets(emails)
            held = adapter.related(targets, self.holds) if self.holds else {}
            planned += [(t, held.get(t.id) if t.id else None) for t in targets]
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

    def plan(self, request_id: str) -> int:
        """Find every record of the subject in every system and store one step for each.

        Another instance may plan or complete the same request meanwhile (the daemon runs on
        several): steps already stored are skipped, the emails found join those stored, and a
        request completed in the meantime is left as it is, its emails destroyed.
        """
        request = self._request(request_id)
        emails = find_person(self.adapters, self._open(request)).emails
        steps = [
            {
                "request_id": request_id,
                "target_key": _target_key(target, self._ref(target.email)),
                "system": target.system,
                "object_type": target.object_type,
                "record_id": target.id,
                "email_ref": self._ref(target.email),
                "action": hold.action if hold else None,
                "hold": hold.name if hold else None,
                "hold_reason": hold.reason if hold else None,
            }
            for target, hold in self._targets(emails)
        ]
        # The audit lock, as completion takes it: a plan and a completion never interleave.
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            current = rows.current_request(conn, request_id)
            if current is None or current["status"] == COMPLETED:
                return 0
            known = self._open(current)
            rows.add_steps(conn, steps)
            rows.set_emails(conn, request_id, self._seal(sorted({*known, *emails})), status=PLANNED)
        return len(steps)

    def run(
        self, request_id: str, wait_seconds: float = 60, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        """Plan if needed, run every due step, then verify and complete when all are done.

        Steps that failed transiently are retried until ``wait_seconds`` pass; a request that
        cannot finish now stays open, and a later run (or the daemon) picks it up. Once
        ``stop`` is set, the step under way finishes, steps claimed but not started are
        released, and the request stays open. A vendor refusing to plan or verify fails the
        request and its error is raised. A failed request is left as it is: it runs again
        once tried again (:meth:`retry`, the daemon's :meth:`drain`, or asked for again).
        """
        try:
            return self._run(request_id, wait_seconds, stop or threading.Event())
        except AdapterError as error:
            self._fail(request_id, str(error)[:500])
            raise

    def _run(self, request_id: str, wait_seconds: float, stop: threading.Event) -> dict[str, Any]:
        request = self._request(request_id)
        if request["status"] == RECEIVED:
            self.plan(request_id)
            request = self._request(request_id)
        if request["status"] == COMPLETED:  # perhaps by another instance, while we planned
            return self.view(request_id)
        if request["status"] == FAILED:  # it waits to be tried again, planning included
            return self.view(request_id)
        emails = self._open(request)
        by_ref = {subject_ref(self.key, e): e for e in emails}
        deadline = time.monotonic() + wait_seconds
        while True:
            now = self.clock()
            claimed: list[dict[str, Any]] = []
            if not stop.is_set():
                claimed = rows.claim_steps(
                    self.store, request_id, _iso(now), _iso(now + self.lease), limit=50
                )
            for index, step in enumerate(claimed):
                if stop.is_set():
                    rows.release_steps(self.store, [s["id"] for s in claimed[index:]])
                    break
                # Steps are claimed together under one lease; a slow batch may outlive it,
                # and another instance may have claimed the rest: never start those.
                if rows.renew_step(self.store, step, _iso(self.clock() + self.lease)):
                    self._execute(request, step, by_ref)
            pending = [s for s in rows.steps(self.store, request_id) if s["status"] in _OPEN]
            if not pending or stop.is_set() or (not claimed and time.monotonic() >= deadline):
                break
            if not claimed:
                _sleep_until_due(pending, self.clock, stop)
        if pending:
            with self.store.transaction() as conn:
                rows.mark_unfinished(conn, request_id, PLANNED)
        elif any(s["status"] == leases.DEAD for s in rows.steps(self.store, request_id)):
            self._fail(request_id, None)  # the view's failures name the dead steps
        else:
            self._finish(request, emails)
        return self.view(request_id)

    def retry(self, request_id: str, wait_seconds: float = 60) -> dict[str, Any]:
        """Try a request again now, planning included (``bridge requests --retry``): what was
        never planned is planned, dead steps get a fresh set of attempts."""
        request = self._request(request_id)
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if rows.reopen(conn, request_id):
                audit.append(conn, _retried(request_id, request["subject_ref"], "cli"))
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
        completed = 0
        for request in rows.workable(self.store, _iso(now)):
            if stop.is_set():
                break
            if request["status"] == FAILED:
                with self.store.transaction(serialize=AUDIT_LOCK) as conn:
                    due = rows.reopen(conn, request["id"], retry_due_by=_iso(now))
                    if due:
                        retried = _retried(request["id"], request["subject_ref"], "daemon")
                        audit.append(conn, retried)
                if not due:  # another instance took it
                    continue
            try:
                view = self.run(request["id"], wait_seconds=0, stop=stop)
            except Exception as error:  # one request's trouble must not hold up the others
                problem = {"problem": str(error)} if isinstance(error, KeyNotConfigured) else {}
                log.warning(
                    "erasure.drain_failed",
                    request=request["id"],
                    error=type(error).__name__,
                    **problem,
                )
                continue
            completed += view["status"] == COMPLETED
        return completed

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

    def extend(self, request_id: str, months: int, reason: str | None) -> dict[str, Any]:
        """Extend an open request's deadline by ``months`` (Art. 12(3)): two further months at
        most in all, each counted from receipt, with the reasons for the delay (no personal
        data), decided within the first month, when the person must be told. Audited; the
        receipt states it."""
        if not reason or not reason.strip():
            raise ConfigError(["--extend needs --reason: Art. 12(3) asks for the reasons"])
        check_reason("--reason", reason)
        now = self.clock()
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            request = rows.current_request(conn, request_id)
            if request is None:
                raise BridgeError(f"no erasure request {request_id}")
            if request["status"] == COMPLETED:
                raise BridgeError(f"request {request_id} is completed: nothing to extend")
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
                    actor="cli",
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

    # -- steps ------------------------------------------------------------------------------

    def _execute(
        self, request: Mapping[str, Any], step: Mapping[str, Any], by_ref: Mapping[str, str]
    ) -> None:
        system = System(step["system"])
        target = ErasureTarget(
            system, step["object_type"], step["record_id"], by_ref.get(step["email_ref"] or "")
        )
        now = _iso(self.clock())
        if step["action"] == REFUSE:
            self._settle_done(request, step, REFUSED, now)
            return
        try:
            mode: ErasureMode = "anonymize" if step["action"] == ANONYMIZE else request["mode"]
            result = self.adapters[system].erase(target, mode)
            outcome = result.status.value
        except NotFound:
            outcome = ErasureStatus.ALREADY_GONE.value
        except AdapterError as error:
            self._failed_step(request, step, error)
            return
        self._settle_done(request, step, outcome, now)

    def _settle_done(
        self, request: Mapping[str, Any], step: Mapping[str, Any], outcome: str, now: str
    ) -> None:
        rows.settle_step(
            self.store, step["id"], status=leases.DONE, outcome=outcome, finished_at=now,
            available_at=None, last_error=None,
        )  # fmt: skip
        self._audit_step(request, step, outcome, "done")

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
            self._audit_step(request, step, "dead_letter", "failed", reason)
            return
        log.info("erasure step will be retried", step=step["id"], reason=reason)

    def _audit_step(
        self,
        request: Mapping[str, Any],
        step: Mapping[str, Any],
        outcome: str,
        status: str,
        error: str | None = None,
    ) -> None:
        why = f"request {request['id']}"
        if step["hold"]:
            article = "Art. 17(3) refusal" if step["action"] == REFUSE else "anonymised instead"
            why += f"; legal hold {step['hold']} ({article}): {step['hold_reason']}"
        audit.record(
            self.store,
            AuditEvent(
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
            ),
        )

    # -- verification and completion --------------------------------------------------------

    def verify(self, emails: Iterable[str], kept: Collection[str] = ()) -> dict[str, int]:
        """How many records each system still holds for these emails (all zero to pass),
        besides the ``kept`` record ids a legal hold refused to erase."""
        addresses = list(emails)
        return {
            system: sum(r.id not in kept for r in adapter.find_by_emails(addresses))
            for system, adapter in self.adapters.items()
        }

    def _finish(self, request: Mapping[str, Any], emails: list[str]) -> None:
        steps = rows.steps(self.store, request["id"])
        kept = {s["record_id"] for s in steps if s["outcome"] == REFUSED}
        found = self.verify(emails, kept)
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
            if current is None or current["status"] == COMPLETED:
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
            # The key's bytes out of the database's files now; if busy, the daemon's scrub job.
            if not data_keys.scrub(self.store):
                log.info("erasure.scrub_deferred", request=request["id"])
        else:
            log.warning("erasure.verification_failed", **outcome, records_found=found)

    # -- reading ----------------------------------------------------------------------------

    def view(self, request_id: str) -> dict[str, Any]:
        """A request's state with per-system outcomes; no personal data."""
        request = self._request(request_id)
        steps = rows.steps(self.store, request_id)
        now = self.clock()
        done = request["status"] == COMPLETED
        return {
            "id": request_id,
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
            "systems": _outcomes_by_system(steps),
            "legal_holds": _holds(steps),
            "failures": [
                {"system": s["system"], "object_type": s["object_type"], "reason": s["last_error"]}
                for s in steps
                if s["status"] == leases.DEAD
            ],
        }

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
            if current is None or current["status"] == COMPLETED:
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


_OPEN = (leases.PENDING, leases.PROCESSING)
ANONYMIZE, REFUSE = "anonymize", "refuse"  # what a legal hold does instead of deleting
REFUSED = "refused"  # the outcome of a step a hold refused


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
    pending: Sequence[Mapping[str, Any]], clock: Callable[[], datetime], stop: threading.Event
) -> None:
    due = min(s["available_at"] or _iso(clock()) for s in pending)
    wait = (datetime.fromisoformat(due) - clock()).total_seconds()
    stop.wait(min(max(wait, 0.05), 5.0))
