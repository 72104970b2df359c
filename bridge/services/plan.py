"""From what every system holds about a person to what each record must be told. Pure.

For one subject: echoes of the bridge's own writes are read back as the acts they followed,
the policies merge, and every record that differs gets a typed change naming the act it
follows and why (ARCHITECTURE.md, "A sync", step 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from bridge.adapters.base import RecordRef
from bridge.model import (
    Channel,
    Consent,
    ConsentStatus,
    CrmRecord,
    Evidence,
    GlobalOptOut,
    LawfulBasis,
    Purpose,
    Subject,
    System,
)
from bridge.policies.consent import merge_purpose, opted_out
from bridge.policies.lawful_basis import HeldBasis, merge_bases

OPT_OUT_FIELD = "opt_out"
DO_NOT_CALL_FIELD = "do_not_call"
LAWFUL_BASIS_FIELD = "lawful_basis"
NEEDS_SELF_SERVICE = "needs_self_service"
DONE = "done"
SEEN = "seen"  # an opt-out as first read: some vendors restamp it with every later edit


def consent_field(purpose: str) -> str:
    return f"consent:{purpose}"


class ChangeKind(StrEnum):
    OPT_OUT = "opt_out"  # opt out of all email
    DO_NOT_CALL = "do_not_call"  # opt out of all calls
    CONSENT = "consent"  # one purpose's consent
    LAWFUL_BASIS = "lawful_basis"


class GlobalFlag(NamedTuple):
    """A global opt-out the sync carries to every record that can hold it, and never lifts."""

    kind: ChangeKind
    field: str
    channel: Channel
    why: str


GLOBAL_OPT_OUTS = (
    GlobalFlag(ChangeKind.OPT_OUT, OPT_OUT_FIELD, Channel.EMAIL,
               "opted out of all email in one system: it holds everywhere"),
    GlobalFlag(ChangeKind.DO_NOT_CALL, DO_NOT_CALL_FIELD, Channel.PHONE,
               "asked not to be called in one system: it holds everywhere"),
)  # fmt: skip


class Writable(StrEnum):
    """Whether the sync may write a field of a record."""

    YES = "yes"
    NOT_HELD = "not_held"  # the record has no such field (an Individual's lawful basis)
    NOT_ALLOWED = "not_allowed"  # minimisation keeps the bridge from copying it


class Act(NamedTuple):
    """The person's act a change follows: where it was recorded, and when."""

    system: str
    record_id: str
    at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        when = self.at.isoformat() if self.at else None
        return {"system": self.system, "record_id": self.record_id, "at": when}


class Written(NamedTuple):
    """A ledger entry: what the sync wrote to a record field, following which act."""

    value: str
    act: Act
    outcome: str


FieldKey = tuple[str, str, str, str]  # system, object type, record id, field
NO_EVIDENCE = Evidence()
Ledger = Mapping[FieldKey, Written]


class Change(NamedTuple):
    """One write to one record, and the act and rule it follows. Holds no personal data.

    Tuples, like ``Act``: a full sync builds one per difference, and these build fastest.
    """

    subject_ref: str
    record: RecordRef
    kind: ChangeKind
    field: str
    """The common field written: ``opt_out``, ``do_not_call``, ``consent:<purpose>`` or
    ``lawful_basis``."""
    value: str
    follows: Act
    why: str
    purpose: str | None = None
    lawful_basis: LawfulBasis | None = None
    explanation: str | None = None
    """The act's own explanation, if it has one (see ``vendor_explanation``)."""
    evidence: Evidence = NO_EVIDENCE
    implied: tuple[str, ...] = ()
    """Fields the write may change too (an opt-out may withdraw each subscription)."""
    channel: Channel = Channel.EMAIL
    """Of a global opt-out: the channel it closes."""

    @property
    def key(self) -> FieldKey:
        return (self.record.system, self.record.object_type, self.record.id, self.field)

    def vendor_explanation(self) -> str:
        """What the vendor records with the change: the act's explanation, or where and
        when the act was recorded (never who the person is)."""
        if self.explanation:
            return self.explanation
        when = f" on {self.follows.at.date().isoformat()}" if self.follows.at else ""
        where = f"{self.follows.system} record {self.follows.record_id}"
        return f"{self.value} in {where}{when}; synced by consent-bridge"

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject_ref": self.subject_ref,
            "system": self.record.system,
            "object_type": self.record.object_type,
            "record_id": self.record.id,
            "change": self.kind.value,
            "purpose": self.purpose,
            "value": self.value,
            "follows": self.follows.as_dict(),
            "reason": self.why,
        }


