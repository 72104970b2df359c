"""Shared fixtures: a database on SQLite and (when CI provides it) PostgreSQL, keys, env."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bridge.adapters.dynamics.settings import DynamicsSettings
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.audit import chain_key
from bridge.config import Settings
from bridge.model import Purpose
from bridge.store.db import Store
from bridge_sandbox.emulators.accounts import DEFAULT, EVERY_ACCOUNT, Accounts
from bridge_sandbox.emulators.common import serve_in_thread
from bridge_sandbox.emulators.dynamics import DynamicsEmulatorConfig
from bridge_sandbox.emulators.dynamics import create_app as dynamics_emulator
from bridge_sandbox.emulators.dynamics_auth import Apps
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig
from bridge_sandbox.emulators.hubspot import create_app as hubspot_emulator
from bridge_sandbox.emulators.hubspot_tiers import Profile
from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig
from bridge_sandbox.emulators.salesforce import create_app as salesforce_emulator
from bridge_sandbox.mailbox import Mailbox

POSTGRES_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL")
PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef0123456789"
AUDIT_KEY = chain_key(PSEUDONYM_KEY.encode())  # the CLI's, derived from the pseudonym key
requires_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="BRIDGE_TEST_POSTGRES_URL is not set (CI sets it)"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("BRIDGE_TEST_POSTGRES_URL is not set (CI sets it)")
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on both databases the bridge supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated store, its audit chain keyed as the CLI's."""
    store = Store(database_url, AUDIT_KEY)
    store.upgrade()
    yield store
    store.dispose()


