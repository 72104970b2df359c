"""The console served over real HTTP (uvicorn on loopback, mounted under /console in the
receiver as ``bridge serve`` does) against both emulators, and clients signed in as each
role."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from argon2 import PasswordHasher

from bridge.config import PortalSettings, SmtpSettings
from bridge.logs import configure
from bridge.runtime.receiver import create_app
from bridge.runtime.wiring import Wiring
from bridge.services import operators as accounts
from bridge.web.console.app import create_console
from bridge.web.portal.app import create_portal
from bridge_sandbox.demo_portal import sign_in_link
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.people import Person, seed_hubspot, seed_salesforce
from bridge_sandbox.mailbox import Mailbox
from tests.conftest import PURPOSES, Crms, free_port

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class FormClient:
    """A browser-like client of one web face (``prefix``): its cookies, and the CSRF token of
    the last page it saw, which it posts with each form as the page's own form would."""

    prefix: ClassVar[str]
    client: httpx.Client
    csrf: str = field(default="", kw_only=True)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        reply = self.client.get(f"{self.prefix}{path}", **kwargs)  # type: ignore[arg-type]
        if found := CSRF.findall(reply.text):
            self.csrf = found[-1]  # the page's own form's, after the header's sign-out
        return reply

    def post(
        self, path: str, data: dict[str, str | list[str]] | None = None, **kwargs: object
    ) -> httpx.Response:
        return self.client.post(
            f"{self.prefix}{path}",
            data={"csrf": self.csrf, **(data or {})},
            **kwargs,  # type: ignore[arg-type]
        )


@dataclass
class Operator(FormClient):
    """Signed in to the console."""

    prefix = "/console"
    name: str
    role: str


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
        operator = Operator(client, name, role)
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
def log_output() -> Iterator[io.StringIO]:
    """Everything logged, structlog and the standard library, as the bridge renders it."""
    stream = io.StringIO()
    configure("debug", stream)
    yield stream
    configure("info")


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


@dataclass
class Visitor(FormClient):
    """On the privacy portal."""

    prefix = "/privacy"


@dataclass
class Portal:
    """The privacy portal served over HTTP, the SMTP sink its emails reach, the CRMs."""

    url: str
    wiring: Wiring
    crms: Crms
    mailbox: Mailbox
    clock: Clock
    clients: list[httpx.Client] = field(default_factory=list)

    def visitor(self) -> Visitor:
        client = httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)
        self.clients.append(client)
        return Visitor(client)

    def seed(self, *people: Person) -> None:
        """``people`` in both CRMs, as the seeders of the sandbox write them."""
        seed_hubspot(self.crms.hubspot, people, PURPOSES)
        seed_salesforce(self.crms.salesforce, people, PURPOSES)

    def ask(self, visitor: Visitor, email: str) -> httpx.Response:
        """The address typed into the first page's form, sent."""
        assert visitor.get("/").status_code == 200
        return visitor.post("/sign-in", {"email": email})

    def sign_in(self, email: str) -> Visitor:
        """A visitor signed in by the emailed link (asked, the email read, the link's page
        opened, its button pressed), on the page of what is held."""
        visitor = self.visitor()
        assert self.ask(visitor, email).status_code == 303
        link = sign_in_link(self.mailbox.wait_for(email))
        assert link is not None and link.startswith(f"{self.url}/privacy/verify?t=")
        assert visitor.client.get(link).status_code == 200
        token = link.partition("?t=")[2]
        signed_in = visitor.post("/verify", {"t": token})
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/privacy/me"
        assert visitor.get("/me").status_code == 200
        return visitor


@pytest.fixture
def portal_settings() -> PortalSettings:
    """The portal's ``[portal]`` settings: the defaults, unless a module says otherwise."""
    return PortalSettings()


@pytest.fixture
def portal(crms: Crms, smtp_sink: Mailbox, portal_settings: PortalSettings) -> Iterator[Portal]:
    """The privacy portal beside the receiver (as ``bridge serve`` mounts it), its emails sent
    to the SMTP sink, its links built from ``[web] public_url``: the server's own address."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    smtp = SmtpSettings(host=smtp_sink.host, port=smtp_sink.port, starttls=False)
    web = crms.settings.web.model_copy(update={"public_url": url})
    update = {"web": web, "smtp": smtp, "portal": portal_settings}
    settings = crms.settings.model_copy(update=update)
    wiring = Wiring(config=None, _settings=settings)
    store = wiring.store(current_schema=False)
    store.upgrade()
    app = create_app(settings, store)
    clock = Clock()
    app.mount("/privacy", create_portal(wiring, clock))
    with serve_in_thread(app, port=port) as server:
        running = Portal(server.url, wiring, crms, smtp_sink, clock)
        try:
            yield running
        finally:
            for client in running.clients:
                client.close()
            store.dispose()