@dataclass(frozen=True)
class SubjectPlan:
    subject_ref: str
    changes: tuple[Change, ...] = ()
    awaiting_person: tuple[Change, ...] = ()
    """Changes the vendor refused for the same act before: only the person can make them."""
    not_allowed: tuple[Change, ...] = ()
    lawful_basis: LawfulBasis | None = None
    """The basis the systems agree on once the changes are applied."""


Placement = Callable[[CrmRecord, str], Writable]


def plan_subject(
    subject: Subject,
    purposes: Sequence[Purpose],
    *,
    placement: Placement,
    agreed_basis: LawfulBasis | None = None,
    ledger: Ledger | None = None,
) -> SubjectPlan:
    """Every change that brings the subject's records in line with the merged answer.

    This runs once per person on every sync (``bench/reconcile.py`` measures it against
    50,000 people per second), so it builds a change only where a record differs.
    """
    ledger = ledger or {}
    records = [_as_acts(r, ledger) for r in subject.records] if ledger else subject.records
    consents = [c for r in records for c in r.consents]
    opt_outs = _opt_outs(records, ledger)
    in_force = [
        (flag, first)
        for flag in GLOBAL_OPT_OUTS
        if flag.channel in opt_outs
        and (first := opted_out(opt_outs[flag.channel], flag.channel)) is not None
    ]
    decisions = [
        (p.id, consent_field(p.id), d)
        for p in purposes
        if (d := merge_purpose(p, consents, opt_outs.get(p.channel, ()))).follows is not None
        and d.status is not ConsentStatus.UNKNOWN
    ]
    # A basis the bridge may not copy from a record does not vote either.
    held = [
        HeldBasis(r.lawful_basis, _basis_set_at(r, ledger), r.system, r.id)
        for r in records
        if r.lawful_basis is not None and placement(r, LAWFUL_BASIS_FIELD) is Writable.YES
    ]
    basis = merge_bases(held, agreed_basis)
    sorter = _Sorter(subject.subject_ref, placement, ledger)
    for record in records:
        target = RecordRef(record.system, record.object_type.value, record.id)
        if record.emails:  # consent is addressed: a record without an address holds none
            current = {c.purpose: c.status for c in record.consents}
            for flag, opt_out in in_force:
                if record.opt_out and record.opt_out.holds(flag.channel):
                    continue
                # Some vendors withdraw every subscription with it: those are echoes too.
                implied = tuple(
                    consent_field(p.id)
                    for p in purposes
                    if p.channel == flag.channel
                    and current.get(p.id) is not ConsentStatus.WITHDRAWN
                )
                sorter.add(record, target, flag.kind, flag.field, flag.why, opt_out,
                           implied=implied, channel=flag.channel)  # fmt: skip
            for purpose_id, field_name, decision in decisions:
                if current.get(purpose_id, ConsentStatus.UNKNOWN) is not decision.status:
                    sorter.add(record, target, ChangeKind.CONSENT, field_name, decision.why,
                               decision.follows, purpose_id)  # fmt: skip
        if basis is not None and record.lawful_basis is not basis.basis:
            sorter.add(record, target, ChangeKind.LAWFUL_BASIS, LAWFUL_BASIS_FIELD, basis.why,
                       basis.follows)  # fmt: skip
    return SubjectPlan(
        subject.subject_ref,
        tuple(sorter.changes),
        tuple(sorter.awaiting),
        tuple(sorter.not_allowed),
        basis.basis if basis else None,
    )


@dataclass
class _Sorter:
    """Files each wanted change: to write, waiting for the person, or not allowed."""

    subject_ref: str
    placement: Placement
    ledger: Ledger
    changes: list[Change] = dataclasses.field(default_factory=list)
    awaiting: list[Change] = dataclasses.field(default_factory=list)
    not_allowed: list[Change] = dataclasses.field(default_factory=list)

    def add(
        self,
        record: CrmRecord,
        target: RecordRef,
        kind: ChangeKind,
        field_name: str,
        why: str,
        follows: GlobalOptOut | Consent | HeldBasis | None,
        purpose: str | None = None,
        implied: tuple[str, ...] = (),
        channel: Channel = Channel.EMAIL,
    ) -> None:
        where = self.placement(record, field_name)
        if where is Writable.NOT_HELD:
            return
        change = _change(self.subject_ref, target, kind, field_name, why, follows, purpose)
        if implied or channel is not Channel.EMAIL:
            change = change._replace(implied=implied, channel=channel)
        if where is Writable.NOT_ALLOWED:
            self.not_allowed.append(change)
        elif self.ledger and self.ledger.get(change.key) == Written(
            change.value, change.follows, NEEDS_SELF_SERVICE
        ):
            self.awaiting.append(change)
        else:
            self.changes.append(change)


