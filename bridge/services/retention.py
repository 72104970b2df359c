"""Retention: who falls due under the rules, the warning marks in both CRMs, and the purge.

``preview`` judges every subject under every rule and writes nothing; ``apply`` judges the
same way, marks (or clears) the due date of everyone in a warning period, and turns everyone
due into an erasure request. One judgement, so the two agree on who is purged.

The console applies a purge only with two operators: one proposes who the preview shows due
(its :func:`digest`), another approves, and ``apply`` erases only if that is still who is due.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bridge import audit
from bridge.adapters.base import (
    AdapterError,
    CrmAdapter,
    DueMark,
    ErasureTarget,
    R,
    RecordRef,
    WriteStatus,
)
from bridge.config import LegalHold
from bridge.errors import BridgeError
from bridge.identity import link_subjects, subject_ref
from bridge.logs import get_logger
from bridge.model import PEOPLE, AuditEvent, ConsentStatus, Purpose, RelatedRecords, Subject, System
from bridge.policies.consent import merge_purpose
from bridge.policies.retention import RetentionRule, Verdict, first_due, judge
from bridge.services.erasure import Erasure
from bridge.services.operators import actor
from bridge.store import erasure as erasure_rows
from bridge.store import proposals as proposal_rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

log = get_logger("bridge.retention")
ACTOR = "retention"


class PurgeRefused(BridgeError):
    """A proposal that cannot be made, approved or withdrawn now; the message says why."""


class PreviewChanged(PurgeRefused):
    """Who is due now is not who the proposal named: nothing was applied."""


@dataclass(frozen=True)
class Candidate:
    """A subject a rule will purge: its verdict, and the legal holds on its records."""

    subject: Subject
    verdict: Verdict
    holds: Mapping[str, LegalHold]

    @property
    def ref(self) -> str:
        return self.subject.subject_ref


@dataclass
class RetentionReport:
    """What a preview or an apply found and did; holds no personal data."""

    today: date
    within_days: int
    candidates: list[Candidate]
    records: dict[tuple[str, str, str], str | None] = field(default_factory=dict)
    marked: int = 0
    unmarked: int = 0
    mark_failures: int = 0
    requests: list[str] = field(default_factory=list)

    @property
    def due_now(self) -> list[Candidate]:
        """Those an apply erases today; the rest of a preview falls due within its window."""
        return [c for c in self.candidates if c.verdict.due(self.today)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "within_days": self.within_days,
            "due": [self._item(c) for c in self.candidates],
            "marked": self.marked,
            "unmarked": self.unmarked,
            "mark_failures": self.mark_failures,
            "requests": self.requests,
        }

    def _item(self, candidate: Candidate) -> dict[str, Any]:
        verdict = candidate.verdict
        return {
            "subject_ref": candidate.ref,
            "rule": verdict.rule.name,
            "due_on": verdict.due_on.isoformat() if verdict.due_on else None,
            # Due before today and still held: the purge is late (no apply ran since).
            "overdue": verdict.due_on is not None and verdict.due_on < self.today,
            "action": verdict.rule.action,
            "last_active": verdict.last_active.isoformat() if verdict.last_active else None,
            "why": verdict.why,
            "records": [
                {
                    "system": r.system,
                    "object": r.object_key.partition(".")[2],
                    "id": r.id,
                    "url": self.records.get(r.key),
                    "legal_hold": hold.name if (hold := candidate.holds.get(r.id)) else None,
                    "held_action": hold.action if hold else None,
                }
                for r in candidate.subject.records
            ],
        }


class Retention:
    """Judges every subject under the configured rules; marks and purges on ``apply``."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[System, CrmAdapter],
        key: bytes,
        purposes: Sequence[Purpose],
        rules: Sequence[RetentionRule],
        holds: Sequence[LegalHold] = (),
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.adapters = dict(adapters)
        self.key = key
        self.purposes = list(purposes)
        self.rules = list(rules)
        self.holds = list(holds)
        self.clock = clock

    def preview(self, within: timedelta) -> RetentionReport:
        """Who falls due from now to ``within`` from now (and who is overdue); no writes."""
        today = self.clock().date()
        subjects = self._subjects()
        candidates = self._candidates(subjects, today + within)
        report = RetentionReport(today, within.days, candidates)
        report.records = {
            r.key: self.adapters[r.system].record_url(RecordRef(r.system, r.object_type, r.id))
            for c in candidates
            for r in c.subject.records
        }
        return report

    def apply(self, erasure: Erasure, approved: str | None = None) -> RetentionReport:
        """Mark everyone in a warning period, clear marks no longer due, and submit an
        erasure request for everyone due today; returns the request ids to run.

        ``approved``: the :func:`digest` of who two operators agreed to purge; if those due
        now are others, :class:`PreviewChanged` is raised before anything is written."""
        today = self.clock().date()
        subjects = self._subjects()
        warning = max((r.warning_days for r in self.rules), default=0)
        candidates = self._candidates(subjects, today + timedelta(days=warning))
        warned = [c for c in candidates if c.verdict.warned(today) and not c.verdict.due(today)]
        due = [c for c in candidates if c.verdict.due(today)]
        if approved is not None and digest(due) != approved:
            raise PreviewChanged("the preview changed since it was proposed; propose again")
        report = RetentionReport(today, 0, due)
        self._mark(subjects, warned, {c.ref for c in due}, report)
        for candidate in due:
            report.requests.append(self._submit(erasure, candidate))
        return report

    # -- two operators (the console) ----------------------------------------------------------

    def propose(self, within: timedelta, seen: str, by: str) -> str:
        """Propose purging who is due now, as the preview ``by`` looked at showed them
        (``seen``, its :func:`digest`); the proposal's id. Audited."""
        due = self.preview(within).due_now
        if digest(due) != seen:
            raise PreviewChanged("the preview changed since you loaded it; look again")
        if not due:
            raise PurgeRefused("nobody is due today: there is nothing to purge")
        if any(p["status"] == proposal_rows.PROPOSED for p in self.proposals()):
            raise PurgeRefused(
                "a purge proposal awaits approval already: approve or withdraw it first"
            )
        proposal = uuid.uuid4().hex
        row = {"id": proposal, "within_days": within.days, "digest": seen, "people": len(due),
               "proposed_by": by, "proposed_at": _iso(self.clock())}  # fmt: skip
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            proposal_rows.add(conn, row)
            audit.append(conn, _decision(by, "retention.proposed", "proposed", row))
        return proposal

    def approve(self, proposal: str, by: str, erasure: Erasure) -> RetentionReport:
        """Apply a proposal another operator made, if those due now are still those it
        named (else it turns stale); the apply's report. Audited with both names."""
        row = self._open_proposal(proposal)
        if row["proposed_by"] == by:
            audit.record(self.store, _decision(by, "retention.approved", "refused", row))
            raise PurgeRefused(
                "you proposed this purge: another operator must approve it (two people agree "
                "before anyone is erased)"
            )
        self._decide(row, proposal_rows.PROPOSED, proposal_rows.APPLYING, by)
        try:
            report = self.apply(erasure, approved=row["digest"])
        except Exception as error:
            status = (
                proposal_rows.STALE if isinstance(error, PreviewChanged) else proposal_rows.FAILED
            )
            self._decide(row, proposal_rows.APPLYING, status, by, {"problem": _problem(error)})
            raise
        outcome = {"requests": report.requests, "marked": report.marked,
                   "unmarked": report.unmarked, "mark_failures": report.mark_failures}  # fmt: skip
        self._decide(row, proposal_rows.APPLYING, proposal_rows.APPLIED, by, outcome)
        return report

    def withdraw(self, proposal: str, by: str) -> None:
        """Withdraw an open proposal (its proposer or any other operator). Audited."""
        self._decide(
            self._open_proposal(proposal), proposal_rows.PROPOSED, proposal_rows.WITHDRAWN, by
        )

    def proposals(self) -> list[dict[str, Any]]:
        """The open proposals, then the latest decided ones, each with its outcome decoded."""
        return [
            row | {"outcome": json.loads(row["outcome"]) if row["outcome"] else None}
            for row in proposal_rows.newest(self.store)
        ]

    def _open_proposal(self, proposal: str) -> dict[str, Any]:
        row = proposal_rows.get(self.store, proposal)
        if row is None:
            raise PurgeRefused("there is no such proposal")
        if row["status"] != proposal_rows.PROPOSED:
            raise PurgeRefused(f"this proposal is {row['status']} already; nothing was done")
        return row

    def _decide(
        self,
        row: Mapping[str, Any],
        was: str,
        status: str,
        by: str,
        outcome: Mapping[str, Any] | None = None,
    ) -> None:
        """Move the proposal on from ``was``, keeping ``outcome``, and audit it, at once;
        refused if another operator decided it meanwhile."""
        values = {"decided_by": by, "decided_at": _iso(self.clock())}
        if outcome is not None:
            values["outcome"] = json.dumps(outcome)
        with self.store.transaction(serialize=AUDIT_LOCK) as conn:
            if not proposal_rows.move(conn, row["id"], was, status, **values):
                raise PurgeRefused("another operator decided this proposal meanwhile")
            if status in _AUDITED:
                action, result = _AUDITED[status]
                details = {k: len(v) if k == "requests" else v for k, v in (outcome or {}).items()}
                audit.append(conn, _decision(by, action, result, row, **details))

    # -- judging ----------------------------------------------------------------------------

    def _subjects(self) -> list[Subject]:
        """Every subject in every system, less those erased (suppressed) already."""
        records = [r for adapter in self.adapters.values() for r in adapter.read()]
        subjects = link_subjects(self.key, records)
        refs = {s.subject_ref: {subject_ref(self.key, e) for e in s.emails} for s in subjects}
        erased = erasure_rows.suppressed(self.store, set().union(*refs.values()))
        return [s for s in subjects if not erased & refs[s.subject_ref]]

    def _candidates(self, subjects: Sequence[Subject], horizon: date) -> list[Candidate]:
        """Subjects a rule purges on or before ``horizon``, ordered by due date.

        Judged twice: first on what the records say, then, for the subjects that would fall
        due, with the related rows that may still keep them (queried only for
        those) and with the legal holds, a refusing one of which keeps them too.
        """
        verdicts = {s.subject_ref: self._judge(s, {}) for s in subjects}
        near = [s for s in subjects if _before(verdicts[s.subject_ref], horizon)]
        related = self._related(near)
        holds = self._related_rows(near, self.holds)
        candidates = []
        for subject in near:
            verdict = self._judge(subject, related)
            held = {r.id: holds[r.id] for r in subject.records if r.id in holds}
            if verdict is None or not _before(verdict, horizon):
                continue
            if any(h.action == "refuse" for h in held.values()):
                continue  # the law requires keeping the record: Art. 17(3)
            candidates.append(Candidate(subject, verdict, held))
        return sorted(candidates, key=lambda c: (c.verdict.due_on or date.max, c.ref))

    def _judge(
        self, subject: Subject, related: Mapping[str, Mapping[str, RelatedRecords]]
    ) -> Verdict | None:
        granted = {
            p.id
            for p in self.purposes
            if merge_purpose(
                p,
                [c for r in subject.records for c in r.consents],
                [r.opt_out for r in subject.records if r.opt_out],
            ).status
            is ConsentStatus.GRANTED
        }
        return first_due(
            judge(rule, subject.records, granted, related.get(rule.name, {})) for rule in self.rules
        )

    def _related(self, subjects: Sequence[Subject]) -> dict[str, dict[str, RelatedRecords]]:
        """Per rule, the records its ``kept_while_related`` rows point at."""
        return {
            rule.name: self._related_rows(subjects, rule.kept_while_related)
            for rule in self.rules
            if rule.kept_while_related
        }

    def _related_rows(self, subjects: Sequence[Subject], conditions: Sequence[R]) -> dict[str, R]:
        """The subjects' records related rows of a condition point at, by record id."""
        if not conditions or not subjects:
            return {}
        found: dict[str, R] = {}
        for system, adapter in self.adapters.items():
            targets = [
                ErasureTarget(r.system, r.object_type.value, r.id)
                for s in subjects
                for r in s.records
                if r.system is system
            ]
            if targets:
                found.update(adapter.related(targets, conditions))
        return found

    # -- acting -----------------------------------------------------------------------------

    def _mark(
        self,
        subjects: Sequence[Subject],
        warned: Sequence[Candidate],
        due: set[str],
        report: RetentionReport,
    ) -> None:
        """Set the due date where it is missing or different; clear it where no rule
        warns any more (the person re-engaged), except on those about to be erased."""
        wanted = {r.key: c.verdict.due_on for c in warned for r in c.subject.records}
        rule_of = {r.key: c.verdict.rule.name for c in warned for r in c.subject.records}
        by_system: dict[System, list[tuple[DueMark, str]]] = {}
        for subject in subjects:
            if subject.subject_ref in due:
                continue
            for record in subject.records:
                due_on = wanted.get(record.key)
                if due_on == record.purge_due or record.object_type not in PEOPLE:
                    continue  # as it should be, or an Individual: nothing a workflow reads
                ref = RecordRef(record.system, record.object_type.value, record.id)
                mark = DueMark(ref, due_on)
                by_system.setdefault(record.system, []).append((mark, subject.subject_ref))
        for system, marks in by_system.items():
            outcomes = self.adapters[system].mark_purge_due([m for m, _ in marks])
            with self.store.transaction(serialize=AUDIT_LOCK) as conn:
                for (mark, owner), outcome in zip(marks, outcomes, strict=True):
                    self._count(report, mark, outcome.status)
                    key = (system, mark.record.object_type, mark.record.id)
                    audit.append(
                        conn,
                        AuditEvent(
                            actor=ACTOR,
                            action="retention.marked" if mark.due else "retention.unmarked",
                            outcome=outcome.status.value,
                            system=system,
                            record_id=mark.record.id,
                            subject_ref=owner,
                            reason=f"retention rule {rule_of[key]}" if key in rule_of else None,
                            details={"due_on": mark.due.isoformat() if mark.due else None}
                            | ({"detail": outcome.detail} if outcome.detail else {}),
                        ),
                    )

    @staticmethod
    def _count(report: RetentionReport, mark: DueMark, status: WriteStatus) -> None:
        if status not in (WriteStatus.DONE, WriteStatus.ALREADY):
            report.mark_failures += 1
        elif mark.due:
            report.marked += 1
        else:
            report.unmarked += 1

    def _submit(self, erasure: Erasure, candidate: Candidate) -> str:
        """An erasure request for the whole subject, audited with the rule that made it."""
        verdict = candidate.verdict
        request_id = erasure.submit(
            sorted(candidate.subject.emails),
            verdict.rule.action,
            f"retention rule {verdict.rule.name}",
            ACTOR,
        )
        audit.record(
            self.store,
            AuditEvent(
                actor=ACTOR,
                action="retention.due",
                outcome="requested",
                subject_ref=candidate.ref,
                reason=f"retention rule {verdict.rule.name}",
                details={
                    "request": request_id,
                    "due_on": verdict.due_on.isoformat() if verdict.due_on else None,
                    "action": verdict.rule.action,
                    "why": verdict.why,
                },
            ),
        )
        return request_id


