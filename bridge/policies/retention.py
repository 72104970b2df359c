"""Retention (Art. 5(1)(e)): when holding a person stops being justified, and what follows.

Pure: the records, the consents in force and the related rows are read by the
caller (``bridge.services.retention``); this module only judges. A subject is judged whole,
across systems: a reason to keep the person in one CRM keeps them in every one, and the
clock runs from the latest sign of life in any of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.model import PEOPLE, CrmRecord, RelatedRecords
from bridge.policies.deadlines import add_months

ANY = "*"


# A condition on records: field name -> the values that match ("" matches an empty field,
# "*" any value). Per "<system>.<object>"; every field named must match ({} matches all).
Conditions = dict[str, dict[str, list[str]]]


class RetentionRule(BaseModel):
    """When records stop being justified (Art. 5(1)(e)) and what then happens to the person.

    A subject falls under the rule when every one of its records that is a person (contact
    or lead, in any CRM) matches ``covers`` (an object not named there matches nothing). It is kept
    while anything justifies it, in any system: activity (its records' creation, last
    activity and ``since`` dates) within ``keep_months``, a granted consent for one of
    ``kept_while_consent``, a record matching ``kept_if``, or a related row of
    ``kept_while_related``. Otherwise it falls due ``keep_months`` after the latest of those
    dates, and ``warning_days`` before that it is marked in both CRMs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    covers: Conditions = Field(min_length=1)
    keep_months: int = Field(ge=1, le=1200)
    since: list[str] = Field(
        default_factory=list,
        description="'<system>.<object>.<field>' dates that restart the clock too "
        "(an event date, a contract end)",
    )
    kept_while_consent: list[str] = Field(
        default_factory=list, description="purpose ids whose granted consent keeps the person"
    )
    kept_if: Conditions = Field(default_factory=dict)
    kept_while_related: list[RelatedRecords] = Field(default_factory=list)
    action: Literal["delete", "anonymize"]
    warning_days: int = Field(30, ge=0, le=3650)

    def since_fields(self, obj: str) -> list[str]:
        return [e.rpartition(".")[2] for e in self.since if e.rpartition(".")[0] == obj]


def matches(record: CrmRecord, conditions: Conditions) -> bool:
    """Whether the record meets every field condition set for its object (none set: no)."""
    wanted = conditions.get(record.object_key)
    if wanted is None:
        return False
    for name, values in wanted.items():
        value = record.attributes.get(name, "")
        if not (value in values or (value and ANY in values)):
            return False
    return True


def last_active(rule: RetentionRule, records: Iterable[CrmRecord]) -> date | None:
    """The latest of the records' creation, last activity and the rule's own dates."""
    moments: list[date] = []
    for record in records:
        moments += [m.date() for m in (record.created_at, record.active_at) if m]
        for name in rule.since_fields(record.object_key):
            if parsed := _day(record.attributes.get(name)):
                moments.append(parsed)
    return max(moments, default=None)


def _day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


@dataclass(frozen=True)
class Verdict:
    """One rule's judgement of one subject.

    ``kept_by`` names what justifies keeping the person regardless of time (a consent, a
    related row, a field); otherwise ``due_on`` is the day the rule purges them, and
    ``why`` says why nothing else keeps them.
    """

    rule: RetentionRule
    last_active: date | None
    due_on: date | None
    kept_by: str | None
    why: str

    def due(self, today: date) -> bool:
        return self.kept_by is None and self.due_on is not None and self.due_on <= today

    def warned(self, today: date) -> bool:
        """In the warning period (or due): the CRMs should show the coming purge."""
        if self.kept_by is not None or self.due_on is None:
            return False
        return self.due_on - timedelta(days=self.rule.warning_days) <= today


def judge(
    rule: RetentionRule,
    records: Collection[CrmRecord],
    granted: Collection[str],
    related: Mapping[str, RelatedRecords],
) -> Verdict | None:
    """The rule's verdict on a subject, or None unless every record of it that is a person
    (contact or lead, in any system) falls under the rule: a person is purged as, say, a
    stale lead only when nothing in any system says they are more than that.

    ``granted``: the purposes the subject's consent is granted for now (merged across
    systems); ``related``: the record ids a related row of ``rule.kept_while_related``
    points at, with that condition.
    """
    people = [r for r in records if r.object_type in PEOPLE]
    if not people or not all(matches(r, rule.covers) for r in people):
        return None
    active = last_active(rule, records)
    due_on = add_months(active, rule.keep_months) if active else None
    if consented := sorted(set(rule.kept_while_consent) & set(granted)):
        return Verdict(rule, active, due_on, f"consent granted for {consented[0]}", "")
    for record in records:
        if matches(record, rule.kept_if):
            kept = f"{record.object_key} {record.id} meets kept_if"
            return Verdict(rule, active, due_on, kept, "")
        if condition := related.get(record.id):
            kept = f"{condition.name} on {record.object_key} {record.id}"
            return Verdict(rule, active, due_on, kept, "")
    if active is None:
        return Verdict(rule, None, None, "no date to count from", "")
    reasons = [f"no activity since {active.isoformat()} ({rule.keep_months} months)"]
    reasons += [f"no consent for {p}" for p in rule.kept_while_consent]
    reasons += [f"no {c.name}" for c in rule.kept_while_related]
    return Verdict(rule, active, due_on, None, "; ".join(reasons))


def first_due(verdicts: Iterable[Verdict | None]) -> Verdict | None:
    """Of the rules that would purge a subject, the one that does so first (the earlier
    rule in the settings on a tie); None if every rule keeps it or none covers it."""
    open_ = [v for v in verdicts if v is not None and v.kept_by is None and v.due_on]
    return min(open_, key=lambda v: v.due_on or date.max, default=None)
