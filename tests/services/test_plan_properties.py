"""The plan for one subject, property-tested over random subjects: applying a plan settles the
subject (planning again asks for nothing), and the order records are read in changes nothing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.model import (
    Consent,
    ConsentStatus,
    CrmRecord,
    Evidence,
    GlobalOptOut,
    LawfulBasis,
    ObjectType,
    Purpose,
    Subject,
)
from bridge.services.plan import (
    DO_NOT_CALL_FIELD,
    DONE,
    GLOBAL_OPT_OUTS,
    LAWFUL_BASIS_FIELD,
    OPT_OUT_FIELD,
    SEEN,
    Act,
    Change,
    ChangeKind,
    FieldKey,
    Placement,
    Writable,
    Written,
    plan_subject,
)

PURPOSES = (
    Purpose(id="newsletter"),
    Purpose(id="offers"),
    Purpose(id="sales_calls", channel="phone"),
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=30)  # when a sync writes: after every act the records hold
WITHDRAWN = ConsentStatus.WITHDRAWN.value
times = st.one_of(st.none(), st.integers(0, 4).map(lambda d: T0 + timedelta(days=d)))
evidence = st.one_of(st.just(Evidence()), st.just(Evidence("web form", T0)))


@st.composite
def records(draw: st.DrawFn, index: int) -> CrmRecord:
    system = draw(st.sampled_from([HUBSPOT, SALESFORCE]))
    kind = draw(st.sampled_from([ObjectType.CONTACT, ObjectType.LEAD]))
    record_id = f"r{index}"
    held = draw(st.lists(st.sampled_from(PURPOSES), unique=True, max_size=len(PURPOSES)))
    consents = tuple(
        Consent(
            p.id,
            draw(st.sampled_from(list(ConsentStatus))),
            draw(times),
            system,
            record_id,
            evidence=draw(evidence),
        )
        for p in held
    )
    email, do_not_call = draw(st.booleans()), draw(st.booleans())
    opt_out = GlobalOptOut(email, do_not_call, draw(times), system, record_id)
    return CrmRecord(
        system,
        kind,
        record_id,
        draw(st.sampled_from([("ada@example.com",), ("ada@example.com",), ()])),
        lawful_basis=draw(st.one_of(st.none(), st.sampled_from(list(LawfulBasis)))),
        consents=consents,
        opt_out=draw(st.sampled_from([opt_out, None])),
        modified_at=draw(times),
    )


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    count = draw(st.integers(1, 4))
    return Subject("ref", tuple(draw(records(i)) for i in range(count)))


# Where each system may write each field: all of them, or some not held or not allowed.
fields = (OPT_OUT_FIELD, DO_NOT_CALL_FIELD, LAWFUL_BASIS_FIELD, "consent:offers")
placements = st.dictionaries(
    st.tuples(st.sampled_from([HUBSPOT, SALESFORCE]), st.sampled_from(fields)),
    st.sampled_from(list(Writable)),
)


def placement_of(where: dict[tuple[str, str], Writable]) -> Placement:
    def placement(record: CrmRecord, field_name: str) -> Writable:
        return where.get((record.system, field_name), Writable.YES)

    return placement


def noted(subject: Subject) -> dict[FieldKey, Written]:
    """What a sync notes on first reading the records, as ``Reconciler`` does: when each
    opt-out and lawful basis was first seen (a vendor restamps them with any later edit)."""
    ledger = {}
    for record in subject.records:
        opt_out = record.opt_out
        for flag in GLOBAL_OPT_OUTS:
            if opt_out is not None and opt_out.holds(flag.channel):
                act = Act(record.system, record.id, opt_out.changed_at)
                ledger[(*record.key, flag.field)] = Written(WITHDRAWN, act, SEEN)
        if record.lawful_basis is not None:
            act = Act(record.system, record.id, record.modified_at)
            ledger[(*record.key, LAWFUL_BASIS_FIELD)] = Written(
                record.lawful_basis.value, act, SEEN
            )
    return ledger


def applied(subject: Subject, changes: tuple[Change, ...]) -> Subject:
    """The subject once a sync wrote every change: each record written to stamped later
    than any act, as a vendor stamps an edit."""
    out = []
    for record in subject.records:
        mine = [c for c in changes if c.key[:3] == record.key]
        consents = {c.purpose: c for c in record.consents}
        opt_out = record.opt_out or GlobalOptOut(False, False, None, record.system, record.id)
        basis = record.lawful_basis
        for change in mine:
            if change.kind is ChangeKind.CONSENT:
                assert change.purpose is not None
                consents[change.purpose] = Consent(
                    change.purpose, ConsentStatus(change.value), LATER, record.system, record.id
                )
            elif change.kind is ChangeKind.LAWFUL_BASIS:
                basis = LawfulBasis(change.value)
            else:
                opt_out = dataclasses.replace(
                    opt_out,
                    email=opt_out.email or change.kind is ChangeKind.OPT_OUT,
                    do_not_call=opt_out.do_not_call or change.kind is ChangeKind.DO_NOT_CALL,
                    changed_at=LATER,
                )
        if mine:
            record = dataclasses.replace(
                record,
                consents=tuple(consents.values()),
                opt_out=opt_out,
                lawful_basis=basis,
                modified_at=LATER,
            )
        out.append(record)
    return dataclasses.replace(subject, records=tuple(out))


@given(subjects(), placements)
def test_a_plan_applied_settles_the_subject(
    subject: Subject, where: dict[tuple[str, str], Writable]
) -> None:
    """Every change written (the ledger holding the writes as echoes of the acts they
    follow), the next sync plans none: the bridge's own writes never look like new acts."""
    placement = placement_of(where)
    plan = plan_subject(subject, PURPOSES, placement=placement)
    ledger = noted(subject) | {c.key: Written(c.value, c.follows, DONE) for c in plan.changes}
    again = plan_subject(
        applied(subject, plan.changes),
        PURPOSES,
        placement=placement,
        agreed_basis=plan.lawful_basis,
        ledger=ledger,
    )
    assert again.changes == ()
    assert again.lawful_basis is plan.lawful_basis
    assert {c.key for c in again.not_allowed} == {c.key for c in plan.not_allowed}


