"""Shared fixtures: a database on SQLite and (when CI provides it) PostgreSQL, keys, env."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from bridge.store.db import Store

POSTGRES_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL")
PSEUDONYM_KEY = "test-pseudonym-key-0123456789abcdef0123456789"
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
    """A migrated store."""
    store = Store(database_url)
    store.upgrade()
    yield store
    store.dispose()


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
def bridge(tmp_path: Path) -> BridgeCli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {
        "BRIDGE_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
    }
    return BridgeCli(cwd=tmp_path, env=env)
