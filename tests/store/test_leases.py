"""The one retry decision of leased work (inbox events, erasure steps): give up, or try again
after an exponential, jittered, capped delay; and how ``settle_failure`` writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from bridge.sealing import Keyring
from bridge.store import inbox, leases, tables
from bridge.store.db import Store
from bridge.store.leases import MAX_DELAY_SECONDS, RetryPolicy, decide

attempts = st.integers(min_value=1, max_value=2000)
draws = st.floats(min_value=0.0, max_value=1.0)
policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(min_value=1, max_value=2000),
    backoff_seconds=st.floats(min_value=0.0, max_value=1e6),
)


@given(policies, attempts, draws)
def test_a_permanent_failure_is_always_dead_lettered(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    assert decide(policy, attempt, True, draw).dead


@given(policies, attempts, draws)
def test_a_transient_failure_is_retried_until_the_last_attempt_then_dead_lettered(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    assert decide(policy, attempt, False, draw).dead is (attempt >= policy.max_attempts)


@given(policies, attempts, draws)
def test_a_retry_waits_half_to_all_of_its_exponential_step_and_never_past_the_cap(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    verdict = decide(policy, attempt, False, draw)
    if verdict.dead:
        return
    delay = Fraction(verdict.delay.total_seconds())
    cap = Fraction(MAX_DELAY_SECONDS)
    step = Fraction(policy.backoff_seconds) * 2 ** (attempt - 1)  # exact, however large
    tick = Fraction(1, 10**6)  # a timedelta rounds to the microsecond
    assert 0 <= delay <= cap
    assert min(step / 2, cap) - tick <= delay <= min(step, cap) + tick


@given(policies, attempts, draws)
def test_delays_never_shrink_with_more_attempts_and_stay_at_the_cap_once_there(
    policy: RetryPolicy, attempt: int, draw: float
) -> None:
    policy = RetryPolicy(attempt + 2, policy.backoff_seconds)  # both attempts retried
    now, then = decide(policy, attempt, False, draw), decide(policy, attempt + 1, False, draw)
    assert then.delay >= now.delay
    if now.delay == timedelta(seconds=MAX_DELAY_SECONDS):
        assert then.delay == now.delay


def test_the_callers_defaults_give_their_familiar_delays() -> None:
    """Inbox (8 attempts) and erasure (6), 2 s steps: 1-2 s, 2-4 s, ... capped at an hour."""
    policy = RetryPolicy(max_attempts=8, backoff_seconds=2.0)
    assert decide(policy, 1, False, 0.0).delay == timedelta(seconds=1)
    assert decide(policy, 1, False, 1.0).delay == timedelta(seconds=2)
    assert decide(policy, 7, False, 1.0).delay == timedelta(seconds=128)
    assert decide(policy, 8, False, 0.0).dead
    assert decide(RetryPolicy(20, 2.0), 19, False, 1.0).delay == timedelta(hours=1)


def add_event(store: Store) -> inbox.InboxRow:
    row = {
        "source": "hubspot", "event_key": "e1", "event_type": "contact.propertyChange",
        "kind": "consent", "object_type": "contact", "object_id": "1",
        "received_at": "2026-11-23T11:00:00.000000+00:00",
        "payload": Keyring([Fernet.generate_key()]).seal(json.dumps({}).encode()),
    }  # fmt: skip
    with store.transaction() as conn:
        inbox.add(conn, [row])
    [claimed] = inbox.claim(store, {"consent"}, "2026-11-23T12:00:00", "2026-11-23T12:05:00", 1)
    return claimed


def test_settle_failure_writes_a_retry_or_a_dead_letter_with_the_reason(store: Store) -> None:
    row = add_event(store)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def fail(attempts: int) -> leases.Verdict:
        return leases.settle_failure(
            store, tables.inbox, row.id, attempts, policy=RetryPolicy(2, 10), permanent=False,
            reason="503", now=now, given_up={"processed_at": "x"},
        )  # fmt: skip

    verdict = fail(1)
    [stored] = inbox.all_rows(store)
    assert not verdict.dead and timedelta(seconds=5) <= verdict.delay <= timedelta(seconds=10)
    assert stored["status"] == leases.PENDING and stored["last_error"] == "503"
    assert datetime.fromisoformat(stored["available_at"]) == now + verdict.delay
    assert stored["processed_at"] is None

    verdict = fail(2)
    [stored] = inbox.all_rows(store)
    assert verdict.dead
    assert (stored["status"], stored["available_at"], stored["processed_at"]) == ("dead", None, "x")
