"""Reconcile: pull, link into subjects, merge and plan (``bridge.services.plan``), apply.

Erased people are never written or linked; every write is audited and kept in the ledger
(for echoes); a cursor moves only when everything its pull planned was applied
(ARCHITECTURE.md, "A sync"). A person's own act on their privacy page goes the same way
(``carry``), entering the plan as a record of the pseudo-system ``portal``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal

from bridge import audit
from bridge.adapters.base import (
    AdapterError,
    AllowanceReporter,
    ChangeTracker,
    ConsentWrite,
    CrmAdapter,
    LawfulBasisWrite,
    PreferenceLinks,
    RecordRef,
    TokenExpired,
    TrackedRead,
    WriteOutcome,
    WriteStatus,
)
from bridge.errors import BridgeError
from bridge.identity import link_subjects, normalise_email, subject_ref
from bridge.logs import get_logger
from bridge.metrics import SYNC_CHANGES
from bridge.model import (
    AuditEvent,
    Channel,
    Consent,
    ConsentStatus,
    CrmRecord,
    Evidence,
    GlobalOptOut,
    LawfulBasis,
    ObjectType,
    Purpose,
    Subject,
    System,
)
from bridge.policies.minimisation import Minimisation
from bridge.services.people import LookupBoundReached, find_holders, find_people, find_person
from bridge.services.plan import (
    DONE,
    GLOBAL_OPT_OUTS,
    LAWFUL_BASIS_FIELD,
    NEEDS_SELF_SERVICE,
    OPT_OUT_FIELD,
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
from bridge.services.staging import PAGE, Staging
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
NOT_APPLIED = "not_applied"  # a change no write made: the run stopped first, or was cut short
# What the recovery of a batch cut short found of each change (``Reconciler.recover``).
RECOVERED = {
    True: (DONE, "the vendor holds it: written by a run cut short before its audit"),
    False: (NOT_APPLIED, "the vendor does not hold it: the next plan makes it again"),
}
GRANTED = ConsentStatus.GRANTED.value
FAILED = WriteStatus.FAILED.value
Progress = Callable[[str, int, int | None], None]
"""Told the phase, how far it got and (when known) how far it goes."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


KEEP = 20
"""How many of a run's changes its report keeps by default: the counts are whole, the lists a
sample, so that a run of a million changes fits in memory (``keep=None`` keeps them all)."""
Listed = Literal["changes", "awaiting_person", "not_allowed"]
OnChange = Callable[[dict[str, Any]], None]
"""Told each change of a run as it is settled (a dry run: as it is planned)."""


