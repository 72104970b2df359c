"""The adapter machinery: error table, retries, and a limiter that never needs a 429."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.adapters.base import (
    ErrorRule,
    NotFound,
    Permanent,
    RateLimited,
    RateLimiter,
    Transient,
    classify,
    retrying,
)
from bridge.adapters.hubspot import HUBSPOT
from bridge.adapters.salesforce import SALESFORCE

TABLE = [
    ErrorRule(RateLimited, status=429),
    ErrorRule(Permanent, status=403, code="REQUEST_LIMIT_EXCEEDED"),
    ErrorRule(NotFound, code="ENTITY_IS_DELETED"),
    ErrorRule(NotFound, status=404),
    ErrorRule(Transient, status=range(500, 600)),
    ErrorRule(Transient, status=None, code="connection"),
]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, None, RateLimited),
        (403, "REQUEST_LIMIT_EXCEEDED", Permanent),
        (404, "ENTITY_IS_DELETED", NotFound),
        (404, "NOT_FOUND", NotFound),
        (503, None, Transient),
        (None, "connection", Transient),
        (400, "VALIDATION_ERROR", Permanent),
        (None, None, Permanent),
    ],
)
def test_the_first_matching_rule_decides(
    status: int | None, code: str | None, expected: type
) -> None:
    assert classify(TABLE, status, code) is expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@given(st.integers(1, 20), st.integers(1, 200))
def test_limiter_never_lets_more_than_max_calls_into_any_window(max_calls: int, calls: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_calls, 10.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(calls):
        limiter.acquire()
        sent.append(clock.now)
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + 10.0]
        assert len(in_window) <= max_calls
    # and it waits no longer than it must: full windows only
    assert clock.now <= 10.0 * ((calls - 1) // max_calls) + 1e-6


def test_limiter_slows_down_when_the_server_counts_other_clients() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.observe(remaining=1, limit=100, per_seconds=10.0)  # someone else used 98
    limiter.acquire()
    assert clock.now == 0.0
    limiter.acquire()  # the window is full: wait for it to roll
    assert clock.now == pytest.approx(10.0)


def test_retrying_retries_transient_and_rate_limited_only() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise Transient(HUBSPOT, "502")
        if len(attempts) == 2:
            raise RateLimited(HUBSPOT, "burst", retry_after=0.01)
        return "ok"

    assert retrying(flaky) == "ok"
    assert len(attempts) == 3

    def refused() -> None:
        attempts.append(1)
        raise Permanent(SALESFORCE, "INVALID_FIELD")

    attempts.clear()
    with pytest.raises(Permanent):
        retrying(refused)
    assert len(attempts) == 1


def test_retrying_gives_up_after_its_attempts() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise Transient(SALESFORCE, "503")

    with pytest.raises(Transient):
        retrying(down, attempts=3, max_seconds=5)
    assert len(calls) == 3
