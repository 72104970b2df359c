"""Which consent state wins when the CRMs disagree. Pure: no I/O.

The latest act wins, but only an evidenced grant overturns a withdrawal; ``unknown`` never
overrides; ties withdraw. The merge keeps an order-free *summary* per purpose, so the order
systems are read in cannot change the answer (ARCHITECTURE.md, "The pieces").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from bridge.model import Channel, Consent, ConsentStatus, Evidence, GlobalOptOut, Purpose

_OLDEST = datetime.min.replace(tzinfo=UTC)
# Looked up once: reading a member from its enum class costs Python 3.11 about as much as a
# small allocation, and the merge runs per purpose and person.
_GRANTED, _WITHDRAWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN
_UNKNOWN = ConsentStatus.UNKNOWN


def _later(a: Consent | None, b: Consent | None) -> Consent | None:
    """The later act: by time, equal times settling on where the act was recorded, and two
    acts of one record at one time on their content, so that the answer never depends on
    which was read first."""
    if a is None or b is None:
        return a or b
    order_a = (a.changed_at or _OLDEST, a.source_system, a.source_record)
    order_b = (b.changed_at or _OLDEST, b.source_system, b.source_record)
    if order_a != order_b:
        return a if order_a > order_b else b
    return a if repr(a) >= repr(b) else b


@dataclass(frozen=True)
class ConsentSummary:
    """What the merge needs to remember of any number of consent records."""

    withdrawal: Consent | None = None
    active_grant: Consent | None = None
    grant: Consent | None = None
    unknown: Consent | None = None

    @classmethod
    def of(cls, consent: Consent) -> ConsentSummary:
        if consent.status is ConsentStatus.WITHDRAWN:
            return cls(withdrawal=consent)
        if consent.status is ConsentStatus.UNKNOWN:
            return cls(unknown=consent)
        active = consent if consent.evidence.is_active_act else None
        return cls(active_grant=active, grant=consent)

    def combine(self, other: ConsentSummary) -> ConsentSummary:
        return ConsentSummary(
            withdrawal=_later(self.withdrawal, other.withdrawal),
            active_grant=_later(self.active_grant, other.active_grant),
            grant=_later(self.grant, other.grant),
            unknown=_later(self.unknown, other.unknown),
        )

    def decide(self) -> ConsentDecision:
        return _decide(self.withdrawal, self.active_grant, self.grant, self.unknown)


def _decide(
    withdrawal: Consent | None, active: Consent | None, grant: Consent | None,
    unknown: Consent | None,
) -> ConsentDecision:  # fmt: skip
    """The state a summary's parts add up to (``ConsentSummary`` names them)."""
    if withdrawal is None and grant is not None:
        return ConsentDecision(_GRANTED, grant, "latest grant")
    if withdrawal is not None:
        overturned = active is not None and _when(active) > _when(withdrawal)
        if not overturned:
            return ConsentDecision(_WITHDRAWN, withdrawal, "latest withdrawal")
        return ConsentDecision(_GRANTED, active, "evidenced grant after the latest withdrawal")
    return ConsentDecision(_UNKNOWN, unknown, "no known state")


def _when(consent: Consent) -> datetime:
    return consent.changed_at or _OLDEST


class ConsentDecision(NamedTuple):
    """The merged state of one purpose, and the record and act it follows. A tuple: the
    sync builds one per purpose and person."""

    status: ConsentStatus
    follows: Consent | None
    why: str


def summarise(consents: Iterable[Consent]) -> ConsentSummary:
    """The summary of many consents: the same as combining each one's, in one pass."""
    return ConsentSummary(*_latest(consents))


_Parts = tuple[Consent | None, Consent | None, Consent | None, Consent | None]


def _latest(consents: Iterable[Consent]) -> _Parts:
    """A summary's parts, without building the summary: the sync merges every purpose of
    every person."""
    withdrawal = active = grant = unknown = None
    for consent in consents:
        status = consent.status
        if status is _WITHDRAWN:
            withdrawal = consent if withdrawal is None else _later(withdrawal, consent)
        elif status is _UNKNOWN:
            unknown = consent if unknown is None else _later(unknown, consent)
        else:
            grant = consent if grant is None else _later(grant, consent)
            if consent.evidence.is_active_act:
                active = consent if active is None else _later(active, consent)
    return withdrawal, active, grant, unknown


_NO_EVIDENCE = Evidence()


OPTED_OUT: dict[str, str] = {Channel.EMAIL: "global email opt-out", Channel.PHONE: "do not call"}


def opt_out_as_withdrawal(purpose: Purpose, opt_out: GlobalOptOut) -> Consent:
    """A global opt-out read as a withdrawal of one purpose of its channel."""
    return Consent(
        purpose=purpose.id,
        status=ConsentStatus.WITHDRAWN,
        changed_at=opt_out.changed_at,
        source_system=opt_out.source_system,
        source_record=opt_out.source_record,
        explanation=OPTED_OUT.get(purpose.channel),
        evidence=_NO_EVIDENCE,
    )


def merge_purpose(
    purpose: Purpose, consents: Iterable[Consent], opt_outs: Iterable[GlobalOptOut] = ()
) -> ConsentDecision:
    """The state every system should hold for ``purpose``, from every record's view of it:
    a global opt-out of the purpose's channel (all email, or calls) withdraws it too."""
    return merge_purposes((purpose,), consents, {purpose.channel: opt_outs})[0]


def merge_purposes(
    purposes: Sequence[Purpose],
    consents: Iterable[Consent],
    opt_outs: Mapping[str, Iterable[GlobalOptOut]],
) -> list[ConsentDecision]:
    """``merge_purpose`` of each purpose, in order, reading the consents once (the sync
    merges every purpose of every person); ``opt_outs`` by channel."""
    own: dict[str, list[Consent]] = {p.id: [] for p in purposes}
    for consent in consents:
        if (mine := own.get(consent.purpose)) is not None:
            mine.append(consent)
    decisions = []
    for purpose in purposes:
        mine, channel = own[purpose.id], purpose.channel
        if channel in opt_outs:
            withdrawn = [opt_out_as_withdrawal(purpose, o) for o in opt_outs[channel]
                         if o.holds(channel)]  # fmt: skip
            mine = mine + withdrawn
        decisions.append(_decide(*_latest(mine)))
    return decisions


def opted_out(opt_outs: Iterable[GlobalOptOut], channel: str) -> GlobalOptOut | None:
    """The global opt-out of ``channel`` in force, if any system holds one. Once one does,
    it holds everywhere: lifting an opt-out takes the person's own act in the system that
    recorded it, never a sync."""
    first: GlobalOptOut | None = None
    for opt_out in opt_outs:
        if opt_out.holds(channel):
            first = _earliest(first, opt_out)
    return first


def _earliest(a: GlobalOptOut | None, b: GlobalOptOut) -> GlobalOptOut:
    """The first recorded opt-out is the person's act; later ones are its echoes."""
    if a is None:
        return b
    key_a = (a.changed_at or _OLDEST, a.source_system, a.source_record)
    key_b = (b.changed_at or _OLDEST, b.source_system, b.source_record)
    return a if key_a <= key_b else b
