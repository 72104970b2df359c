"""The consent merge rule, property-tested: order-free, and a withdrawal is never lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.model import Channel, Consent, ConsentStatus, Evidence, GlobalOptOut, Purpose
from bridge.policies.consent import (
    ConsentSummary,
    merge_purpose,
    opted_out,
    summarise,
)

EMAIL = Purpose(id="marketing_email", channel="email")
PHONE = Purpose(id="sales_calls", channel="phone")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
times = st.one_of(st.none(), st.integers(0, 5).map(lambda d: T0 + timedelta(days=d)))
evidence = st.one_of(
    st.just(Evidence()),
    st.builds(Evidence, capture_source=st.just("web form"), captured_at=times.filter(bool)),
)
consents = st.builds(
    Consent,
    purpose=st.just(EMAIL.id),
    status=st.sampled_from(list(ConsentStatus)),
    changed_at=times,
    source_system=st.sampled_from([HUBSPOT, SALESFORCE]),
    source_record=st.sampled_from(["a", "b", "c"]),
    evidence=evidence,
)
consent_lists = st.lists(consents, max_size=8)


def decided(items: list[Consent]) -> tuple[ConsentStatus, Consent | None]:
    decision = merge_purpose(EMAIL, items)
    return decision.status, decision.follows


@given(consent_lists, st.randoms())
def test_the_order_systems_are_read_in_does_not_matter(items: list[Consent], rnd: Random) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert decided(items) == decided(shuffled)


@given(consent_lists, consent_lists, consent_lists)
def test_combining_summaries_is_associative_and_commutative(
    a: list[Consent], b: list[Consent], c: list[Consent]
) -> None:
    sa, sb, sc = summarise(a), summarise(b), summarise(c)
    assert sa.combine(sb).combine(sc) == sa.combine(sb.combine(sc))
    assert sa.combine(sb) == sb.combine(sa)
    assert sa.combine(sb).decide() == summarise(a + b).decide()


@given(consent_lists)
def test_merging_is_idempotent(items: list[Consent]) -> None:
    summary = summarise(items)
    assert summary.combine(summary) == summary
    assert decided(items + items) == decided(items)


@given(consent_lists)
def test_a_withdrawal_is_never_lost(items: list[Consent]) -> None:
    withdrawals = [c for c in items if c.status is ConsentStatus.WITHDRAWN]
    if not withdrawals:
        return
    latest = max((c.changed_at or datetime.min.replace(tzinfo=UTC)) for c in withdrawals)
    overturned = any(
        c.status is ConsentStatus.GRANTED
        and c.evidence.is_active_act
        and c.changed_at is not None
        and c.changed_at > latest
        for c in items
    )
    status, follows = decided(items)
    assert status is (ConsentStatus.GRANTED if overturned else ConsentStatus.WITHDRAWN)
    if overturned:
        assert follows is not None and follows.evidence.is_active_act


@given(consent_lists, st.lists(consents.filter(lambda c: c.status is ConsentStatus.UNKNOWN)))
def test_unknown_never_overrides_a_known_state(
    items: list[Consent], unknowns: list[Consent]
) -> None:
    if all(c.status is ConsentStatus.UNKNOWN for c in items):
        return
    assert decided(items + unknowns) == decided(items)


def consent(status: ConsentStatus, day: int, active: bool = False, source: str = "r") -> Consent:
    proof = Evidence("form", T0 + timedelta(days=day)) if active else Evidence()
    return Consent(EMAIL.id, status, T0 + timedelta(days=day), HUBSPOT, source, evidence=proof)


def test_the_latest_act_wins_between_grants_and_ties_withdraw() -> None:
    granted, withdrawn = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN
    assert decided([consent(granted, 1), consent(granted, 2, source="s")])[1].source_record == "s"
    assert decided([consent(withdrawn, 2), consent(granted, 2, active=True)])[0] is withdrawn
    assert decided([consent(withdrawn, 2), consent(granted, 3)])[0] is withdrawn  # no evidence
    assert decided([consent(withdrawn, 2), consent(granted, 3, active=True)])[0] is granted
    # the case a pairwise rule gets wrong: withdrawal, evidenced re-grant, then a plain grant
    cycle = [consent(withdrawn, 1), consent(granted, 2, active=True), consent(granted, 3)]
    assert decided(cycle)[0] is granted
    assert merge_purpose(EMAIL, []).status is ConsentStatus.UNKNOWN


def test_a_global_email_opt_out_withdraws_email_purposes_only() -> None:
    opt_out = GlobalOptOut(True, False, T0 + timedelta(days=5), SALESFORCE, "003A")
    grant = Consent(EMAIL.id, ConsentStatus.GRANTED, T0, HUBSPOT, "1")
    decision = merge_purpose(EMAIL, [grant], [opt_out])
    assert decision.status is ConsentStatus.WITHDRAWN
    assert decision.follows is not None and decision.follows.source_record == "003A"
    call = Consent(PHONE.id, ConsentStatus.GRANTED, T0, HUBSPOT, "1")
    assert merge_purpose(PHONE, [call], [opt_out]).status is ConsentStatus.GRANTED


def test_do_not_call_withdraws_phone_purposes_only() -> None:
    do_not_call = GlobalOptOut(False, True, T0 + timedelta(days=5), SALESFORCE, "00QB")
    call = Consent(PHONE.id, ConsentStatus.GRANTED, T0, HUBSPOT, "1")
    decision = merge_purpose(PHONE, [call], [do_not_call])
    assert decision.status is ConsentStatus.WITHDRAWN
    assert decision.follows is not None and decision.follows.explanation == "do not call"
    mail = Consent(EMAIL.id, ConsentStatus.GRANTED, T0, HUBSPOT, "1")
    assert merge_purpose(EMAIL, [mail], [do_not_call]).status is ConsentStatus.GRANTED


def test_an_opt_out_anywhere_holds_everywhere_and_follows_the_first_act() -> None:
    first = GlobalOptOut(True, False, T0, HUBSPOT, "1")
    echo = GlobalOptOut(True, True, T0 + timedelta(days=1), SALESFORCE, "003A")
    cleared = GlobalOptOut(False, False, T0 + timedelta(days=2), SALESFORCE, "00QB")
    for order in ([first, echo, cleared], [cleared, echo, first]):
        assert opted_out(order, Channel.EMAIL) == first
        assert opted_out(order, Channel.PHONE) == echo
    assert opted_out([cleared], Channel.EMAIL) is None
    assert opted_out([first, echo], "mailingaddress") is None


def test_summary_of_nothing_is_unknown() -> None:
    assert ConsentSummary().decide().status is ConsentStatus.UNKNOWN
