"""The paths anyone may call: a budget per client and path (429 with Retry-After beyond it),
never one on signed webhooks, and one database check shared by concurrent /readyz callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bridge.runtime.receiver import create_app
from bridge.store.db import Store
from bridge_sandbox.emulators.common import serve_in_thread
from tests.runtime.conftest import Receiver, hubspot_event, receiver_settings


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Receiver]:
    url = f"sqlite:///{tmp_path}/bridge.db"
    settings = receiver_settings(url, public_rate_limit="3/minute")
    store = Store(url)
    store.upgrade()
    with serve_in_thread(create_app(settings, store)) as server, httpx.Client(timeout=10) as http:
        yield Receiver(server.url, store, settings, http)
    store.dispose()


def test_a_client_over_its_budget_gets_429_and_its_other_paths_keep_theirs(
    limited: Receiver,
) -> None:
    answers = [limited.http.get(f"{limited.url}/readyz") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].json() == {"error": "rate_limited"}
    assert 1 <= int(answers[3].headers["retry-after"]) <= 60
    assert limited.http.get(f"{limited.url}/healthz").status_code == 200
    assert limited.http.get(f"{limited.url}/metrics").status_code == 200
    text = limited.http.get(f"{limited.url}/metrics").text
    assert 'bridge_http_refused_total{reason="rate_limited"}' in text


def test_signed_webhooks_are_never_limited_even_after_forged_ones(limited: Receiver) -> None:
    for n in range(10):
        assert limited.post_hubspot([hubspot_event(n)], secret="forged").status_code == 401
    for n in range(10):
        assert limited.post_hubspot([hubspot_event(n)]).status_code == 200


def test_concurrent_readyz_callers_share_one_database_check(
    limited: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    lock = threading.Lock()
    check = limited.store.require_current_schema

    def slow_check() -> None:
        nonlocal checks
        with lock:
            checks += 1
        time.sleep(0.5)  # long enough for every caller below to arrive while it runs
        check()

    monkeypatch.setattr(limited.store, "require_current_schema", slow_check)
    with ThreadPoolExecutor(3) as pool:  # the budget's worth, from one client
        answers = list(pool.map(lambda _: limited.http.get(f"{limited.url}/readyz"), range(3)))
    assert [a.json() for a in answers] == [{"status": "ready"}] * 3
    assert checks == 1
