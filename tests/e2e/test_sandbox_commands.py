"""The sandbox's commands come and go with the sandbox: the product runs without it."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_SANDBOX = """
import importlib.metadata, sys
importlib.metadata.entry_points = lambda **_: []  # as when the sandbox is not installed
sys.argv = ["bridge", *sys.argv[1:]]
from bridge.cli.app import main
main()
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SANDBOX, *args], capture_output=True, text=True, timeout=60
    )


def test_without_the_sandbox_demo_and_emulate_say_how_to_install_it() -> None:
    for command in (["demo"], ["emulate", "hubspot"]):
        done = run(*command)
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("bridge: this command comes with the sandbox")
        assert "pip install -e ./sandbox" in line
        assert "Traceback" not in done.stderr
    assert {"demo", "emulate"} <= set(run("--help").stdout.split())


def test_with_the_sandbox_its_commands_are_the_real_ones() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "emulate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "--port" in done.stdout
