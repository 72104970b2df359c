"""The console's Today page over HTTP against both emulators: each CRM's last sync, the open
requests with their days left, and numbers that agree with ``bridge requests --json`` and
``/metrics`` for the same state."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta

import httpx

from bridge.policies.deadlines import add_months
from bridge.services.erasure import Erasure, Escalation
from bridge.store.leader import hold_sqlite_database
from bridge.store.sync import runs as sync_runs
from tests.conftest import PSEUDONYM_KEY, BridgeCli
from tests.web.conftest import Console
from tests.web.test_console_sync import card, rows, section, text


def number(html: str, card_id: str) -> int:
    found = re.search(rf'id="{card_id}"><span class="number">(\d+)</span>', html)
    assert found, card_id
    return int(found.group(1))


def test_each_crm_shows_its_last_sync_and_how_far_it_read(console: Console) -> None:
    console.crms.seed_people(["ada@example.com", "bob@example.com"])
    viewer = console.sign_in("vera", "viewer")
    for system in ("hubspot", "salesforce"):
        before = card(viewer.get("/").text, f"crm-{system}")
        assert "Last sync none yet Read up to never" in before

    report = console.wiring.reconciler().sync()
    assert report.counts()["records"] == 4
    page = viewer.get("/").text
    today = f"{datetime.now(UTC):%Y-%m-%d}"
    for system in ("hubspot", "salesforce"):
        shown = card(page, f"crm-{system}")
        assert f"Last sync {today}" in shown
        assert ": ok (full, 2 records read, by cli)" in shown
        assert re.search(rf"Read up to {today} \d\d:\d\d UTC \(\d+ s ago\)", shown), shown
        assert "Last error none recorded" in shown
    assert "@example.com" not in page
    assert "No daemon holds the leader lock" in page

    # A daemon on this database (this very process, as `bridge run` serving the console).
    hold_sqlite_database(console.wiring.store())
    leader = text(section(viewer.get("/").text, "leader"))
    assert f"The daemon with process id {os.getpid()} on this host (this process)" in leader


def test_each_crm_shows_its_vendors_limits_as_of_the_last_sync(console: Console) -> None:
    """The rate-limit budget and the daily quota the vendors' headers reported during the
    sync, agreeing with the emulators' own counters, and said to be as of that sync."""
    crms = console.crms
    crms.seed_people(["ada@example.com", "bob@example.com"])
    viewer = console.sign_in("vera", "viewer")
    for system in ("hubspot", "salesforce"):
        assert "API limits not reported yet" in card(viewer.get("/").text, f"crm-{system}")

    console.wiring.reconciler().sync()
    [run] = sync_runs(console.wiring.store(), 1)
    at = datetime.fromisoformat(run["finished_at"])
    page = viewer.get("/").text
    as_of = f"as of the last sync ({at:%Y-%m-%d %H:%M} UTC)"

    hubspot = card(page, "crm-hubspot")
    limits = crms.hubspot.get("/__emulator/tier").json()["rate_limits"]
    calls = crms.hubspot.get("/__emulator/counters").json()["calls"]
    every = sum(calls.values())
    windowed = every - calls.get("POST /crm/v3/objects/contacts/search", 0)
    burst, seconds = limits["burst_max"], limits["burst_interval_ms"] / 1000
    assert 0 < windowed <= every
    window = f"of {burst:,} left in a {seconds:g} s window, {as_of}"
    shown = re.search(rf"Rate limit ([\d,]+) {re.escape(window)}", hubspot)
    assert shown, hubspot
    # Every call of the sync, unless a slow machine let the earliest age out of the window.
    assert burst - windowed <= int(shown.group(1).replace(",", "")) < burst
    daily = f"used {every:,} of {limits['daily_max']:,}"
    assert f"Daily API requests {daily}, {as_of}" in hubspot, hubspot

    salesforce = card(page, "crm-salesforce")
    org = crms.salesforce.get("/__emulator/settings").json()
    used, ceiling = org["api_requests_used"], org["daily_api_limit"]
    assert 0 < used < ceiling
    assert f"Daily API requests used {used:,} of {ceiling:,}, {as_of}" in salesforce, salesforce
    assert "Rate limit" not in salesforce  # Salesforce has no short window


def test_open_requests_by_due_date_and_numbers_that_agree_with_the_cli_and_metrics(
    console: Console, bridge: BridgeCli
) -> None:
    now = datetime.now(UTC)
    # Received at half past a day's mark, so that whole days left cannot tick over mid-test.
    received = {
        "fresh": now - timedelta(hours=12),
        "risky": add_months(now + timedelta(days=3, hours=12), -1),
        "late": add_months(now - timedelta(days=2, hours=12), -1),
    }
    ids = {name: submit(console, f"{name}@example.com", at) for name, at in received.items()}
    console.crms.seed_people(["ada@example.com"])
    operator = console.sign_in("olive")
    page = operator.get("/").text

    table = rows(section(page, "requests"))[1:]
    assert [row.split()[0] for row in table] == [ids[n][:8] for n in ("late", "risky", "fresh")]
    for request_id in ids.values():
        assert f'href="/console/requests/{request_id}"' in page
    assert re.search(r"at risk .* \d+ days? overdue$", table[0]), table[0]
    assert re.search(r"at risk .* [0-7] days? left$", table[1]), table[1]
    assert re.search(r"received delete cli .* (2[89]|3[01]) days left$", table[2]), table[2]
    assert "at risk" not in table[2]
    assert "@example.com" not in page

    bridge.env |= console.crms.env() | {
        "BRIDGE_DATABASE_URL": console.crms.settings.database_url,
        "BRIDGE_PSEUDONYM_KEY": PSEUDONYM_KEY,
    }
    result = bridge("requests", "--json")
    assert result.returncode == 0, result.stderr
    views = json.loads(result.stdout)["requests"]
    cli = {
        "open": len(views),
        "overdue": sum(v["overdue"] for v in views),
        "at-risk": sum(v["flagged"] for v in views),
        "failed": sum(v["status"] == "failed" for v in views),
    }
    shown = {name: number(page, f"{name}-requests") for name in cli}
    assert shown == cli == {"open": 3, "overdue": 1, "at-risk": 2, "failed": 0}
    for view in views:
        days = (datetime.fromisoformat(view["due_at"]) - now).days
        row = next(r for r in table if r.startswith(view["id"][:8]))
        plural = "s" if abs(days) != 1 else ""
        said = f"{-days} day{plural} overdue" if days < 0 else f"{days} day{plural} left"
        assert row.endswith(said), (row, view)

    metrics = httpx.get(f"{console.url}/metrics").text
    gauges = {
        state: int(float(value))
        for state, value in re.findall(r'bridge_erasure_requests\{state="(\w+)"\} (\S+)', metrics)
    }
    assert gauges == {"open": 3, "overdue": 1, "flagged": 2, "failed": 0}
    assert number(page, "dead-letters") == 0
    lag = re.search(r"^bridge_inbox_lag_seconds (\S+)$", metrics, flags=re.M)
    assert lag and float(lag.group(1)) == 0.0
    assert "No webhook events received yet." in page


def submit(console: Console, email: str, received: datetime) -> str:
    """An erasure request as if received at ``received`` (not run: it stays open)."""
    wiring = console.wiring
    settings = wiring.settings
    erasure = Erasure(
        wiring.store(),
        wiring.adapters(),
        wiring.keyring(),
        settings.require_pseudonym_key(),
        escalation=Escalation.of(settings.erasure),
        clock=lambda: received,
    )
    return erasure.submit([email], "delete", "the person asked", "cli")
