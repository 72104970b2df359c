"""The retention policy's tricky parts: calendar months, whole-subject judgement, and which
rule purges first, checked on generated subjects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE
from bridge.model import CrmRecord, ObjectType, RelatedRecords
from bridge.policies.retention import RetentionRule, add_months, first_due, judge

OPPORTUNITY = RelatedRecords(
    name="open_opportunity", related_object="Opportunity", link_field="ContactId",
    where="IsClosed = false",
)  # fmt: skip


def rule(name: str = "stale", months: int = 24, **options: object) -> RetentionRule:
    return RetentionRule.model_validate(
        {
            "name": name,
            "covers": {
                "hubspot.contact": {"lifecyclestage": ["", "lead"]},
                "salesforce.Lead": {},
                "salesforce.Contact": {},
            },
            "keep_months": months,
            "action": "delete",
            **options,
        }
    )


days = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))
records = st.sampled_from([ObjectType.CONTACT, ObjectType.LEAD]).flatmap(
    lambda kind: st.builds(
        CrmRecord,
        system=st.just(SALESFORCE),
        object_type=st.just(kind),
        object_name=st.just(kind.value.capitalize()),  # Contact, Lead
        id=st.text("0123456789", min_size=3, max_size=6),
        created_at=st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
        active_at=st.none()
        | st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
        ),
    )
)


@given(days, st.integers(0, 600))
def test_adding_months_keeps_the_day_or_ends_the_shorter_month(day: date, months: int) -> None:
    later = add_months(day, months)
    assert (later.year * 12 + later.month) - (day.year * 12 + day.month) == months
    assert later.day == day.day or (later.day < day.day and (later + timedelta(days=1)).day == 1)


@given(days, st.integers(0, 300), st.integers(0, 300))
def test_more_months_never_fall_due_sooner(day: date, a: int, b: int) -> None:
    assert (add_months(day, a) <= add_months(day, b)) == (a <= b)


@given(st.lists(records, min_size=1, max_size=6), st.randoms())
def test_the_verdict_does_not_depend_on_the_order_records_are_read(
    found: list[CrmRecord], shuffler: object
) -> None:
    shuffled = list(found)
    shuffler.shuffle(shuffled)  # type: ignore[attr-defined]
    assert judge(rule(), found, (), {}) == judge(rule(), shuffled, (), {})


@given(st.lists(records, min_size=1, max_size=6))
def test_the_clock_runs_from_the_latest_sign_of_life_in_any_record(
    found: list[CrmRecord],
) -> None:
    verdict = judge(rule(), found, (), {})
    assert verdict is not None
    latest = max(m for r in found for m in (r.created_at, r.active_at) if m).date()
    assert verdict.due_on == add_months(latest, 24)


def test_one_record_the_rule_does_not_describe_keeps_the_subject_out_of_it() -> None:
    lead = CrmRecord(
        SALESFORCE, ObjectType.LEAD, "1", object_name="Lead", created_at=datetime(2020, 1, 1)
    )
    customer = CrmRecord(
        HUBSPOT, ObjectType.CONTACT, "2", attributes={"lifecyclestage": "customer"}
    )
    assert judge(rule(), [lead], (), {}) is not None
    assert judge(rule(), [lead, customer], (), {}) is None


def test_consent_or_a_related_row_keeps_a_person_whatever_the_dates() -> None:
    lead = CrmRecord(
        SALESFORCE, ObjectType.LEAD, "1", object_name="Lead", created_at=datetime(2000, 1, 1)
    )
    keeping = rule(kept_while_consent=["newsletter"], kept_while_related=[OPPORTUNITY])
    assert judge(keeping, [lead], ["newsletter"], {}).kept_by == (  # type: ignore[union-attr]
        "consent granted for newsletter"
    )
    related = judge(keeping, [lead], (), {"1": OPPORTUNITY})
    assert related is not None and related.kept_by == "open_opportunity on salesforce.Lead 1"
    due = judge(keeping, [lead], (), {})
    assert due is not None and due.kept_by is None and due.due(date(2026, 1, 1))
    assert due.why == (
        "no activity since 2000-01-01 (24 months); no consent for newsletter; no open_opportunity"
    )


def test_the_rule_that_purges_first_wins_and_the_earlier_rule_on_a_tie() -> None:
    lead = [
        CrmRecord(
            SALESFORCE, ObjectType.LEAD, "1", object_name="Lead", created_at=datetime(2020, 1, 1)
        )
    ]
    slow, fast, twin = rule("slow", 36), rule("fast", 6), rule("twin", 6)
    chosen = first_due([judge(r, lead, (), {}) for r in (slow, fast, twin)])
    assert chosen is not None and chosen.rule.name == "fast"
    kept = rule("kept", 1, kept_while_consent=["newsletter"])
    chosen = first_due([judge(r, lead, ["newsletter"], {}) for r in (kept, slow)])
    assert chosen is not None and chosen.rule.name == "slow"
