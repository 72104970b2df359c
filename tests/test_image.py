"""The Docker image and the lock file it installs, read from the files themselves: no image is
built here (that needs a registry for the base image). The image listens beyond its own
loopback, checks its health on the port it listens on, keeps its database on a volume its
non-root user owns, installs exactly the locked dependencies, and holds no sandbox."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DATA = "/data"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    found = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def each(keyword: str) -> list[str]:
    return [rest for key, rest in instructions() if key == keyword]


def env() -> dict[str, str]:
    """Every ENV, in the ``KEY=value`` form (later ones win)."""
    values: dict[str, str] = {}
    for rest in each("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            values[key] = value
    return values


def position(keyword: str, pattern: str = "") -> int:
    """The index of the first ``keyword`` instruction whose arguments match ``pattern``."""
    for index, (key, rest) in enumerate(instructions()):
        if key == keyword and re.search(pattern, rest):
            return index
    raise AssertionError(f"no {keyword} matching {pattern!r}")


def test_the_daemon_listens_beyond_the_container_loopback() -> None:
    assert env()["BRIDGE_WEB__HOST"] == "0.0.0.0"  # noqa: S104 (inside a container, on purpose)
    assert json.loads(each("ENTRYPOINT")[-1]) == ["bridge"]
    assert json.loads(each("CMD")[-1]) == ["run"]


def test_the_database_lives_on_a_volume_the_non_root_user_owns() -> None:
    assert env()["BRIDGE_DATABASE_URL"] == f"sqlite:///{DATA}/bridge.db"
    [volume] = each("VOLUME")
    assert volume.strip('[]" ') == DATA
    user = each("USER")[-1]
    assert user not in ("root", "0", "")
    owned = position("RUN", rf"chown\s+{user}(:{user})?\s+{DATA}\b")
    # Owned before the volume is declared (Docker copies that ownership into a new volume)
    # and before the user is switched to.
    assert owned < position("VOLUME") < position("USER", user)
    assert position("USER", user) < position("CMD")


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def healthy_port() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def run_health_check(port: int) -> int:
    """The image's health check command, run here with ``BRIDGE_WEB__PORT`` set to ``port``."""
    [check] = each("HEALTHCHECK")
    command = check.split(" CMD ", 1)[1]
    environment = {"PATH": "/usr/bin:/bin", "BRIDGE_WEB__PORT": str(port)}
    command = re.sub(r"^python\b", sys.executable, command)
    done = subprocess.run(
        ["sh", "-c", command], env=environment, capture_output=True, timeout=30, check=False
    )
    return done.returncode


def test_the_health_check_follows_the_configured_port(healthy_port: int) -> None:
    assert env()["BRIDGE_WEB__PORT"] == "8080"  # declared, so the check always has one
    assert run_health_check(healthy_port) == 0
    with HTTPServer(("127.0.0.1", 0), Health) as gone:
        closed_port = gone.server_address[1]
    assert run_health_check(closed_port) != 0  # nothing listens there: unhealthy


def test_the_image_installs_the_lock_with_hashes_then_the_bridge_without_dependencies() -> None:
    installs = [rest for rest in each("RUN") if "pip install" in rest]
    assert len(installs) == 2, installs
    locked, product = installs
    assert re.search(r"pip install --require-hashes -r requirements\.lock\b", locked)
    assert re.search(r"pip install --no-deps \.(\s|$)", product)
    assert position("COPY", r"requirements\.lock") < position("RUN", "--require-hashes")
    assert position("RUN", "--require-hashes") < position("RUN", "--no-deps")


def test_the_image_holds_no_sandbox() -> None:
    copied = [word for rest in each("COPY") + each("ADD") for word in shlex.split(rest)[:-1]]
    assert copied and not any(word.startswith("--") for word in copied)
    assert set(copied) <= {"requirements.lock", "pyproject.toml", "README.md", "bridge"}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # an allow-list: nothing else reaches the build context
    assert not [line for line in ignore if "sandbox" in line and line.startswith("!")]


# -- the lock file -------------------------------------------------------------------------


def locked() -> dict[str, tuple[str, int]]:
    """Project -> (pinned version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"([A-Za-z0-9._-]+)==([^ \\;]+)", line):
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_every_runtime_dependency_is_locked_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    assert all(hashes > 0 for _version, hashes in pins.values())
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{name}=={pins[name][0]} is outside {requirement.specifier}: run `make lock`"
        )
    development = {
        canonicalize_name(Requirement(d).name) for d in project["optional-dependencies"]["dev"]
    }
    assert not development & set(pins), "the lock holds the runtime dependencies only"
    assert "consent-bridge-sandbox" not in pins


def test_the_lock_names_no_machine_of_its_own() -> None:
    text = (ROOT / "requirements.lock").read_text()
    assert not re.search(r"^--(index-url|extra-index-url|find-links|trusted-host)", text, re.M)
    assert "file://" not in text