def _change(
    subject_ref: str,
    target: RecordRef,
    kind: ChangeKind,
    field_name: str,
    why: str,
    follows: GlobalOptOut | Consent | HeldBasis | None,
    purpose: str | None,
) -> Change:
    if isinstance(follows, HeldBasis):
        act = Act(follows.system, follows.record_id, follows.modified_at)
        return Change(subject_ref, target, kind, field_name, follows.basis.value, act, why)
    if isinstance(follows, GlobalOptOut):
        act = Act(follows.source_system, follows.source_record, follows.changed_at)
        return Change(subject_ref, target, kind, field_name, _WITHDRAWN, act, why)
    if follows is None:  # a decision always follows an act; merge_purpose says which
        raise ValueError("a consent change needs the act it follows")
    act = Act(follows.source_system, follows.source_record, follows.changed_at)
    return Change(
        subject_ref, target, kind, field_name, follows.status.value, act, why, purpose,
        follows.lawful_basis, follows.explanation, follows.evidence,
    )  # fmt: skip


_WITHDRAWN = ConsentStatus.WITHDRAWN.value


def _opt_outs(records: Sequence[CrmRecord], ledger: Ledger) -> dict[str, list[GlobalOptOut]]:
    """Per channel, the records' opt-outs of it, the bridge's own writes read back as the
    acts they followed (see ``_as_acts``). An opt-out the person made is read with the time
    it was first seen: some vendors date it by the record's last edit, which the bridge's own
    writes move."""
    held: dict[str, list[GlobalOptOut]] = {}
    for record in records:
        opt_out = record.opt_out
        if opt_out is None or not opt_out.any:
            continue
        for flag in GLOBAL_OPT_OUTS:
            if not opt_out.holds(flag.channel):
                continue
            written = ledger.get((*record.key, flag.field)) if ledger else None
            echo = _echo(written, _WITHDRAWN, SEEN)
            acted = opt_out
            if echo is not None:
                acted = dataclasses.replace(
                    opt_out,
                    changed_at=echo.at,
                    source_system=System(echo.system),
                    source_record=echo.record_id,
                )
            held.setdefault(flag.channel, []).append(acted)
    return held


def _as_acts(record: CrmRecord, ledger: Ledger) -> CrmRecord:
    """The record with the bridge's own consent writes read back as the acts they followed.

    An echo carries the write's time, not the person's: left as it is, a propagated
    withdrawal would look newer than the grant it preceded. Only a state still equal to what
    was written is an echo; once the record says something else, the person has acted.
    """
    key = (record.system, record.object_type.value, record.id)
    consents = list(record.consents)
    for index, consent in enumerate(consents):
        echo = _echo(ledger.get((*key, consent_field(consent.purpose))), consent.status.value)
        if echo is not None:
            consents[index] = dataclasses.replace(
                consent,
                changed_at=echo.at,
                source_system=System(echo.system),
                source_record=echo.record_id,
            )
    if consents == list(record.consents):
        return record
    return dataclasses.replace(record, consents=tuple(consents))


def _basis_set_at(record: CrmRecord, ledger: Ledger) -> datetime | None:
    """When the record's lawful basis was set: as first seen, or for the bridge's own write
    the act it followed. The record's own timestamp moves with every edit, the bridge's
    consent writes included, so it only serves the first time a basis is read."""
    if ledger and record.lawful_basis is not None:
        key = (record.system, record.object_type.value, record.id, LAWFUL_BASIS_FIELD)
        act = _echo(ledger.get(key), record.lawful_basis.value, SEEN)
        if act is not None:
            return act.at
    return record.modified_at


def _echo(written: Written | None, state: str, *also: str) -> Act | None:
    """The act a state echoes, if the sync wrote exactly this state there (or, ``also``,
    noted it when first read)."""
    if written is None or written.value != state:
        return None
    return written.act if written.outcome in (DONE, *also) else None