@given(subjects(), placements, st.randoms())
def test_the_order_records_are_read_in_does_not_change_the_plan(
    subject: Subject, where: dict[tuple[str, str], Writable], rng: Random
) -> None:
    shuffled = list(subject.records)
    rng.shuffle(shuffled)
    placement = placement_of(where)
    plan = plan_subject(subject, PURPOSES, placement=placement)
    other = plan_subject(
        dataclasses.replace(subject, records=tuple(shuffled)), PURPOSES, placement=placement
    )
    assert set(other.changes) == set(plan.changes)
    assert set(other.not_allowed) == set(plan.not_allowed)
    assert other.lawful_basis is plan.lawful_basis


@given(subjects())
def test_every_change_moves_a_record_and_none_lifts_an_opt_out(subject: Subject) -> None:
    plan = plan_subject(subject, PURPOSES, placement=placement_of({}))
    held = {r.key: r for r in subject.records}
    for change in plan.changes:
        record = held[change.key[:3]]
        assert change.follows == Act(*change.follows)  # a plain act, never a record
        if change.kind is ChangeKind.CONSENT:
            assert change.purpose is not None
            now = {c.purpose: c.status.value for c in record.consents}.get(change.purpose)
            assert change.value != now
        elif change.kind is ChangeKind.LAWFUL_BASIS:
            assert record.lawful_basis is None or change.value != record.lawful_basis.value
        else:
            assert change.value == ConsentStatus.WITHDRAWN.value
            assert record.opt_out is None or not record.opt_out.holds(change.channel)
