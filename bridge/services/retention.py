"""Retention: who falls due under the rules, the warning marks in both CRMs, and the purge.

``preview`` judges every subject under every rule and writes nothing; ``apply`` judges the
same way, marks (or clears) the due date of everyone in a warning period, and turns everyone
due into an erasure request. One judgement, so the two agree on who is purged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bridge import audit
from bridge.adapters.base import (
    CrmAdapter,
    DueMark,
    ErasureTarget,
    R,
    RecordRef,
    WriteStatus,
)
from bridge.config import LegalHold
from bridge.identity import link_subjects, subject_ref
from bridge.logs import get_logger
from bridge.model import PEOPLE, AuditEvent, ConsentStatus, Purpose, RelatedRecords, Subject, System
from bridge.policies.consent import merge_purpose
from bridge.policies.retention import RetentionRule, Verdict, first_due, judge
from bridge.services.erasure import Erasure
from bridge.store import erasure as erasure_rows
from bridge.store.audit_log import LOCK as AUDIT_LOCK
from bridge.store.db import Store

log = get_logger("bridge.retention")
ACTOR = "retention"


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

    def apply(self, erasure: Erasure) -> RetentionReport:
        """Mark everyone in a warning period, clear marks no longer due, and submit an
        erasure request for everyone due today; returns the request ids to run."""
        today = self.clock().date()
        subjects = self._subjects()
        warning = max((r.warning_days for r in self.rules), default=0)
        candidates = self._candidates(subjects, today + timedelta(days=warning))
        warned = [c for c in candidates if c.verdict.warned(today) and not c.verdict.due(today)]
        due = [c for c in candidates if c.verdict.due(today)]
        report = RetentionReport(today, 0, due)
        self._mark(subjects, warned, {c.ref for c in due}, report)
        for candidate in due:
            report.requests.append(self._submit(erasure, candidate))
        return report

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
