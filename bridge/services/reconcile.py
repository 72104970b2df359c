"""Reconcile: pull, link into subjects, merge and plan (``bridge.services.plan``), apply.

Erased people are never written or linked; every write is audited and kept in the ledger
(for echoes); a cursor moves only when everything its pull planned was applied
(ARCHITECTURE.md, "A sync").
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from bridge import audit
from bridge.adapters.base import (
    AdapterError,
    AllowanceReporter,
    ConsentWrite,
    CrmAdapter,
    LawfulBasisWrite,
    WriteOutcome,
    WriteStatus,
)
from bridge.identity import link_subjects, normalise_email, subject_ref
from bridge.logs import get_logger
from bridge.metrics import SYNC_CHANGES
from bridge.model import AuditEvent, ConsentStatus, CrmRecord, LawfulBasis, Purpose, System
from bridge.policies.minimisation import Minimisation
from bridge.services.people import LookupBoundReached, find_person
from bridge.services.plan import (
    DONE,
    GLOBAL_OPT_OUTS,
    LAWFUL_BASIS_FIELD,
    NEEDS_SELF_SERVICE,
    SEEN,
    Act,
    Change,
    ChangeKind,
    FieldKey,
    Ledger,
    SubjectPlan,
    Writable,
    Written,
    consent_field,
    plan_subject,
)
from bridge.services.watch import OVERLAP, Watch
from bridge.store import erasure as erasure_rows
from bridge.store import records as record_rows
from bridge.store import sync as sync_rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

log = get_logger("bridge.sync")
# A multiple of the vendors' batch sizes (100 and 200 today). Larger batches save
# the read-first calls each adapter makes per batch; a stop waits for one batch to finish.
APPLY_BATCH = 1000
_ORDER = {
    ChangeKind.OPT_OUT: 0,
    ChangeKind.DO_NOT_CALL: 0,
    ChangeKind.CONSENT: 1,
    ChangeKind.LAWFUL_BASIS: 2,
}
WITHDRAWN = ConsentStatus.WITHDRAWN.value
Progress = Callable[[str, int, int | None], None]
"""Told the phase, how far it got and (when known) how far it goes."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


@dataclass
class SyncReport:
    """What a run planned and, unless it was a dry run, what became of each change."""

    dry_run: bool
    full: bool
    records: int = 0
    subjects: int = 0
    suppressed: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    awaiting_person: list[dict[str, Any]] = field(default_factory=list)
    not_allowed: list[dict[str, Any]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    stopped: bool = False
    cursors_moved: bool = False

    @property
    def failed(self) -> int:
        return self.outcomes[WriteStatus.FAILED.value]

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "subjects": self.subjects,
            "suppressed": self.suppressed,
            "planned": len(self.changes),
            "awaiting_person": len(self.awaiting_person),
            "not_allowed": len(self.not_allowed),
            **{status.value: self.outcomes[status.value] for status in WriteStatus},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "full": self.full,
            "changes": self.changes,
            "counts": self.counts(),
            "awaiting_person": self.awaiting_person,
            "not_allowed": self.not_allowed,
            "stopped": self.stopped,
            "cursors_moved": self.cursors_moved,
        }


def crm_error(error: AdapterError) -> dict[str, str | None]:
    """What a run keeps of a CRM's failure: its class, kind and vendor code, and the
    adapter's own words for it (built from the code, never the vendor's message, which may
    quote a value)."""
    return {
        "error": type(error).__name__,
        "failure": error.failure.value,
        "code": error.code,
        "summary": error.summary or None,
    }


