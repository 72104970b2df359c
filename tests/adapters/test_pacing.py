"""Pacing: a limiter that never needs a 429, and one of them per vendor quota per process."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.adapters import pacing
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.hubspot.transport import HubSpotLimits, Transport
from bridge.adapters.pacing import RateLimiter, fingerprint


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


def test_a_call_counts_from_its_answer_so_a_late_arrival_never_overfills_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1.0, clock=clock, sleep=clock.sleep)
    first = limiter.acquire()
    clock.now = 0.4  # the first call left at 0 but, its thread held up, was answered at 0.4
    limiter.answered(first)
    limiter.acquire()
    limiter.acquire()  # the vendor may have counted the first at 0.4: wait until 1.4
    assert clock.now == pytest.approx(1.4, abs=0.01)


# -- one limiter per quota per process -------------------------------------------------------
# The registry lives as long as the process: each test names quotas no other test uses.


def test_one_key_is_one_limiter_whichever_thread_asks_first() -> None:
    threads = 16
    start = threading.Barrier(threads)

    def ask(_: int) -> RateLimiter:
        start.wait()
        return pacing.limiter("test one key", 10, 1.0)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(ask, range(threads)))
    assert all(each is found[0] for each in found)
    assert pacing.limiter("test one key", 10, 1.0) is found[0]
    assert pacing.limiter("test another key", 10, 1.0) is not found[0]


def test_new_settings_reach_the_shared_limiter_and_the_same_ones_keep_what_headers_said() -> None:
    shared = pacing.limiter("test settings", 100, 10.0)
    shared.observe(remaining=150, limit=190, per_seconds=10.3)  # a Professional portal
    assert pacing.limiter("test settings", 100, 10.0) is shared
    assert (shared.max_calls, shared.per_seconds) == (190, 10.3)
    assert pacing.limiter("test settings", 5, 1.0) is shared
    assert (shared.max_calls, shared.per_seconds) == (5, 1.0)


def test_fingerprints_tell_credentials_apart_and_do_not_hold_them() -> None:
    token = "pat-na1-11111111-2222-3333-4444-555555555555"  # not a real one
    assert fingerprint(token) == fingerprint(token)
    assert fingerprint(token) != fingerprint(token.replace("5", "6"))
    assert len(fingerprint(token)) == 16 and token[:8] not in fingerprint(token)


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key a limiter is asked for while the test runs."""
    asked: list[str] = []
    original = pacing.limiter

    def spy(key: str, max_calls: int, per_seconds: float) -> RateLimiter:
        asked.append(key)
        return original(key, max_calls, per_seconds)

    monkeypatch.setattr(pacing, "limiter", spy)
    return asked


def transport(token: str) -> Transport:
    settings = HubSpotSettings(access_token=SecretStr(token), base_url="https://pacing.test")
    return Transport(settings, HubSpotLimits(), attempts=1, timeout=5.0)


def test_hubspot_transports_of_one_app_share_its_two_windows_and_never_name_its_token(
    keys: list[str],
) -> None:
    """HubSpot counts per private app: the same token shares the burst and the search
    window; another token (another app) has its own."""
    sync, erasure, other = transport("app-token"), transport("app-token"), transport("other")
    try:
        assert sync.burst_limiter is erasure.burst_limiter
        assert sync.search_limiter is erasure.search_limiter
        assert sync.burst_limiter is not sync.search_limiter
        assert other.burst_limiter is not sync.burst_limiter
        assert other.search_limiter is not sync.search_limiter
    finally:
        for each in (sync, erasure, other):
            each.close()
    assert len(keys) == 6 and len(set(keys)) == 4
    assert not [key for key in keys if "token" in key or "other" in key]