@pytest.fixture
def smtp_sink() -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 and a free port, keeping every message it receives
    (``messages``; ``wait_for(to)``)."""
    with Mailbox() as mailbox:
        yield mailbox


@dataclass
class BridgeCli:
    """Runs ``bridge`` as a user would: a subprocess in its own working directory."""

    cwd: Path
    env: dict[str, str]

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """A long-running command (``serve``, ``run``), its output kept in the work folder."""
        log = (self.cwd / f"{args[0]}-{time.monotonic_ns()}.log").open("w")
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            cwd=self.cwd,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def said(result: subprocess.CompletedProcess[str]) -> list[str]:
    """A command's own lines on stderr: log records share it, as JSON."""
    return [line for line in result.stderr.splitlines() if line.startswith("bridge: ")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str, process: subprocess.Popen[str], timeout: float = 20, path: str = "/healthz"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@pytest.fixture
def stopped_at_end() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def bridge(tmp_path: Path) -> BridgeCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {
        "BRIDGE_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
    }
    return BridgeCli(cwd=tmp_path, env=env)


PURPOSES = [
    Purpose(id="marketing_email", hubspot_subscription_id="1",
            salesforce_data_use_purpose="Marketing", dynamics_purpose="Marketing"),
    Purpose(id="product_updates", hubspot_subscription_id="2",
            salesforce_data_use_purpose="Product Updates", dynamics_purpose="Product updates"),
]  # fmt: skip


def on_accounts(*which: Accounts) -> pytest.MarkDecorator:
    """Run a test once for each of these accounts (the ``accounts`` fixture says which
    scenarios take which)."""
    return pytest.mark.parametrize("accounts", which, indirect=True, ids=str)


EXTREMES = (DEFAULT, Accounts("starter", "basic"))
every_account = on_accounts(*EVERY_ACCOUNT)
extreme_accounts = on_accounts(*EXTREMES)
privacy_orgs = on_accounts(*(a for a in EVERY_ACCOUNT if a.privacy))
basic_orgs = on_accounts(*(a for a in EVERY_ACCOUNT if not a.privacy))


@pytest.fixture
def accounts(request: pytest.FixtureRequest) -> Accounts:
    """The accounts the emulators play (``crms``): Marketing Hub Enterprise beside an org with
    Data Protection and Privacy, unless a test asks for others with a mark above. Which
    scenarios need which, as each pair costs a run:

    - ``every_account`` (3 tiers x 2 orgs): consent sync and propagation, where the paths
      differ on both sides and combine: HubSpot reads and writes statuses in batches only on
      Enterprise (below, one address per call, from the contacts' opt-out properties), and
      an org holds per-purpose consent only with the privacy objects (else the flags alone).
    - ``privacy_orgs`` / ``basic_orgs`` (3 tiers each): consent scenarios that start from
      what only one kind of org can hold (a Salesforce purpose withdrawal, an evidenced
      grant; an org's Do Not Call warnings), on every HubSpot path.
    - ``extreme_accounts`` (Enterprise beside a privacy org, Starter beside a basic one):
      erasure and retention through their services, the daemon's propagation, and the
      sync's lawful basis, dry run and suppression. They read consent at most (a rule keeping
      people who consented) and never write it, so both ends of the paths cover them; in a
      basic org an erasure must plan no privacy rows.
    - the default alone: the rest (the CLI's own erase and purge tests, failures, keys, the
      store), which adds no path that depends on the accounts.

    Tests not pinned to SQLite (most in-process ones) run each pair on PostgreSQL too, where
    it is available.
    """
    chosen: Accounts = getattr(request, "param", DEFAULT)
    return chosen


@dataclass
class Crms:
    """Both emulators, their admin APIs, bridge settings aimed at them, and the accounts
    they play; with ``dynamics``, a Dataverse emulator as the third CRM (``emulators(...,
    dynamics=True)``), else none."""

    hubspot: httpx.Client
    salesforce: httpx.Client
    settings: Settings
    accounts: Accounts
    dynamics: httpx.Client | None = None

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for the CLI as a subprocess."""
        return {
            "BRIDGE_HUBSPOT__BASE_URL": self.settings.hubspot.base_url,
            "BRIDGE_HUBSPOT__ACCESS_TOKEN": "pat-test",
            "BRIDGE_SALESFORCE__BASE_URL": str(self.settings.salesforce.base_url),
            "BRIDGE_SALESFORCE__USERNAME": "bridge@example.com",
            "BRIDGE_SALESFORCE__PASSWORD": "password",
            "BRIDGE_SALESFORCE__SECURITY_TOKEN": "token",
            "BRIDGE_ENCRYPTION_KEY": str(self.settings.encryption_key.get_secret_value())
            if self.settings.encryption_key
            else "",
            **self.dynamics_env(),
        }

    def dynamics_env(self) -> dict[str, str]:
        """The ``[dynamics]`` section as environment variables; none without the emulator."""
        section = self.settings.dynamics
        if self.dynamics is None or section.client_secret is None:
            return {}
        return {
            "BRIDGE_DYNAMICS__TENANT_ID": str(section.tenant_id),
            "BRIDGE_DYNAMICS__CLIENT_ID": str(section.client_id),
            "BRIDGE_DYNAMICS__CLIENT_SECRET": section.client_secret.get_secret_value(),
            "BRIDGE_DYNAMICS__ENVIRONMENT_URL": str(section.environment_url),
            "BRIDGE_DYNAMICS__BASE_URL": str(section.base_url),
        }

    def seed_salesforce(self, sobject: str, **fields: Any) -> str:
        reply = self.salesforce.post(
            "/__emulator/records", json={"records": [{"attributes": {"type": sobject}, **fields}]}
        )
        reply.raise_for_status()
        return str(reply.json()["ids"][0])

    def seed_people(self, emails: Sequence[str], name: str = "P") -> None:
        """One HubSpot contact and one Salesforce Contact for each address."""
        contacts = [{"email": e, "firstname": name} for e in emails]
        self.hubspot.post("/__emulator/seed", json={"contacts": contacts}).raise_for_status()
        records = [
            {"attributes": {"type": "Contact"}, "LastName": name, "Email": e} for e in emails
        ]
        self.salesforce.post("/__emulator/records", json={"records": records}).raise_for_status()

    def seed_hubspot(self, **contact: Any) -> str:
        reply = self.hubspot.post("/__emulator/seed", json={"contacts": [contact]})
        reply.raise_for_status()
        return str(reply.json()["contacts"][0]["id"])


@pytest.fixture
def crms(database_url: str, accounts: Accounts) -> Iterator[Crms]:
    with emulators(database_url, accounts) as running:
        yield running


@contextmanager
def emulators(
    database_url: str, accounts: Accounts = DEFAULT, *, dynamics: bool = False
) -> Iterator[Crms]:
    """Both emulators playing ``accounts``, and bridge settings aimed at them (``crms`` for
    one test; a module that shares them calls this); ``dynamics``: a Dataverse emulator
    too, its default tenant and app in the settings."""
    portal = HubSpotEmulatorConfig(profile=Profile(tier=accounts.hubspot_tier))
    org = SalesforceEmulatorConfig(org=accounts.salesforce_org)
    with (
        serve_in_thread(hubspot_emulator(portal)) as hubspot,
        serve_in_thread(salesforce_emulator(org)) as salesforce,
        httpx.Client(base_url=hubspot.url, timeout=10) as hubspot_admin,
        httpx.Client(base_url=salesforce.url, timeout=10) as salesforce_admin,
        ExitStack() as third,
    ):
        dynamics_admin, dynamics_settings = None, DynamicsSettings()
        if dynamics:
            environment = DynamicsEmulatorConfig()
            running = third.enter_context(serve_in_thread(dynamics_emulator(environment)))
            dynamics_admin = third.enter_context(httpx.Client(base_url=running.url, timeout=10))
            app = Apps().apps[0]  # the emulator's default application user
            dynamics_settings = DynamicsSettings(
                tenant_id=environment.tenant_id,
                client_id=app.client_id,
                client_secret=SecretStr(app.client_secret),
                environment_url=running.url,
                base_url=running.url,
            )
        settings = Settings(
            database_url=database_url,
            pseudonym_key=PSEUDONYM_KEY,
            encryption_key=Fernet.generate_key().decode(),
            hubspot=HubSpotSettings(access_token="pat-test", base_url=hubspot.url),
            salesforce=SalesforceSettings(
                base_url=salesforce.url,
                username="bridge@example.com",
                password="password",
                security_token="token",
            ),
            dynamics=dynamics_settings,
            purposes=PURPOSES,
        )
        yield Crms(hubspot_admin, salesforce_admin, settings, accounts, dynamics_admin)


@pytest.fixture
def cli(bridge: BridgeCli, crms: Crms) -> BridgeCli:
    """The CLI aimed at both emulators, on a migrated database."""
    bridge.env |= crms.env()
    assert bridge("db", "upgrade").returncode == 0
    return bridge


@pytest.fixture
def configured_cli(cli: BridgeCli) -> BridgeCli:
    """The CLI with the shipped example settings, whose purposes match the emulators'."""
    (cli.cwd / "config").mkdir(exist_ok=True)
    example = Path(__file__).parents[1] / "config" / "bridge.example.toml"
    (cli.cwd / "config" / "bridge.toml").write_text(example.read_text())
    return cli