@dataclass
class _Run:
    """One run as the console sees it: who started it, what each system gave, how it ended."""

    trigger: str
    full: bool
    dry_run: bool
    started: datetime
    actor: str = "sync"  # whom the audit events of its writes name
    read: Counter[str] = field(default_factory=Counter)
    errors: dict[str, dict[str, str | None]] = field(default_factory=dict)
    error: str | None = None  # the class of an error no CRM raised
    ended_by: str | None = None  # failed or stopped, when the run raised
    # Per system whose adapter reports them, its vendor's limits as the run ended (JSON).
    allowances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def failed(self, error: BaseException) -> None:
        if isinstance(error, AdapterError):
            self.errors[str(error.system)] = crm_error(error)
        elif isinstance(error, Exception):
            self.error = type(error).__name__
        self.ended_by = "failed" if isinstance(error, Exception) else "stopped"

    def row(
        self, report: SyncReport | None, systems: Sequence[str], now: datetime
    ) -> dict[str, Any]:
        counts: dict[str, Any] = report.counts() if report else {}
        if self.error:
            counts["error"] = self.error
        if self.ended_by:
            outcome = self.ended_by
        elif report is not None and report.stopped:
            outcome = "stopped"
        else:
            outcome = "failed" if report is not None and report.failed else "ok"
        return {
            "trigger": self.trigger,
            "full": int(self.full),
            "dry_run": int(self.dry_run),
            "started_at": _iso(self.started),
            "finished_at": _iso(now),
            "outcome": outcome,
            "counts": counts,
            "systems": {
                system: {"records": self.read[system], "error": self.errors.get(system)}
                | ({"allowances": self.allowances[system]} if system in self.allowances else {})
                for system in systems
            },
        }

    def audit_event(self, row: Mapping[str, Any]) -> AuditEvent:
        counts = {k: v for k, v in row["counts"].items() if isinstance(v, int)}
        return AuditEvent(
            actor=self.trigger,
            action="sync.planned" if self.dry_run else "sync.run",
            outcome=row["outcome"],
            details={"full": self.full, **counts},
        )


def allowances(adapters: Mapping[System, CrmAdapter]) -> dict[str, list[dict[str, Any]]]:
    """What each adapter that reports them last heard of its vendor's limits, as JSON: the
    console shows them as of the run's end (they cost no call to learn)."""
    return {
        str(system): [asdict(allowance) for allowance in adapter.allowances()]
        for system, adapter in adapters.items()
        if isinstance(adapter, AllowanceReporter)
    }


