"""The console in a real browser: Debian's chromium, driven by Playwright through
``executable_path`` (nothing is downloaded at run time), against ``bridge run`` as a
subprocess on a database the CLI prepared, both emulators behind it.

One daemon and one browser serve a whole test module; each account signs in in a browser
context of its own (its own cookies), so two operators can act side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.conftest import (
    PSEUDONYM_KEY,
    BridgeCli,
    Crms,
    free_port,
    wait_until_healthy,
)

# Debian's package (`make test` installs it when missing: see the Makefile's `browser`).
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}  # the README's screenshots: small PNGs
SCREENSHOTS = "BRIDGE_SCREENSHOTS"  # where the pages' PNGs go (else the module's tmp folder)
EXAMPLE_CONFIG = Path(__file__).parents[2] / "config" / "bridge.example.toml"


def require_chromium() -> Path:
    """The browser, or a failure saying how to get it: in CI these tests must run, so a
    missing browser is never a silent skip."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests drive Debian's chromium "
            "(`make test` installs it as root; else `sudo apt-get install chromium`)",
            pytrace=False,
        )
    return CHROMIUM


def prepared_cli(workdir: Path, crms: Crms) -> BridgeCli:
    """The CLI aimed at the emulators, with the shipped example settings (retention rules
    included) and a migrated database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {"BRIDGE_PSEUDONYM_KEY": PSEUDONYM_KEY, **crms.env()}
    env["BRIDGE_DATABASE_URL"] = crms.settings.database_url
    cli = BridgeCli(cwd=workdir, env=env)
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "bridge.toml").write_text(EXAMPLE_CONFIG.read_text())
    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    return cli


def job_runs(url: str, job: str) -> float:
    """How often the daemon's ``job`` has run to its end, from its metrics."""
    prefix = f'bridge_daemon_job_runs_total{{job="{job}",outcome="ok"}} '
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


@contextmanager
def daemon(cli: BridgeCli, **env: str) -> Iterator[str]:
    """``bridge run`` on a free port until the block ends (SIGTERM, then waited for); its
    base URL."""
    port = free_port()
    process = cli.start("run", "--port", str(port), **env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, timeout=30)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Debian chromium under Playwright's control."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """The console served by a running daemon, the CLI beside it, and a browser."""

    url: str  # .../console
    cli: BridgeCli
    crms: Crms
    browser: Browser
    shots: Path
    passwords: dict[str, str] = field(default_factory=dict)
    contexts: list[BrowserContext] = field(default_factory=list)

    def add_user(self, name: str, role: str) -> str:
        """An account added as an administrator would: ``bridge users add``."""
        added = self.cli("users", "add", name, "--role", role, "--json")
        assert added.returncode == 0, added.stderr
        self.passwords[name] = json.loads(added.stdout)["password"]
        return self.passwords[name]

    def visitor(self, *, javascript: bool = True) -> Page:
        """A page in a fresh browser context: no cookies, nobody signed in."""
        context = self.browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        return context.new_page()

    def signed_in(self, name: str, *, javascript: bool = True) -> Page:
        """A page of ``name``'s own browser context, signed in through the form."""
        page = self.visitor(javascript=javascript)
        page.goto(f"{self.url}/login")
        page.get_by_label("Name").fill(name)
        page.get_by_label("Password").fill(self.passwords[name])
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Today")
        return page

    def open(self, page: Page, path: str, heading: str) -> Page:
        """Go to ``path`` (below /console) and check that its heading is ``heading``."""
        page.goto(f"{self.url}{path}")
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        return page

    def screenshot(self, page: Page, name: str) -> Path:
        """The page as the user sees it (the viewport), as ``<name>.png``."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=path)
        return path

    def close(self) -> None:
        for context in self.contexts:
            context.close()
