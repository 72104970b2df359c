"""From what every system holds about a person to what each record must be told. Pure.

For one subject: echoes of the bridge's own writes are read back as the acts they followed,
the policies merge, and every record that differs gets a typed change naming the act it
follows and why (ARCHITECTURE.md, "A sync", step 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from bridge.adapters.base import RecordRef
from bridge.model import (
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
from bridge.policies.consent import merge_purposes, opted_out
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


class SubjectPlan(NamedTuple):
    """What one subject's records must be told. A tuple: a sync builds one per person."""

    subject_ref: str
    changes: tuple[Change, ...] = ()
    awaiting_person: tuple[Change, ...] = ()
    """Changes the vendor refused for the same act before: only the person can make them."""
    not_allowed: tuple[Change, ...] = ()
    lawful_basis: LawfulBasis | None = None
    """The basis the systems agree on once the changes are applied."""


Placement = Callable[[CrmRecord, str], Writable]
_Template = tuple[
    ChangeKind, str, str, Act, str, str | None, LawfulBasis | None, str | None, Evidence,
    tuple[str, ...], Channel,
]  # fmt: skip
"""A change less its subject and record: ``Change``'s fields from ``kind`` on. One merged
answer is one template, whatever the number of records that differ from it."""

_WITHDRAWN = ConsentStatus.WITHDRAWN.value
# Enum members the hot path reads, looked up once: reading one from its class costs Python
# 3.11 about as much as building a small tuple.
_YES, _NOT_HELD, _NOT_ALLOWED = Writable.YES, Writable.NOT_HELD, Writable.NOT_ALLOWED
_UNKNOWN, _CONSENT, _EMAIL = ConsentStatus.UNKNOWN, ChangeKind.CONSENT, Channel.EMAIL
# Each member's text, without the enum's ``value`` property (a Python-level descriptor).
_TEXT: dict[str, str] = {m: m.value for e in (ConsentStatus, LawfulBasis, ObjectType) for m in e}
# The tuples built per person go through ``tuple.__new__``, as ``_make`` does, fields in
# their declared order: a NamedTuple's generated ``__new__`` is a Python function that
# costs twice as much.
_new = tuple.__new__


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
    50,000 people per second): each merged answer becomes a change template once, and a
    change is built only for a record that differs from it.
    """
    ledger = ledger or {}
    records = subject.records
    opt_outs = _opt_outs(records, ledger)
    in_force = [
        (flag, _new(Act, (first.source_system, first.source_record, first.changed_at)))
        for flag in GLOBAL_OPT_OUTS
        if flag.channel in opt_outs
        and (first := opted_out(opt_outs[flag.channel], flag.channel)) is not None
    ] if opt_outs else []  # fmt: skip
    decisions = _consent_changes(purposes, _consent_acts(records, ledger), opt_outs)
    basis, basis_change = _basis_change(records, placement, agreed_basis, ledger)
    wanted: list[tuple[CrmRecord, list[_Template]]] = []
    for record in records:
        needs: list[_Template] = []
        if record.emails:  # consent is addressed: a record without an address holds none
            current = {c.purpose: c.status for c in record.consents}
            for flag, act in in_force:
                if record.opt_out and record.opt_out.holds(flag.channel):
                    continue
                # Some vendors withdraw every subscription with it: those are echoes too.
                implied = tuple(
                    consent_field(p.id)
                    for p in purposes
                    if p.channel == flag.channel
                    and current.get(p.id) is not ConsentStatus.WITHDRAWN
                )
                needs.append((flag.kind, flag.field, _WITHDRAWN, act, flag.why, None, None,
                              None, NO_EVIDENCE, implied, flag.channel))  # fmt: skip
            for purpose_id, status, change in decisions:
                if current.get(purpose_id, _UNKNOWN) is not status:
                    needs.append(change)
        if basis_change is not None and record.lawful_basis is not basis:
            needs.append(basis_change)
        if needs:
            wanted.append((record, needs))
    return _sorted(subject.subject_ref, wanted, basis, placement, ledger)


def _consent_changes(
    purposes: Sequence[Purpose],
    consents: Sequence[Consent],
    opt_outs: Mapping[str, Sequence[GlobalOptOut]],
) -> list[tuple[str, ConsentStatus, _Template]]:
    """Per purpose with a known merged state: its id, that state, and the change that
    brings a record holding another state in line."""
    decisions: list[tuple[str, ConsentStatus, _Template]] = []
    for purpose, decision in zip(
        purposes, merge_purposes(purposes, consents, opt_outs), strict=True
    ):
        follows = decision.follows
        if follows is None or decision.status is _UNKNOWN:
            continue
        act = _new(Act, (follows.source_system, follows.source_record, follows.changed_at))
        decisions.append((purpose.id, decision.status, (
            _CONSENT, consent_field(purpose.id), _TEXT[follows.status], act,
            decision.why, purpose.id, follows.lawful_basis, follows.explanation,
            follows.evidence, (), _EMAIL,
        )))  # fmt: skip
    return decisions


def _basis_change(
    records: Sequence[CrmRecord],
    placement: Placement,
    agreed: LawfulBasis | None,
    ledger: Ledger,
) -> tuple[LawfulBasis | None, _Template | None]:
    """The lawful basis the records should hold, and the change that brings one holding
    another in line. A basis the bridge may not copy from a record does not vote either."""
    held = [
        _new(HeldBasis, (r.lawful_basis, _basis_set_at(r, ledger), r.system, r.id))
        for r in records
        if r.lawful_basis is not None and placement(r, LAWFUL_BASIS_FIELD) is _YES
    ]
    decision = merge_bases(held, agreed)
    if decision is None:
        return None, None
    voter = decision.follows
    act = _new(Act, (voter.system, voter.record_id, voter.modified_at))
    return decision.basis, (
        ChangeKind.LAWFUL_BASIS, LAWFUL_BASIS_FIELD, _TEXT[voter.basis], act, decision.why,
        None, None, None, NO_EVIDENCE, (), _EMAIL,
    )  # fmt: skip


def _sorted(
    subject_ref: str,
    wanted: list[tuple[CrmRecord, list[_Template]]],
    basis: LawfulBasis | None,
    placement: Placement,
    ledger: Ledger,
) -> SubjectPlan:
    """The plan of each change the records want: to write, waiting for the person, or not
    allowed; a field the record cannot hold gets none."""
    changes: list[Change] = []
    awaiting: list[Change] = []
    not_allowed: list[Change] = []
    for record, needs in wanted:
        target = RecordRef(record.system, _TEXT[record.object_type], record.id)
        for template in needs:
            where = placement(record, template[1])
            if where is _NOT_HELD:
                continue
            change = _new(Change, (subject_ref, target, *template))
            if where is _NOT_ALLOWED:
                not_allowed.append(change)
            elif ledger and ledger.get(change.key) == Written(
                change.value, change.follows, NEEDS_SELF_SERVICE
            ):
                awaiting.append(change)
            else:
                changes.append(change)
    return _new(
        SubjectPlan, (subject_ref, tuple(changes), tuple(awaiting), tuple(not_allowed), basis)
    )


def _opt_outs(records: Sequence[CrmRecord], ledger: Ledger) -> dict[str, list[GlobalOptOut]]:
    """Per channel, the records' opt-outs of it, the bridge's own writes read back as the
    acts they followed (see ``_consent_acts``). An opt-out the person made is read with the
    time it was first seen: some vendors date it by the record's last edit, which the
    bridge's own writes move."""
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
            held.setdefault(flag.channel, []).append(_as_act(opt_out, echo))
    return held


def _consent_acts(records: Sequence[CrmRecord], ledger: Ledger) -> list[Consent]:
    """Every record's consents, the bridge's own writes read back as the acts they followed.

    An echo carries the write's time, not the person's: left as it is, a propagated
    withdrawal would look newer than the grant it preceded. Only a state still equal to what
    was written is an echo; once the record says something else, the person has acted.
    """
    if not ledger:
        return [c for r in records for c in r.consents]
    acts = []
    for record in records:
        key = record.key
        for consent in record.consents:
            field_key = (*key, consent_field(consent.purpose))
            acts.append(_as_act(consent, _echo(ledger.get(field_key), consent.status.value)))
    return acts


_Held = TypeVar("_Held", Consent, GlobalOptOut)


def _as_act(held: _Held, echo: Act | None) -> _Held:
    """What a record holds, dated and sourced as the act it echoes (if it is an echo)."""
    if echo is None:
        return held
    return dataclasses.replace(
        held, changed_at=echo.at, source_system=System(echo.system), source_record=echo.record_id
    )


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