def _before(verdict: Verdict | None, horizon: date) -> bool:
    return verdict is not None and verdict.due(horizon)


def digest(candidates: Iterable[Candidate]) -> str:
    """Who is purged under which rule, as one hash: what two operators agree on."""
    lines = sorted(f"{c.ref} {c.verdict.rule.name}" for c in candidates)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# How a proposal moving to each state is audited (claiming it for the apply is not).
_AUDITED = {
    proposal_rows.APPLIED: ("retention.approved", "applied"),
    proposal_rows.STALE: ("retention.approved", "stale"),
    proposal_rows.FAILED: ("retention.approved", "failed"),
    proposal_rows.WITHDRAWN: ("retention.withdrawn", "withdrawn"),
}


def _decision(
    by: str, action: str, outcome: str, proposal: Mapping[str, Any], **details: Any
) -> AuditEvent:
    """An operator's step on a proposal, naming the proposer too."""
    return AuditEvent(
        actor=actor(by),
        action=action,
        outcome=outcome,
        reason=f"retention proposal {proposal['id']}",
        details={"proposed_by": actor(proposal["proposed_by"]), "people": proposal["people"],
                 "within_days": proposal["within_days"]} | details,
    )  # fmt: skip


def _problem(error: Exception) -> str:
    """Why an apply failed, in words fit for the audit log (a bridge error's or a CRM's own,
    which hold no personal data; else only the kind of error)."""
    if isinstance(error, AdapterError):
        return error.line()
    return str(error) if isinstance(error, BridgeError) else type(error).__name__


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")
