"""The plan for one subject, and the lawful-basis merge it uses: pure, so tested directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
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
from bridge.policies.lawful_basis import HeldBasis, merge_bases
from bridge.services.plan import (
    DO_NOT_CALL_FIELD,
    DONE,
    NEEDS_SELF_SERVICE,
    Act,
    ChangeKind,
    Writable,
    Written,
    plan_subject,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
MARKETING = Purpose(id="marketing_email", hubspot_subscription_id="1",
                    salesforce_data_use_purpose="Marketing")  # fmt: skip
HS, SF = HUBSPOT, SALESFORCE


def everywhere(_record: CrmRecord, _field: str) -> Writable:
    return Writable.YES


def record(
    system: System,
    record_id: str,
    *,
    consent: tuple[ConsentStatus, datetime, bool] | None = None,
    opted_out_at: datetime | None = None,
    basis: LawfulBasis | None = None,
    modified_at: datetime = T0,
) -> CrmRecord:
    consents = ()
    if consent:
        status, at, evidenced = consent
        evidence = Evidence("web form", at) if evidenced else Evidence()
        consents = (Consent("marketing_email", status, at, system, record_id, evidence=evidence),)
    opt_out = GlobalOptOut(opted_out_at is not None, False, opted_out_at, system, record_id)
    return CrmRecord(
        system, ObjectType.CONTACT, record_id, ("ada@example.com",), lawful_basis=basis,
        consents=consents, opt_out=opt_out, modified_at=modified_at,
    )  # fmt: skip


def subject(*records: CrmRecord) -> Subject:
    return Subject("ref", records, frozenset({"ada@example.com"}))


def test_an_opt_out_in_one_system_is_planned_for_every_other_record() -> None:
    plan = plan_subject(
        subject(record(HS, "1", opted_out_at=T0), record(SF, "003")),
        [MARKETING],
        placement=everywhere,
    )
    kinds = {(c.record.id, c.kind) for c in plan.changes}
    # HubSpot itself held no status for the purpose: the opt-out withdraws it there too.
    assert kinds == {
        ("003", ChangeKind.OPT_OUT),
        ("003", ChangeKind.CONSENT),
        ("1", ChangeKind.CONSENT),
    }
    assert all(c.follows == Act("hubspot", "1", T0) for c in plan.changes)


def test_an_echoed_opt_out_counts_at_the_time_of_the_act_it_follows() -> None:
    """The bridge wrote the opt-out to HubSpot at T0+10d following Salesforce's act at T0; an
    evidenced grant at T0+5d is later than the act, so it stands."""
    echo = record(HS, "1", opted_out_at=T0 + timedelta(days=10))
    grant = (ConsentStatus.GRANTED, T0 + timedelta(days=5), True)
    sf = record(SF, "003", consent=grant, opted_out_at=T0)
    ledger = {
        ("hubspot", "contact", "1", "opt_out"): Written(
            "withdrawn", Act("salesforce", "003", T0), DONE
        )
    }
    with_echo = plan_subject(subject(echo, sf), [MARKETING], placement=everywhere, ledger=ledger)
    without = plan_subject(subject(echo, sf), [MARKETING], placement=everywhere)
    grant_to_hubspot = [c for c in with_echo.changes if c.kind is ChangeKind.CONSENT]
    assert [(c.record.id, c.value) for c in grant_to_hubspot] == [("1", "granted")]
    assert [(c.record.id, c.value) for c in without.changes] == [
        ("1", "withdrawn"),
        ("003", "withdrawn"),
    ]


def test_a_refused_change_waits_for_the_person_until_a_newer_act() -> None:
    hs = record(HS, "1", consent=(ConsentStatus.WITHDRAWN, T0, False))
    sf = record(SF, "003", consent=(ConsentStatus.GRANTED, T0 + timedelta(days=1), True))
    act = Act("salesforce", "003", T0 + timedelta(days=1))
    ledger = {
        ("hubspot", "contact", "1", "consent:marketing_email"): Written(
            "granted", act, NEEDS_SELF_SERVICE
        )
    }
    plan = plan_subject(subject(hs, sf), [MARKETING], placement=everywhere, ledger=ledger)
    assert plan.changes == () and len(plan.awaiting_person) == 1
    newer = record(SF, "003", consent=(ConsentStatus.GRANTED, T0 + timedelta(days=2), True))
    again = plan_subject(subject(hs, newer), [MARKETING], placement=everywhere, ledger=ledger)
    assert [c.record.id for c in again.changes] == ["1"]


def test_minimisation_reports_instead_of_writing_and_a_forbidden_basis_does_not_vote() -> None:
    def no_salesforce_basis(r: CrmRecord, field: str) -> Writable:
        forbidden = r.system is SF and field == "lawful_basis"
        return Writable.NOT_ALLOWED if forbidden else Writable.YES

    hs = record(HS, "1", basis=LawfulBasis.CONTRACT)
    sf = record(SF, "003", basis=LawfulBasis.CONSENT, modified_at=T0 + timedelta(days=1))
    plan = plan_subject(subject(hs, sf), [MARKETING], placement=no_salesforce_basis)
    assert plan.changes == () and plan.lawful_basis is LawfulBasis.CONTRACT
    assert [(c.record.id, c.value) for c in plan.not_allowed] == [("003", "contract")]


def test_a_change_since_the_last_agreement_beats_a_later_unrelated_edit() -> None:
    hs = record(HS, "1", basis=LawfulBasis.CONTRACT, modified_at=T0)
    sf = record(SF, "003", basis=LawfulBasis.CONSENT, modified_at=T0 + timedelta(days=3))
    plan = plan_subject(
        subject(hs, sf), [MARKETING], placement=everywhere, agreed_basis=LawfulBasis.CONSENT
    )
    assert [(c.record.id, c.value) for c in plan.changes] == [("003", "contract")]


bases = st.sampled_from(list(LawfulBasis))
held = st.builds(
    HeldBasis,
    bases,
    st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
    st.sampled_from(["hubspot", "salesforce"]),
    st.sampled_from(["1", "2", "003", "00Q"]),
)


@given(st.lists(held, max_size=6), st.one_of(st.none(), bases), st.randoms())
def test_the_basis_merge_does_not_depend_on_reading_order(
    values: list[HeldBasis], agreed: LawfulBasis | None, rng: object
) -> None:
    shuffled = list(values)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert merge_bases(values, agreed) == merge_bases(shuffled, agreed)


@given(st.lists(held, min_size=1, max_size=6), bases)
def test_a_single_change_from_the_agreed_basis_always_wins(
    values: list[HeldBasis], agreed: LawfulBasis
) -> None:
    changed = values[0]
    rest = [HeldBasis(agreed, v.modified_at, v.system, v.record_id) for v in values[1:]]
    decision = merge_bases([changed, *rest], agreed)
    assert decision is not None and decision.basis is changed.basis


def called(system: System, record_id: str, kind: ObjectType, *, do_not_call: bool) -> CrmRecord:
    """A record that does (or does not) say not to call, as of T0."""
    opt_out = GlobalOptOut(False, do_not_call, T0, system, record_id)
    return CrmRecord(system, kind, record_id, ("ada@example.com",), opt_out=opt_out)


def no_calls_in_hubspot(record: CrmRecord, field: str) -> Writable:
    """HubSpot holds no do-not-call flag (its adapter's ``field_for`` says None)."""
    held = not (record.system is HS and field == DO_NOT_CALL_FIELD)
    return Writable.YES if held else Writable.NOT_HELD


def test_do_not_call_reaches_every_record_that_can_hold_it_and_withdraws_phone_purposes() -> None:
    calls = Purpose(id="sales_calls", channel="phone", salesforce_data_use_purpose="Calls")
    granted = Consent("sales_calls", ConsentStatus.GRANTED, T0 - timedelta(days=1), HS, "1")
    hubspot = called(HS, "1", ObjectType.CONTACT, do_not_call=False)
    hubspot = CrmRecord(HS, ObjectType.CONTACT, "1", ("ada@example.com",), consents=(granted,),
                        opt_out=hubspot.opt_out)  # fmt: skip
    plan = plan_subject(
        subject(
            called(SF, "003", ObjectType.CONTACT, do_not_call=True),
            called(SF, "00Q", ObjectType.LEAD, do_not_call=False),
            hubspot,
        ),
        [MARKETING, calls],
        placement=no_calls_in_hubspot,
    )
    changes = {(c.record.id, c.kind, c.field, c.value, c.channel) for c in plan.changes}
    assert changes == {
        ("00Q", ChangeKind.DO_NOT_CALL, DO_NOT_CALL_FIELD, "withdrawn", Channel.PHONE),
        ("1", ChangeKind.CONSENT, "consent:sales_calls", "withdrawn", Channel.EMAIL),
        ("00Q", ChangeKind.CONSENT, "consent:sales_calls", "withdrawn", Channel.EMAIL),
        ("003", ChangeKind.CONSENT, "consent:sales_calls", "withdrawn", Channel.EMAIL),
    }
    assert all(c.follows == Act("salesforce", "003", T0) for c in plan.changes)
    [dnc] = [c for c in plan.changes if c.kind is ChangeKind.DO_NOT_CALL]
    assert dnc.implied == ("consent:sales_calls",)
    assert dnc.as_dict()["change"] == "do_not_call"


def test_do_not_call_is_never_lifted_by_a_sync() -> None:
    """The bridge wrote Do Not Call to the Lead following the Contact's act; then someone
    cleared it on the Contact. The Lead's flag is that act's echo, and it still holds: the
    Contact gets it back, and no change ever clears one."""
    ledger = {
        ("salesforce", "lead", "00Q", DO_NOT_CALL_FIELD): Written(
            "withdrawn", Act("salesforce", "003", T0), DONE
        )
    }
    plan = plan_subject(
        subject(
            called(SF, "003", ObjectType.CONTACT, do_not_call=False),
            called(SF, "00Q", ObjectType.LEAD, do_not_call=True),
        ),
        [MARKETING],
        placement=everywhere,
        ledger=ledger,
    )
    assert [(c.record.id, c.kind, c.value, c.follows) for c in plan.changes] == [
        ("003", ChangeKind.DO_NOT_CALL, "withdrawn", Act("salesforce", "003", T0))
    ]
