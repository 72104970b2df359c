"""The CLI starts light: what `--version`, `--help` and `check` import, never how long they
take (speed belongs in bench/). Each runs as a user runs it, in a subprocess, and reports the
modules it ended with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BridgeCli

# Runs `bridge <args>` through the console script's entry point and, at exit, writes the
# names of every module it imported to the file named by the first argument.
PROBE = """
import atexit, json, sys

out, args = sys.argv[1], sys.argv[2:]

def report():
    with open(out, "w") as file:
        json.dump(sorted(sys.modules), file)

atexit.register(report)
sys.argv = ["bridge", *args]
from bridge.cli.app import main
main()
"""

# No command imports these before it does its work: the vendor SDKs, the web stack, the
# scheduler, the migrations machinery and the emulators (the sandbox's commands are listed
# from its entry points, which import none of them).
NEVER_AT_START = (
    "hubspot",
    "simple_salesforce",
    "requests",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "apscheduler",
    "alembic",
    "bridge_sandbox.emulators",
    "bridge_sandbox.demo",
    "bridge.adapters.hubspot.adapter",
    "bridge.adapters.salesforce.adapter",
    "bridge.services.erasure",
    "bridge.runtime.receiver",
)
# Nor do --version and --help load settings, the database or the logging pipeline.
NOT_FOR_VERSION_OR_HELP = (
    *NEVER_AT_START,
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "structlog",
    "cryptography",
    "tenacity",
    "bridge.config",
    "bridge.model",
    "bridge.store.db",
)


def imported(bridge: BridgeCli, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    report = bridge.cwd / f"modules-{len(list(bridge.cwd.glob('modules-*')))}.json"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), *args],
        cwd=bridge.cwd,
        env=bridge.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules: set[str] = set(json.loads(Path(report).read_text()))
    return result, modules


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("sync", "--help")])
def test_version_and_help_import_no_settings_database_or_vendor_code(
    bridge: BridgeCli, args: tuple[str, ...]
) -> None:
    result, modules = imported(bridge, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "it answered"
    unwanted = set(NOT_FOR_VERSION_OR_HELP)
    if len(args) > 1:
        unwanted.discard("pydantic")  # Typer builds a command's parameter types with it
    assert sorted(unwanted & modules) == []


def test_help_still_lists_the_sandbox_commands_without_importing_the_emulators(
    bridge: BridgeCli,
) -> None:
    result, modules = imported(bridge, "--help")
    assert "demo" in result.stdout and "emulate" in result.stdout
    assert "bridge_sandbox.commands" in modules  # the entry points were loaded...
    assert "bridge_sandbox.emulators" not in modules  # ...and imported nothing heavy


def test_check_loads_settings_and_database_but_no_vendor_or_web_code(bridge: BridgeCli) -> None:
    assert bridge("db", "upgrade").returncode == 0
    result, modules = imported(bridge, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"bridge.config", "sqlalchemy"} <= modules  # it did check something
    assert sorted(set(NEVER_AT_START) & modules) == []