@dataclass
class SyncReport:
    """What a run planned and, unless it was a dry run, what became of its changes: counted
    whole, and the first ``keep`` of each list kept (all: None)."""

    dry_run: bool
    full: bool
    records: int = 0
    subjects: int = 0
    suppressed: int = 0
    recovered: int = 0
    """Changes of earlier runs' batches cut short, audited by this run first (``recover``)."""
    keep: int | None = KEEP
    changes: list[dict[str, Any]] = field(default_factory=list)
    awaiting_person: list[dict[str, Any]] = field(default_factory=list)
    not_allowed: list[dict[str, Any]] = field(default_factory=list)
    totals: Counter[Listed] = field(default_factory=Counter)
    """How many entries each list had in all (``add``)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    stopped: bool = False
    cursors_moved: bool = False

    @property
    def failed(self) -> int:
        return self.outcomes[WriteStatus.FAILED.value]

    def add(self, listed: Listed, entry: dict[str, Any]) -> None:
        """Count an entry of one list (a change with its outcome); keep it while there is room."""
        self.totals[listed] += 1
        if "outcome" in entry:
            self.outcomes[entry["outcome"]] += 1
        kept: list[dict[str, Any]] = getattr(self, listed)
        if self.keep is None or len(kept) < self.keep:
            kept.append(entry)

    def counts(self) -> dict[str, int]:
        return {
            "records": self.records,
            "subjects": self.subjects,
            "suppressed": self.suppressed,
            "recovered": self.recovered,
            "planned": self.totals["changes"],
            "awaiting_person": self.totals["awaiting_person"],
            "not_allowed": self.totals["not_allowed"],
            **{status.value: self.outcomes[status.value] for status in WriteStatus},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "full": self.full,
            "changes": self.changes,
            "changes_shown": len(self.changes),
            "changes_total": self.totals["changes"],
            "counts": self.counts(),
            "awaiting_person": self.awaiting_person,
            "not_allowed": self.not_allowed,
            "stopped": self.stopped,
            "cursors_moved": self.cursors_moved,
        }


PORTAL = System("portal")
"""The pseudo-system of the acts a person records outside the CRMs, on their privacy page:
planned as a record of its own, never written (no adapter serves it)."""
ActKind = Literal["withdraw", "grant", "unsubscribe_all"]
ACT_KINDS: tuple[ActKind, ...] = ("withdraw", "grant", "unsubscribe_all")
# What a person's act says to the CRMs (vendor fields hold it: no personal data).
ACT_EXPLANATION = {
    "withdraw": "withdrawn by the person on their privacy page",
    "grant": "given by the person on their privacy page",
}
# What each system answers about a carried act, the weightiest first.
ANSWERS = ("failed", "needs_self_service", "applied", "already", "not_kept", "no_record")


@dataclass(frozen=True)
class PersonAct:
    """A person's own act on their privacy page: withdraw or grant one purpose, or leave all
    email (``purpose`` None)."""

    kind: ActKind
    purpose: str | None = None


@dataclass(frozen=True)
class SystemAnswer:
    """What one CRM made of a carried act. ``status``: applied, already (nothing to change),
    failed, needs_self_service (the vendor lets only the person do it: ``preference_url``,
    where it has a page for that), not_kept (its records of the person have no field for
    it, or minimisation keeps the bridge from writing it) or no_record. ``detail`` holds no
    personal data."""

    system: str
    status: str
    detail: str
    preference_url: str | None = None


@dataclass(frozen=True)
class CarryReport:
    answers: tuple[SystemAnswer, ...]

    @property
    def outcome(self) -> str:
        """The weightiest answer of any system."""
        given = {answer.status for answer in self.answers}
        return next((status for status in ANSWERS if status in given), "no_record")


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
    # Per system read by its vendor's change tracking: that read, whose token is kept once
    # the run's cursors move.
    tracked: dict[System, TrackedRead] = field(default_factory=dict)

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
        keep: int | None = KEEP,
        on_change: OnChange | None = None,
    ) -> SyncReport:
        """Pull, plan and (unless ``dry_run``) apply; cursors move when all is applied. A
        run that applies first recovers the batches cut short before (``recover``). The
        report keeps the first ``keep`` changes (all: None); ``on_change`` is told each one
        as it is settled, so that a caller may stream them all.

        Every run is recorded for the console (``sync_runs``), with who started it
        (``trigger``: ``daemon``, ``cli`` or an operator's ``operator:NAME``); a run that
        raises is recorded as failed, with the CRM's error class and code, then re-raised.
        """
        run = _Run(trigger, full, dry_run, _now())
        report = SyncReport(dry_run=dry_run, full=full, keep=keep)
        try:
            self._sync(run, report, stop or threading.Event(), on_change)
        except BaseException as error:
            run.failed(error)
            self._record(run, None)
            raise
        self._record(run, report)
        return report

    def _sync(
        self, run: _Run, report: SyncReport, stop: threading.Event, on_change: OnChange | None
    ) -> None:
        dry_run = run.dry_run
        if not dry_run:  # first: the plan then knows what batches cut short wrote
            report.recovered = self.recover(stop)
        cursors = {s: record_rows.cursor(self.store, f"sync:{s}") for s in self.adapters}
        full = report.full = run.full = run.full or any(v is None for v in cursors.values())
        with Staging.held(self.store, self.key) as staging:
            if full:
                self._pull_all(staging, stop, run)
            else:
                self._pull_changed(staging, cursors, stop, run)
            run.read = Counter(staging.added)
            for system, tracked in run.tracked.items():
                if tracked.deleted:  # the CRM's own deletions: nothing of theirs is held here
                    log.info("sync.deleted_in_crm", system=system, records=tracked.deleted)
            report.records = staging.total
            # Shutting down: what is left waits for the next run, which reads it all again.
            report.stopped = stop.is_set()
            for records in () if report.stopped else staging.people():
                if stop.is_set():
                    report.stopped = True
                    break
                self._run(records, report, stop, run, on_change)
                if report.stopped:
                    break
        if not dry_run and not report.stopped and not report.failed:
            with self.store.transaction() as conn:
                for system in self.adapters:
                    record_rows.set_cursor(conn, f"sync:{system}", _iso(run.started))
                for system, tracked in run.tracked.items():
                    if tracked.token is not None:
                        record_rows.set_cursor(conn, f"track:{system}", tracked.token)
            report.cursors_moved = True
        log.info("sync.finished", full=full, dry_run=dry_run, **report.counts())

    def recover(self, stop: threading.Event | None = None) -> int:
        """Audit what the batches cut short did: those whose process died (or raised)
        between the vendor call and the audit of its outcomes. A batch another process is
        still writing is left to it. Each change a batch meant is audited as
        ``sync.recovered``, done where the vendor now holds the value meant (and kept in
        the ledger as its write would have been, so it is known as an echo) or not_applied;
        then the batch's intents go. Returns how many changes were recovered.

        The vendor is read back through the incremental read, from the oldest intent less
        the usual overlap: a record that read does not return has not changed since, so no
        write reached it. A system no longer configured keeps its intents until it is.
        """
        stop = stop or threading.Event()
        with sync_rows.orphaned_intents(self.store) as rows:
            mine = [row for row in rows if System(row["system"]) in self.adapters]
            if len(mine) < len(rows):
                log.warning("sync.recovery_waits_for_system", intents=len(rows) - len(mine))
            if not mine:
                return 0
            held = self._held_now(mine, stop)
            if stop.is_set():  # shutting down: the next run recovers them
                return 0
            changes = [_intended(row) for row in mine]
            done = [held.get(c.key[:3], {}).get(c.field) == c.value for c in changes]
            events = [
                _audit_event(c, *RECOVERED[d], row["actor"], recovered=True)
                for c, d, row in zip(changes, done, mine, strict=True)
            ]
            # What was not applied leaves nothing in the ledger: the plan makes it again.
            statuses = [WriteStatus.DONE if d else WriteStatus.FAILED for d in done]
            self._keep(changes, statuses, events, {row["batch"] for row in mine})
        log.info("sync.recovered", done=sum(done), not_applied=len(done) - sum(done))
        return len(changes)

    def _held_now(
        self, intents: Sequence[Mapping[str, Any]], stop: threading.Event
    ) -> dict[tuple[str, str, str], dict[str, str | None]]:
        """What each intended record holds now, of those changed since its intents, by
        record; only the records intended are kept as the read goes by."""
        held: dict[tuple[str, str, str], dict[str, str | None]] = {}
        for system in sorted({row["system"] for row in intents}):
            if stop.is_set():
                break
            rows = [row for row in intents if row["system"] == system]
            wanted = {(row["system"], row["object_type"], row["record_id"]) for row in rows}
            since = min(datetime.fromisoformat(row["created_at"]) for row in rows) - OVERLAP
            for record in self.adapters[System(system)].read(since):
                if stop.is_set():
                    break
                if record.key in wanted:
                    held[record.key] = _states(record)
        return held

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

    def sync_many(
        self, groups: Sequence[Collection[str]], *, actor: str
    ) -> tuple[SyncReport, list[Counter[str]]]:
        """Reconcile the people each group of emails reaches, now, all in one run
        (propagation of a batch of webhook events): one lookup for them all
        (``find_people``: each system asked in bulk), one plan, the writes in the vendors'
        batches. Returns the run's report and, per group, the outcomes of the changes to its
        people's records (a record two groups reach counts in both), so that a caller retries
        only the groups whose writes failed. Not recorded as a run: one comes per batch of
        events, and each change is audited already."""
        try:
            people = [person.records for person in find_people(self.adapters, groups)]
        except LookupBoundReached:  # each alone: only the chains that run on are cut short
            people = [self._find(emails) for emails in groups]
        outcomes: list[Counter[str]] = [Counter() for _ in groups]
        reaching: dict[tuple[str, str, str], list[Counter[str]]] = {}
        for found, counted in zip(people, outcomes, strict=True):
            for record in found:
                reaching.setdefault(record.key, []).append(counted)

        def settled(entry: dict[str, Any]) -> None:
            key = (entry["system"], entry["object_type"], entry["record_id"])
            for counted in reaching.get(key, ()):
                counted[entry["outcome"]] += 1

        records = list({r.key: r for found in people for r in found}.values())
        run = _Run("event", False, False, _now(), actor=actor)
        report = SyncReport(dry_run=False, full=False, records=len(records))
        self._run(records, report, threading.Event(), run, settled)
        return report, outcomes

    def carry(self, emails: Sequence[str], act: PersonAct, *, actor: str) -> CarryReport:
        """A person's own act, recorded outside the CRMs (their privacy page), carried to every
        record holding one of ``emails``, the addresses they proved (no closure through a
        record's other addresses), by the sync's own plan, apply, ledger and audit: the act
        enters planning as a record of the pseudo-system ``portal``, dated now, with evidence
        of an active act (capture source ``portal``). Only the changes the act asks for are
        written; any other disagreement waits for the sync. Each configured system answers
        what became of them; the act is audited once more as ``portal.act``."""
        purpose = self._purpose_of(act)
        person = find_holders(self.adapters, emails)
        if not person.emails:
            raise BridgeError("carry: give an address of the person")
        now = _now()
        ref = subject_ref(self.key, person.emails[0])
        records = sorted(person.records, key=lambda r: r.key)
        known = frozenset(normalise_email(e) for r in records for e in r.emails)
        subject = Subject(ref, (*records, _portal_record(act, purpose, now)), known)
        report = SyncReport(dry_run=False, full=False, records=len(records))
        plans, addresses, _ = self._plan([subject], report)
        wanted = [c for plan in plans for c in plan.changes if self._asked(c, act)]
        self.watch.observe(records)
        run = _Run("portal", False, False, now, actor=actor)
        outcomes = self._apply(wanted, addresses, threading.Event(), run)
        field_name = consent_field(act.purpose) if act.purpose else OPT_OUT_FIELD
        holding = {r.system for r in records}
        keeping = {r.system for r in records if self._placement(r, field_name) is Writable.YES}
        erased = bool(report.suppressed)
        answers = []
        for system in self.adapters:
            writes = [(c, outcomes.get(id(c))) for c in wanted if c.record.system == system]
            answer = _answer(system, system in holding, system in keeping, erased, writes)
            answers.append(self._with_page(answer, writes, addresses, set(person.emails)))
        carried = CarryReport(tuple(answers))
        details = {"kind": act.kind, "purpose": act.purpose}
        event = AuditEvent(actor, "portal.act", carried.outcome, subject_ref=ref, details=details)
        audit.record(self.store, event)
        log.info("carry.done", subject_ref=ref, kind=act.kind, purpose=act.purpose,
                 answers={a.system: a.status for a in answers})  # fmt: skip
        return carried

    def _purpose_of(self, act: PersonAct) -> Purpose | None:
        """The configured purpose an act names (None: all email); a malformed act is refused."""
        if act.kind not in ACT_KINDS:
            raise BridgeError("carry: an act is withdraw, grant or unsubscribe_all")
        if act.kind == "unsubscribe_all":
            if act.purpose is not None:
                raise BridgeError("carry: unsubscribe_all names no purpose")
            return None
        found = next((p for p in self.purposes if p.id == act.purpose), None)
        if found is None:
            raise BridgeError(f"carry: {act.kind} names no configured purpose")
        return found

    def _asked(self, change: Change, act: PersonAct) -> bool:
        """Whether a planned change is one the act asks for: its purpose set as asked, or
        for leaving all email the opt-out and the withdrawal of every email purpose."""
        if act.kind == "unsubscribe_all":
            email = {p.id for p in self.purposes if p.channel == Channel.EMAIL}
            withdrawal = change.kind is ChangeKind.CONSENT and change.value == WITHDRAWN
            return change.kind is ChangeKind.OPT_OUT or (withdrawal and change.purpose in email)
        value = WITHDRAWN if act.kind == "withdraw" else GRANTED
        return (
            change.kind is ChangeKind.CONSENT
            and change.purpose == act.purpose
            and change.value == value
        )

    def _with_page(
        self,
        answer: SystemAnswer,
        writes: Sequence[tuple[Change, WriteOutcome | None]],
        addresses: Mapping[tuple[str, str, str], str],
        proved: Collection[str],
    ) -> SystemAnswer:
        """A change only the person may make, with the vendor's own page for it, where the
        vendor has one and the record's address is one the person proved: a preference page
        manages the address it was made for, and no other address is theirs to manage."""
        if answer.status != NEEDS_SELF_SERVICE:
            return answer
        adapter = self.adapters[System(answer.system)]
        waiting = next(c for c, o in writes if o and o.status is WriteStatus.NEEDS_SELF_SERVICE)
        address = addresses.get(waiting.key[:3], "")
        if not isinstance(adapter, PreferenceLinks) or normalise_email(address) not in proved:
            return answer
        try:
            url = adapter.preference_link(address)
        except AdapterError as error:
            log.warning(
                "carry.no_preference_link", system=answer.system, error=type(error).__name__
            )
            return answer
        return replace(answer, preference_url=url)

    def _run(
        self,
        records: list[CrmRecord],
        report: SyncReport,
        stop: threading.Event,
        run: _Run,
        on_change: OnChange | None = None,
    ) -> None:
        """Plan and (unless a dry run) apply the people of ``records`` into ``report``; each
        change is counted, and told to ``on_change``, once settled (a dry run: once planned)."""
        plans, addresses, agreed = self._plan(link_subjects(self.key, records), report)
        for plan in plans:
            for change in plan.awaiting_person:
                report.add("awaiting_person", change.as_dict())
            for change in plan.not_allowed:
                report.add("not_allowed", change.as_dict())

        def settled(change: Change, outcome: WriteOutcome | None) -> None:
            entry = _entry(change, outcome, report.dry_run)
            report.add("changes", entry)
            if on_change is not None:
                on_change(entry)

        changes = [c for p in plans for c in p.changes]
        if report.dry_run:
            for change in changes:
                settled(change, None)
            return
        self.watch.observe(records)
        outcomes = self._apply(changes, addresses, stop, run, settled)
        for change in changes:
            if id(change) not in outcomes:
                settled(change, None)
        report.stopped = stop.is_set() and len(outcomes) < len(changes)
        self._agree(plans, outcomes, agreed)

    # -- pull -------------------------------------------------------------------------------

    def _pull_all(self, staging: Staging, stop: threading.Event, run: _Run) -> None:
        for system, adapter in self.adapters.items():
            records = self._tracked(system, adapter, None, run) or adapter.read()
            for page in self._read(f"reading {system}", records, stop):
                staging.add(page)

    def _pull_changed(
        self,
        staging: Staging,
        cursors: Mapping[System, str | None],
        stop: threading.Event,
        run: _Run,
    ) -> None:
        """The changed records, and every record of the people they belong to. A system
        with change tracking is read from its token (all of it again when the token has
        expired); the others from their cursor's time, less the overlap."""
        for system, adapter in self.adapters.items():
            tracks = isinstance(adapter, ChangeTracker)
            token = record_rows.cursor(self.store, f"track:{system}") if tracks else None
            records = self._tracked(system, adapter, token, run) if token else None
            if records is None:
                since = datetime.fromisoformat(str(cursors[system])) - OVERLAP
                records = adapter.read(since)
            for page in self._read(f"reading {system} changes", records, stop):
                staging.add(page)
                staging.add(self._find({normalise_email(e) for r in page for e in r.emails}))

    def _tracked(
        self, system: System, adapter: CrmAdapter, token: str | None, run: _Run
    ) -> Iterator[CrmRecord] | None:
        """The records of a change-tracking read from ``token`` (None: all, and a first
        token), or None when the adapter tracks no changes."""
        if not isinstance(adapter, ChangeTracker):
            return None
        try:
            tracked = adapter.track(token)
        except TokenExpired:
            log.warning("sync.change_token_expired", system=system)
            tracked = adapter.track(None)
        run.tracked[system] = tracked
        return tracked.records

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

    def _read(
        self, phase: str, records: Iterable[CrmRecord], stop: threading.Event
    ) -> Iterator[list[CrmRecord]]:
        """Read on, a page at a time, reporting progress, until done or told to stop."""
        stream, done = iter(records), 0
        while not stop.is_set() and (page := list(islice(stream, PAGE))):
            done += len(page)
            self.progress(phase, done, None)
            yield page

    # -- plan -------------------------------------------------------------------------------

    def _plan(
        self, subjects: list[Subject], report: SyncReport
    ) -> tuple[list[SubjectPlan], dict[tuple[str, str, str], str], dict[str, str]]:
        """Each kept (not erased) subject's plan, the address of each record, and the bases
        agreed so far."""
        refs = {s.subject_ref: [subject_ref(self.key, e) for e in s.emails] for s in subjects}
        erased = erasure_rows.suppressed(self.store, {r for rs in refs.values() for r in rs})
        kept = [s for s in subjects if not erased.intersection(refs[s.subject_ref])]
        report.subjects += len(kept)
        report.suppressed += len(subjects) - len(kept)
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
        if not report.dry_run:  # a portal act is no CRM's state
            self._note_states([r for s in kept for r in s.records if r.system != PORTAL], ledger)
        return plans, addresses, agreed

    def _note_states(self, records: Sequence[CrmRecord], ledger: Ledger) -> None:
        """Keep when each opt-out and lawful basis was first read, and forget the ledger's
        echoes of states the records have moved away from (the person acted since), and the
        changes left to the person once the record holds them (the person made them)."""
        now = _iso(_now())
        seen: list[dict[str, Any]] = []
        stale: list[FieldKey] = []
        for record in records:
            states = _states(record)
            opt_out = record.opt_out
            first_seen = {LAWFUL_BASIS_FIELD: record.modified_at}
            for flag in GLOBAL_OPT_OUTS:
                held = opt_out is not None and states[flag.field] is not None
                first_seen[flag.field] = opt_out.changed_at if opt_out and held else None
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
        if record.system == PORTAL:  # an act recorded outside the CRMs: nowhere to write
            return Writable.NOT_HELD
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
        settled: Callable[[Change, WriteOutcome], None] | None = None,
    ) -> dict[int, WriteOutcome]:
        """Each system's writes in batches; outcomes by change (``id``), audited, and each
        told to ``settled`` once its batch is audited.

        Like changes go together, so that each batch fills the vendor's own batches:
        opt-outs, then withdrawals, then grants (the GDPR-safe order), then lawful bases.
        """
        outcomes: dict[int, WriteOutcome] = {}
        total = len(changes)
        for system, adapter in self.adapters.items():
            mine = sorted(
                (c for c in changes if c.record.system == system),
                key=lambda c: (_ORDER[c.kind], c.value != WITHDRAWN, c.field),
            )
            for kind_is_basis in (False, True):
                group = [c for c in mine if (c.kind is ChangeKind.LAWFUL_BASIS) is kind_is_basis]
                for start in range(0, len(group), APPLY_BATCH):
                    if stop.is_set():
                        return outcomes
                    batch = group[start : start + APPLY_BATCH]
                    now = _iso(_now())
                    intents = [_intent_row(c, run.actor, now) for c in batch]
                    with sync_rows.intending(self.store, intents) as intent:
                        results = self._write(adapter, batch, addresses, kind_is_basis, run)
                        self._settle(batch, results, run.actor, intent)
                    for change, result in zip(batch, results, strict=True):
                        outcomes[id(change)] = result
                        if settled is not None:
                            settled(change, result)
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

    def _settle(
        self, batch: Sequence[Change], results: Sequence[WriteOutcome], actor: str, intent: str
    ) -> None:
        """Audit every outcome and keep what was written (or refused) in the ledger; the
        batch's intents (``intent``) go in the same transaction."""
        pairs = list(zip(batch, results, strict=True))
        events = [_audit_event(c, r.status.value, r.detail, actor) for c, r in pairs]
        self._keep(batch, [r.status for r in results], events, [intent])
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

    def _keep(
        self,
        changes: Sequence[Change],
        statuses: Sequence[WriteStatus],
        events: Sequence[AuditEvent],
        intents: Collection[str],
    ) -> None:
        """In one transaction: the audit events, the ledger rows of what was written (or
        refused: left to the person) and of what the writes implied, and the end of the
        batches' intents."""
        now = _iso(_now())
        kept = [
            _ledger_row(c.key, c.value, c.follows, status.value, now)
            for c, status in zip(changes, statuses, strict=True)
            if status in (WriteStatus.DONE, WriteStatus.NEEDS_SELF_SERVICE)
        ]
        explicit = {sync_rows.key_of(row) for row in kept}
        kept += [
            _ledger_row((*c.key[:3], implied), WITHDRAWN, c.follows, DONE, now)
            for c, status in zip(changes, statuses, strict=True)
            if status is WriteStatus.DONE
            for implied in c.implied
            if (*c.key[:3], implied) not in explicit
        ]
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            sync_rows.record_writes(conn, kept)
            for event in events:
                audit.append(conn, event)
            sync_rows.forget_intents(conn, intents)

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


def _answer(
    system: System,
    holds: bool,
    keeps: bool,
    erased: bool,
    writes: Sequence[tuple[Change, WriteOutcome | None]],
) -> SystemAnswer:
    """What one system made of a carried act, from the outcomes of its writes (a write left
    unapplied failed); in words without personal data."""
    if not holds:
        return SystemAnswer(system, "no_record", "holds no record of these addresses")
    if erased:
        return SystemAnswer(system, "failed", "the person was erased: nothing is written to them")
    if not keeps and not writes:
        return SystemAnswer(
            system, "not_kept", "its records have no field the bridge may write for it"
        )
    counts = Counter(outcome.status.value if outcome else FAILED for _, outcome in writes)
    if counts[FAILED]:
        detail = f"{counts[FAILED]} of {len(writes)} writes failed; try again later"
        return SystemAnswer(system, "failed", detail)
    if counts[NEEDS_SELF_SERVICE]:
        detail = "the CRM lets only the person make this change, on its own page"
        return SystemAnswer(system, NEEDS_SELF_SERVICE, detail)
    if counts[DONE]:
        return SystemAnswer(
            system, "applied", f"written to {counts[DONE]} of {len(writes)} records"
        )
    return SystemAnswer(system, "already", "nothing to change")


def _entry(change: Change, outcome: WriteOutcome | None, dry_run: bool) -> dict[str, Any]:
    """A change as a report lists it: as planned and, unless a dry run, what became of it
    (not_applied: no write made it). No personal data."""
    entry = change.as_dict()
    if not dry_run:
        entry["outcome"] = outcome.status.value if outcome else NOT_APPLIED
        if outcome and outcome.detail:
            entry["detail"] = outcome.detail
    return entry


def _portal_record(act: PersonAct, purpose: Purpose | None, now: datetime) -> CrmRecord:
    """The act as a record of the portal, named by a fresh id: a consent with the evidence of
    an active act, or an opt-out of all email. It holds no address, so nothing links to it
    and nothing is planned for it."""
    act_id = uuid.uuid4().hex
    if purpose is None:
        opt_out = GlobalOptOut(True, False, now, PORTAL, act_id)
        return CrmRecord(PORTAL, ObjectType.CONTACT, act_id, opt_out=opt_out)
    granted = act.kind == "grant"
    consent = Consent(
        purpose=purpose.id,
        status=ConsentStatus.GRANTED if granted else ConsentStatus.WITHDRAWN,
        changed_at=now,
        source_system=PORTAL,
        source_record=act_id,
        lawful_basis=LawfulBasis.CONSENT if granted else None,
        explanation=ACT_EXPLANATION[act.kind],
        evidence=Evidence(capture_source=PORTAL, captured_at=now),
    )
    return CrmRecord(PORTAL, ObjectType.CONTACT, act_id, consents=(consent,))


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


def _states(record: CrmRecord) -> dict[str, str | None]:
    """What a record holds of each field the sync writes (None: nothing, or not opted out)."""
    basis = record.lawful_basis.value if record.lawful_basis else None
    states: dict[str, str | None] = {LAWFUL_BASIS_FIELD: basis}
    for flag in GLOBAL_OPT_OUTS:
        held = record.opt_out is not None and record.opt_out.holds(flag.channel)
        states[flag.field] = WITHDRAWN if held else None
    states |= {consent_field(c.purpose): c.status.value for c in record.consents}
    return states


def _intent_row(change: Change, actor: str, now: str) -> dict[str, Any]:
    """A change a batch is about to write, as its intent: enough to audit it and keep it in
    the ledger should the batch be cut short, and no personal data."""
    system, object_type, record_id, field_name = change.key
    return {
        "system": system,
        "object_type": object_type,
        "record_id": record_id,
        "field": field_name,
        "kind": change.kind.value,
        "purpose": change.purpose,
        "value": change.value,
        "implied": json.dumps(list(change.implied)),
        "act_system": change.follows.system,
        "act_record": change.follows.record_id,
        "act_at": change.follows.at.isoformat() if change.follows.at else None,
        "subject_ref": change.subject_ref,
        "reason": change.why,
        "actor": actor,
        "created_at": now,
    }


def _intended(row: Mapping[str, Any]) -> Change:
    """The change an intent names, as far as its audit and the ledger need it."""
    at = datetime.fromisoformat(row["act_at"]) if row["act_at"] else None
    return Change(
        subject_ref=row["subject_ref"],
        record=RecordRef(System(row["system"]), row["object_type"], row["record_id"]),
        kind=ChangeKind(row["kind"]),
        field=row["field"],
        value=row["value"],
        follows=Act(row["act_system"], row["act_record"], at),
        why=row["reason"],
        purpose=row["purpose"],
        implied=tuple(json.loads(row["implied"])),
    )


def _audit_event(
    change: Change, outcome: str, detail: str, actor: str, *, recovered: bool = False
) -> AuditEvent:
    """A change's outcome as its write saw it, or (``recovered``) as the next sync found it."""
    details: dict[str, Any] = {
        "object_type": change.record.object_type,
        "value": change.value,
        "follows": f"{change.follows.system}/{change.follows.record_id}",
    }
    if recovered:
        details["change"] = change.kind.value
    if change.purpose:
        details["purpose"] = change.purpose
    if detail:
        details["detail"] = detail[:300]
    return AuditEvent(
        actor=actor,
        action="sync.recovered" if recovered else f"sync.{change.kind.value}",
        outcome=outcome,
        system=change.record.system,
        record_id=change.record.id,
        subject_ref=change.subject_ref,
        reason=change.why,
        details=details,
    )
