"""The console served over real HTTP (uvicorn on loopback, mounted under /console in the
receiver as ``bridge serve`` does) against both emulators, and clients signed in as each
role."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from bridge.runtime.receiver import create_app
from bridge.runtime.wiring import Wiring
from bridge.services import operators as accounts
from bridge.web.console.app import create_console
from bridge_sandbox.emulators.common import serve_in_thread
from tests.conftest import Crms

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Operator:
    """A browser-like client signed in to the console: its cookies, its CSRF token."""

    name: str
    role: str
    client: httpx.Client
    csrf: str = ""

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        reply = self.client.get(f"/console{path}", **kwargs)  # type: ignore[arg-type]
        if found := CSRF.search(reply.text):
            self.csrf = found.group(1)
        return reply

    def post(
        self, path: str, data: dict[str, str] | None = None, **kwargs: object
    ) -> httpx.Response:
        """A form post carrying the session's CSRF token, as the page's form would."""
        return self.client.post(
            f"/console{path}",
            data={"csrf": self.csrf, **(data or {})},
            **kwargs,  # type: ignore[arg-type]
        )


@dataclass
class Clock:
    """The console's clock: now, or later once a test moves it on (session expiry without
    sleeping)."""

    ahead: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@dataclass
class Console:
    url: str
    wiring: Wiring
    crms: Crms
    clock: Clock = field(default_factory=Clock)
    passwords: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    def add(self, name: str, role: str) -> str:
        password = self.wiring.operators().add(name, role, "test")
        self.passwords[name] = password
        return password

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)
        self.clients.append(client)
        return client

    def sign_in(self, name: str, role: str = "operator") -> Operator:
        """An account of ``role`` (added if new) signed in through the sign-in form."""
        if name not in self.passwords:
            self.add(name, role)
        client = self.client()
        form = client.get("/console/login")
        token = CSRF.search(form.text)
        assert token, form.text
        reply = client.post(
            "/console/login",
            data={"name": name, "password": self.passwords[name], "csrf": token.group(1)},
        )
        assert reply.status_code == 303, reply.text
        operator = Operator(name, role, client)
        assert operator.get("/").status_code == 200
        return operator


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its lowest cost, the decoy's too, for tests that sign in many times over
    HTTP (tests/services/test_operators.py holds the real cost to account)."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "HASHER", cheap)
    monkeypatch.setattr(accounts, "_DECOY", cheap.hash("decoy"))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite for the console's tests: the pages read through the same store functions as
    the CLI, whose tests cover PostgreSQL."""
    return f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture
def console(crms: Crms, tmp_path: Path) -> Iterator[Console]:
    """The console beside the receiver, on SQLite unless the test's ``database_url`` says."""
    wiring = Wiring(config=None, _settings=crms.settings)
    store = wiring.store(current_schema=False)
    store.upgrade()
    app = create_app(crms.settings, store)
    clock = Clock()
    app.mount("/console", create_console(wiring, clock))
    with serve_in_thread(app) as server:
        running = Console(server.url, wiring, crms, clock)
        try:
            yield running
        finally:
            for client in running.clients:
                client.close()
            store.dispose()
