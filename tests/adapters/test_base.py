"""The adapter machinery: the error table and retries (pacing: test_pacing.py)."""

from __future__ import annotations

import socket

import pytest

from bridge.adapters.base import (
    Advice,
    ErrorRule,
    Failure,
    NotFound,
    Permanent,
    RateLimited,
    Transient,
    classify,
    no_answer,
    retrying,
    rule_for,
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

    with pytest.raises(Transient) as failed:
        retrying(down, attempts=3, give_up_after=60)
    assert len(calls) == 3
    assert failed.value.tries == 3 and failed.value.seconds > 0


def test_retrying_never_starts_a_wait_that_would_end_past_its_budget() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise Transient(HUBSPOT, "no answer")

    with pytest.raises(Transient) as failed:
        retrying(down, attempts=1000, give_up_after=1.5)
    # Full jitter waits 0.5 s x 2^n at most: a few tries fit, and the last wait ends in budget.
    assert 1 <= failed.value.tries == len(calls) < 1000
    assert failed.value.seconds < 1.5 + 5  # generous: only the calls' own time is added


def test_a_failure_says_one_line_with_the_crm_its_code_the_tries_and_the_fix() -> None:
    advice = Advice(
        "https://crm.example",
        {
            Failure.CREDENTIALS: ("Acme refused the login ({reason})", "check BRIDGE_ACME__KEY"),
            Failure.UNAVAILABLE: ("Acme unreachable at {where} ({reason})", "try later"),
        },
    )
    refused = advice.apply(
        Permanent(SALESFORCE, "login: 401", failure=Failure.CREDENTIALS), "login", "BAD_KEY"
    )
    assert refused.line() == "Acme refused the login (BAD_KEY): check BRIDGE_ACME__KEY"
    down = advice.apply(Transient(HUBSPOT, "read: no answer"), "read", "connection refused")
    down.tries, down.seconds = 4, 14.2
    assert down.failure is Failure.UNAVAILABLE
    assert down.line() == (
        "Acme unreachable at https://crm.example (connection refused) after 4 tries in 14 s: "
        "try later"
    )
    failed = Permanent(SALESFORCE, "erase: 400 FIELD_INTEGRITY_EXCEPTION: …")
    assert failed.failure is Failure.FAILED  # no words for it: the vendor's own
    assert failed.line() == "salesforce: erase: 400 FIELD_INTEGRITY_EXCEPTION: …"
    assert (
        refused.during("rectify: cannot look the person up")
        .line()
        .startswith("rectify: cannot look the person up: Acme refused the login (BAD_KEY)")
    )


def test_a_rule_may_say_what_a_refusal_asks_of_a_person() -> None:
    table = [ErrorRule(Permanent, status=401, failure=Failure.CREDENTIALS)]
    assert rule_for(table, 401, "INVALID_LOGIN").means() is Failure.CREDENTIALS
    assert rule_for(table, 400, None).means() is Failure.FAILED  # Permanent's own
    assert ErrorRule(Transient).means() is ErrorRule(RateLimited).means() is Failure.UNAVAILABLE


def test_no_answer_names_the_operating_systems_reason_for_each_client() -> None:
    import httpx
    import requests
    import urllib3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        failures: list[BaseException] = []
        for send in (
            lambda: httpx.get(closed, timeout=5),
            lambda: requests.get(closed, timeout=5),
            lambda: urllib3.PoolManager(retries=False).request("GET", closed, timeout=5),
        ):
            with pytest.raises(Exception) as failed:  # noqa: PT011 - each client its own
                send()
            failures.append(failed.value)
    assert [no_answer(failure) for failure in failures] == ["connection refused"] * 3