class Reconciler:
    """Makes every configured CRM tell the same lawful story about each person."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[System, CrmAdapter],
        pseudonym_key: bytes,
        purposes: Sequence[Purpose],
        minimisation: Minimisation,
        *,
        watch: Watch,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.adapters = dict(adapters)
        self.key = pseudonym_key
        self.purposes = list(purposes)
        self.minimisation = minimisation
        self.watch = watch
        self.progress = progress or (lambda _phase, _done, _total: None)
        self._placements: dict[tuple[System, str, str], Writable] = {}

    # -- runs -------------------------------------------------------------------------------

    def sync(
        self,
        *,
        full: bool = False,
        dry_run: bool = False,
        stop: threading.Event | None = None,
        trigger: str = "cli",
    ) -> SyncReport:
        """Pull, plan and (unless ``dry_run``) apply; cursors move when all is applied.

        Every run is recorded for the console (``sync_runs``), with who started it
        (``trigger``: ``daemon``, ``cli`` or an operator's ``operator:NAME``); a run that
        raises is recorded as failed, with the CRM's error class and code, then re-raised.
        """
        run = _Run(trigger, full, dry_run, _now())
        try:
            report = self._sync(run, stop or threading.Event())
        except BaseException as error:
            run.failed(error)
            self._record(run, None)
            raise
        self._record(run, report)
        return report

    def _sync(self, run: _Run, stop: threading.Event) -> SyncReport:
        dry_run = run.dry_run
        cursors = {s: record_rows.cursor(self.store, f"sync:{s}") for s in self.adapters}
        full = run.full = run.full or any(value is None for value in cursors.values())
        records = self._pull_all(stop, run) if full else self._pull_changed(cursors, stop, run)
        run.read = Counter(str(record.system) for record in records)
        if stop.is_set():  # shutting down: nothing planned, the next run reads it all again
            return SyncReport(dry_run=dry_run, full=full, records=len(records), stopped=True)
        report = self._run(records, full, dry_run, stop, run)
        if not dry_run and not report.stopped and not report.failed:
            with self.store.transaction() as conn:
                for system in self.adapters:
                    record_rows.set_cursor(conn, f"sync:{system}", _iso(run.started))
            report.cursors_moved = True
        log.info("sync.finished", full=full, dry_run=dry_run, **report.counts())
        return report

    def _record(self, run: _Run, report: SyncReport | None) -> None:
        """Keep the run for the console; one started by an operator is audited in their
        name too. Bookkeeping never fails a sync: a run that cannot be kept is logged."""
        run.allowances = allowances(self.adapters)
        row = run.row(report, [str(system) for system in self.adapters], _now())
        audited = run.trigger.startswith("operator:")
        try:
            with self.store.transaction(serialize=AUDIT_LOCK if audited else None) as conn:
                sync_rows.record_run(conn, row)
                if audited:
                    audit.append(conn, run.audit_event(row))
        except Exception as error:
            log.warning("sync.run_not_recorded", error=type(error).__name__)

    def sync_people(self, emails: Collection[str], *, actor: str) -> SyncReport:
        """Reconcile the people these emails reach, now (propagation of one event). Not
        recorded as a run: one comes per webhook event, and each is audited already."""
        records = self._find(emails)
        run = _Run("event", False, False, _now(), actor=actor)
        return self._run(records, False, False, threading.Event(), run)

    def _run(
        self,
        records: list[CrmRecord],
        full: bool,
        dry_run: bool,
        stop: threading.Event,
        run: _Run,
    ) -> SyncReport:
        report = SyncReport(dry_run=dry_run, full=full, records=len(records))
        plans, addresses, agreed = self._plan(records, report)
        changes = [c for p in plans for c in p.changes]
        report.changes = [c.as_dict() for c in changes]
        report.awaiting_person = [c.as_dict() for p in plans for c in p.awaiting_person]
        report.not_allowed = [c.as_dict() for p in plans for c in p.not_allowed]
        if dry_run:
            return report
        self.watch.observe(records)
        outcomes = self._apply(changes, addresses, stop, run)
        for entry, change in zip(report.changes, changes, strict=True):
            outcome = outcomes.get(id(change))
            entry["outcome"] = outcome.status.value if outcome else "not_applied"
            if outcome and outcome.detail:
                entry["detail"] = outcome.detail
            report.outcomes[entry["outcome"]] += 1
        report.stopped = stop.is_set() and len(outcomes) < len(changes)
        self._agree(plans, outcomes, agreed)
        return report

    # -- pull -------------------------------------------------------------------------------

    def _pull_all(self, stop: threading.Event, run: _Run) -> list[CrmRecord]:
        records: list[CrmRecord] = []
        for system, adapter in self.adapters.items():
            read = self._counted(f"reading {system}", adapter.read(), stop)
            run.read[str(system)] = len(read)
            records += read
        return records

    def _pull_changed(
        self, cursors: Mapping[System, str | None], stop: threading.Event, run: _Run
    ) -> list[CrmRecord]:
        """The changed records, and every record of the people they belong to."""
        changed: list[CrmRecord] = []
        for system, adapter in self.adapters.items():
            since = datetime.fromisoformat(str(cursors[system])) - OVERLAP
            phase = f"reading {system} changes"
            read = self._counted(phase, adapter.read(since), stop)
            run.read[str(system)] = len(read)
            changed += read
        if stop.is_set():
            return changed
        emails = {normalise_email(e) for r in changed for e in r.emails}
        by_key = {r.key: r for r in changed}
        by_key.update((r.key, r) for r in self._find(emails))
        return list(by_key.values())

    def _find(self, emails: Collection[str]) -> list[CrmRecord]:
        """Every record of the people these emails reach, through their other emails too.

        People linked beyond the lookup bound are synced with the records found so far, and
        a warning says so: one such chain must not hold up everyone else's sync (erasure,
        export and rectify refuse instead)."""
        try:
            return find_person(self.adapters, emails).records
        except LookupBoundReached as bound:
            log.warning(
                "sync.lookup_bound_reached",
                rounds=bound.rounds,
                addresses=len(bound.partial.emails),
                records=len(bound.partial.records),
                unsearched=bound.unsearched,
            )
            return bound.partial.records

    def _counted(
        self, phase: str, records: Iterable[CrmRecord], stop: threading.Event
    ) -> list[CrmRecord]:
        """Read on, reporting progress, until done or told to stop."""
        read: list[CrmRecord] = []
        stream: Iterator[CrmRecord] = iter(records)
        while not stop.is_set() and (batch := list(islice(stream, 500))):
            read += batch
            self.progress(phase, len(read), None)
        return read

    # -- plan -------------------------------------------------------------------------------

    def _plan(
        self, records: list[CrmRecord], report: SyncReport
    ) -> tuple[list[SubjectPlan], dict[tuple[str, str, str], str], dict[str, str]]:
        """Each kept subject's plan, the address of each record, and the bases agreed so
        far."""
        subjects = link_subjects(self.key, records)
        refs = {s.subject_ref: [subject_ref(self.key, e) for e in s.emails] for s in subjects}
        erased = erasure_rows.suppressed(self.store, {r for rs in refs.values() for r in rs})
        kept = [s for s in subjects if not erased.intersection(refs[s.subject_ref])]
        report.subjects, report.suppressed = len(kept), len(subjects) - len(kept)
        ledger = self._ledger([r.key for s in kept for r in s.records])
        agreed = sync_rows.agreed_bases(self.store, [s.subject_ref for s in kept])
        plans = []
        for done, subject in enumerate(kept, 1):
            basis = agreed.get(subject.subject_ref)
            plans.append(
                plan_subject(
                    subject,
                    self.purposes,
                    placement=self._placement,
                    agreed_basis=LawfulBasis(basis) if basis else None,
                    ledger=ledger,
                )
            )
            if done % 1000 == 0 or done == len(kept):
                self.progress("planning", done, len(kept))
        addresses = {r.key: r.emails[0] for s in kept for r in s.records if r.emails}
        if not report.dry_run:
            self._note_states([r for s in kept for r in s.records], ledger)
        return plans, addresses, agreed

    def _note_states(self, records: Sequence[CrmRecord], ledger: Ledger) -> None:
        """Keep when each opt-out and lawful basis was first read, and forget the ledger's
        echoes of states the records have moved away from (the person acted since), and the
        changes left to the person once the record holds them (the person made them)."""
        now = _iso(_now())
        seen: list[dict[str, Any]] = []
        stale: list[FieldKey] = []
        for record in records:
            basis = record.lawful_basis.value if record.lawful_basis else None
            states: dict[str, str | None] = {LAWFUL_BASIS_FIELD: basis}
            first_seen = {LAWFUL_BASIS_FIELD: record.modified_at}
            for flag in GLOBAL_OPT_OUTS:
                opt_out = record.opt_out
                held = opt_out is not None and opt_out.holds(flag.channel)
                states[flag.field] = WITHDRAWN if held else None
                first_seen[flag.field] = opt_out.changed_at if opt_out and held else None
            states |= {consent_field(c.purpose): c.status.value for c in record.consents}
            for field_name, state in states.items():
                key = (*record.key, field_name)
                before = ledger.get(key)
                moved = before is not None and before.value != state
                waiting = before is not None and before.outcome == NEEDS_SELF_SERVICE
                # An echo the record moved away from, or a change left to the person that
                # the record now holds: either way, the person acted.
                if before is not None and moved != waiting:
                    stale.append(key)
                    before = None
                if before is None and state is not None and field_name in first_seen:
                    act = Act(record.system, record.id, first_seen[field_name])
                    seen.append(_ledger_row(key, state, act, SEEN, now))
        if seen or stale:
            with self.store.transaction() as conn:
                sync_rows.forget_writes(conn, stale)
                sync_rows.record_writes(conn, seen)

    def _placement(self, record: CrmRecord, field_name: str) -> Writable:
        key = (record.system, record.object_type.value, field_name)
        if key not in self._placements:
            where = self.adapters[record.system].field_for(record.object_type.value, field_name)
            if where is None:
                self._placements[key] = Writable.NOT_HELD
            elif self.minimisation.permits(record.system, *where):
                self._placements[key] = Writable.YES
            else:
                self._placements[key] = Writable.NOT_ALLOWED
        return self._placements[key]

    def _ledger(self, keys: Collection[tuple[str, str, str]]) -> Ledger:
        return {
            key: Written(
                row["value"],
                Act(
                    row["act_system"],
                    row["act_record"],
                    datetime.fromisoformat(row["act_at"]) if row["act_at"] else None,
                ),
                row["outcome"],
            )
            for key, row in sync_rows.ledger(self.store, keys).items()
        }

    # -- apply ------------------------------------------------------------------------------

    def _apply(
        self,
        changes: Sequence[Change],
        addresses: Mapping[tuple[str, str, str], str],
        stop: threading.Event,
        run: _Run,
    ) -> dict[int, WriteOutcome]:
        """Each system's writes in batches; outcomes by change (``id``), audited.

        Like changes go together, so that each batch fills the vendor's own batches:
        opt-outs, then withdrawals, then grants (the GDPR-safe order), then lawful bases.
        """
        outcomes: dict[int, WriteOutcome] = {}
        total = len(changes)
        for system, adapter in self.adapters.items():
            mine = sorted(
                (c for c in changes if c.record.system is system),
                key=lambda c: (_ORDER[c.kind], c.value != WITHDRAWN, c.field),
            )
            for kind_is_basis in (False, True):
                group = [c for c in mine if (c.kind is ChangeKind.LAWFUL_BASIS) is kind_is_basis]
                for start in range(0, len(group), APPLY_BATCH):
                    if stop.is_set():
                        return outcomes
                    batch = group[start : start + APPLY_BATCH]
                    results = self._write(adapter, batch, addresses, kind_is_basis, run)
                    self._settle(batch, results, run.actor)
                    outcomes.update((id(c), r) for c, r in zip(batch, results, strict=True))
                    self.progress("applying", len(outcomes), total)
        return outcomes

    @staticmethod
    def _write(
        adapter: CrmAdapter,
        batch: Sequence[Change],
        addresses: Mapping[tuple[str, str, str], str],
        basis: bool,
        run: _Run,
    ) -> list[WriteOutcome]:
        try:
            if basis:
                return adapter.write_lawful_bases(
                    [LawfulBasisWrite(c.record, LawfulBasis(c.value)) for c in batch]
                )
            return adapter.write_consents(
                [
                    ConsentWrite(
                        record=c.record,
                        email=addresses.get(c.key[:3], ""),
                        purpose=c.purpose,
                        channel=c.channel,
                        status=ConsentStatus(c.value),
                        lawful_basis=c.lawful_basis,
                        explanation=c.vendor_explanation(),
                        evidence=c.evidence,
                    )
                    for c in batch
                ]
            )
        except AdapterError as error:  # the whole call failed, after the adapter's retries
            run.errors[str(error.system)] = crm_error(error)
            return [WriteOutcome(c.record, WriteStatus.FAILED, str(error)[:300]) for c in batch]

    def _settle(self, batch: Sequence[Change], results: Sequence[WriteOutcome], actor: str) -> None:
        """Audit every outcome and keep what was written (or refused) in the ledger."""
        now = _iso(_now())
        kept = [
            _ledger_row(
                c.key,
                c.value,
                c.follows,
                DONE if r.status is WriteStatus.DONE else NEEDS_SELF_SERVICE,
                now,
            )
            for c, r in zip(batch, results, strict=True)
            if r.status in (WriteStatus.DONE, WriteStatus.NEEDS_SELF_SERVICE)
        ]
        explicit = {sync_rows.key_of(row) for row in kept}
        kept += [
            _ledger_row((*c.key[:3], implied), WITHDRAWN, c.follows, DONE, now)
            for c, r in zip(batch, results, strict=True)
            if r.status is WriteStatus.DONE
            for implied in c.implied
            if (*c.key[:3], implied) not in explicit
        ]
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            sync_rows.record_writes(conn, kept)
            for change, result in zip(batch, results, strict=True):
                audit.append(conn, _audit_event(change, result, actor))
        for change, result in zip(batch, results, strict=True):
            SYNC_CHANGES.labels(change.record.system, change.kind.value, result.status).inc()
            if result.status is WriteStatus.FAILED:
                log.warning(
                    "sync.write_failed",
                    system=change.record.system,
                    record_id=change.record.id,
                    change=change.field,
                    detail=result.detail,
                )

    def _agree(
        self,
        plans: Sequence[SubjectPlan],
        outcomes: Mapping[int, WriteOutcome],
        before: Mapping[str, str],
    ) -> None:
        """Remember the basis of each subject whose systems now all hold a new one."""
        settled = {WriteStatus.DONE, WriteStatus.ALREADY}
        agreed = {
            plan.subject_ref: plan.lawful_basis.value
            for plan in plans
            if plan.lawful_basis is not None
            and before.get(plan.subject_ref) != plan.lawful_basis.value
            and all(
                id(c) in outcomes and outcomes[id(c)].status in settled
                for c in plan.changes
                if c.field == LAWFUL_BASIS_FIELD
            )
        }
        if agreed:
            with self.store.transaction() as conn:
                sync_rows.set_agreed_bases(conn, agreed, _iso(_now()))


def _ledger_row(key: FieldKey, value: str, act: Act, outcome: str, now: str) -> dict[str, Any]:
    system, object_type, record_id, field_name = key
    return {
        "system": system,
        "object_type": object_type,
        "record_id": record_id,
        "field": field_name,
        "value": value,
        "act_system": act.system,
        "act_record": act.record_id,
        "act_at": act.at.isoformat() if act.at else None,
        "outcome": outcome,
        "written_at": now,
    }


def _audit_event(change: Change, result: WriteOutcome, actor: str) -> AuditEvent:
    details: dict[str, Any] = {
        "object_type": change.record.object_type,
        "value": change.value,
        "follows": f"{change.follows.system}/{change.follows.record_id}",
    }
    if change.purpose:
        details["purpose"] = change.purpose
    if result.detail:
        details["detail"] = result.detail[:300]
    return AuditEvent(
        actor=actor,
        action=f"sync.{change.kind.value}",
        outcome=result.status.value,
        system=change.record.system,
        record_id=change.record.id,
        subject_ref=change.subject_ref,
        reason=change.why,
        details=details,
    )
