"""The console in real Chromium, as the privacy officer uses it: ``bridge run`` as a process
on a database the CLI prepared (accounts from ``bridge users add``, requests from ``bridge
erase``), both emulators behind it. Signing in (with the keyboard alone), the requests, one
opened and extended (with JavaScript off too), a new request's plan, a retention purge
proposed by one operator and approved by another, an erased person re-appearing and erased
again, the audit chain verified, the sync's dry run, the accounts.

Each main page is saved as a PNG in ``$BRIDGE_SCREENSHOTS`` (else the module's tmp folder):
``BRIDGE_SCREENSHOTS=docs/screenshots`` renews the README's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from bridge.policies.deadlines import answer_due
from bridge.web.templating import mask
from tests.conftest import emulators
from tests.e2e import test_purge_cli as purge
from tests.e2e.browser import (
    SCREENSHOTS,
    Console,
    chromium,
    daemon,
    job_runs,
    prepared_cli,
)
from tests.e2e.test_daemon import eventually

OPEN = ("olga.open@example.com", "otto.open@example.com")  # erasure requests left open
NEW = "nina.new@example.com"  # erased from the console's New request page
RETURNING = "rita.returns@example.com"  # erased, then typed into HubSpot again
OPERATORS = ("alice", "bob")
ADMIN = "ada"
# The daemon runs its interval jobs once at start, then not for an hour: the requests
# submitted after that stay open to be extended, and only "Scan now" finds who re-appears.
QUIET = {
    "BRIDGE_SCHEDULE__ERASURE_SECONDS": "3600",
    "BRIDGE_SCHEDULE__INCREMENTAL_SYNC_MINUTES": "60",
}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One daemon (quiet after its first runs) and one browser for the module."""
    workdir = tmp_path_factory.mktemp("console")
    shots = Path(os.environ.get(SCREENSHOTS) or workdir / "screenshots").resolve()
    shots.mkdir(parents=True, exist_ok=True)
    with chromium() as browser, emulators(f"sqlite:///{workdir / 'bridge.db'}") as crms:
        cli = prepared_cli(workdir, crms)
        purge.seed(crms)  # the idle lead, the warned contact, the fresh lead, the former customer
        crms.seed_people([*OPEN, NEW, RETURNING], name="Seeded")
        erased = cli("erase", RETURNING, "--reason", "asked by mail")
        assert erased.returncode == 0, erased.stderr
        with daemon(cli, **QUIET) as url:
            eventually(lambda: job_runs(url, "erasure") >= 1, 30, "the daemon's first drain")
            running = Console(f"{url}/console", cli, crms, browser, shots)
            for name in OPERATORS:
                running.add_user(name, "operator")
            running.add_user(ADMIN, "admin")
            try:
                yield running
            finally:
                running.close()


@pytest.fixture(scope="module")
def open_requests(console: Console) -> list[dict[str, str]]:
    """Two erasure requests stored and planned by ``bridge erase --no-wait``, left open."""
    submitted = console.cli("erase", *OPEN, "--no-wait", "--json", "--reason", "asked by mail")
    assert submitted.returncode == 0, submitted.stderr
    views: list[dict[str, str]] = json.loads(submitted.stdout)["requests"]
    assert [v["status"] for v in views] == ["planned", "planned"]
    return views


def extend(page: Page, months: int, reason: str) -> None:
    """Fill and send the request page's extension form (months, reason; "Extend")."""
    form = page.locator("form").filter(has=page.get_by_role("button", name="Extend"))
    form.get_by_label("Months").select_option(str(months))
    form.get_by_label("Reasons for the delay").fill(reason)
    form.get_by_role("button", name="Extend").click()
    expect(page.get_by_role("status")).to_have_text("The deadline is extended.")


def extended_due(view: dict[str, str], months: int) -> str:
    """The due date an extension by ``months`` gives, as the console shows it."""
    received = datetime.fromisoformat(view["received_at"])
    return f"{answer_due(received, months):%Y-%m-%d}"


def test_signing_in_with_the_keyboard_alone_leads_to_today(
    console: Console, open_requests: list[dict[str, str]]
) -> None:
    page = console.visitor()
    page.goto(f"{console.url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(console.passwords["alice"])
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Today")
    expect(page.get_by_text("alice (operator)")).to_be_visible()
    # The requests ``bridge erase --no-wait`` left open, and the daemon serving the page leads.
    expect(page.locator("#open-requests .number")).to_have_text(str(len(open_requests)))
    for view in open_requests:
        expect(page.get_by_role("link", name=view["id"][:8])).to_be_visible()
    expect(page.locator("#leader-instance")).to_contain_text("(this process)")
    console.screenshot(page, "today")


def test_a_wrong_password_is_refused_on_the_page(console: Console) -> None:
    page = console.visitor()
    page.goto(f"{console.url}/login")
    page.get_by_label("Name").fill("bob")
    page.get_by_label("Password").fill("not-" + console.passwords["bob"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_the_requests_list_shows_the_open_requests_and_opens_one(
    console: Console, open_requests: list[dict[str, str]]
) -> None:
    page = console.open(console.signed_in("alice"), "/requests", "Requests")
    for view in open_requests:
        expect(page.get_by_role("link", name=view["id"][:8])).to_be_visible()
    console.screenshot(page, "requests")
    first = open_requests[0]
    page.get_by_role("link", name=first["id"][:8]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Request {first['id'][:8]}")
    expect(page.get_by_role("button", name="Extend")).to_be_visible()
    console.screenshot(page, "request")


def test_an_operator_extends_a_request_and_its_new_due_date_shows(
    console: Console, open_requests: list[dict[str, str]]
) -> None:
    view = open_requests[0]
    page = console.open(
        console.signed_in("alice"), f"/requests/{view['id']}", f"Request {view['id'][:8]}"
    )
    new_due = extended_due(view, 2)
    expect(page.get_by_text(new_due)).to_have_count(0)
    extend(page, 2, "the person's records span five systems")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Request {view['id'][:8]}")
    expect(page.get_by_text(new_due).first).to_be_visible()
    expect(page.locator("dd", has_text="by 2 months on")).to_contain_text(
        "the person's records span five systems"
    )
    shown = json.loads(console.cli("requests", "--json").stdout)["requests"]
    assert {r["id"]: r["due_at"][:10] for r in shown}[view["id"]] == new_due


def test_extending_works_with_javascript_off(
    console: Console, open_requests: list[dict[str, str]]
) -> None:
    view = open_requests[1]
    page = console.signed_in("bob", javascript=False)
    page.goto(f"{console.url}/requests")
    page.get_by_role("link", name=view["id"][:8]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Request {view['id'][:8]}")
    extend(page, 1, "waiting for the archive's owner")
    expect(page.get_by_text(extended_due(view, 1)).first).to_be_visible()


def test_a_new_request_shows_its_plan_before_it_is_confirmed(console: Console) -> None:
    page = console.open(console.signed_in("alice"), "/requests/new", "New request")
    page.locator('[name="addresses"]').fill(NEW)
    page.get_by_role("button", name="Show plan").click()
    expect(page.get_by_role("heading", level=2)).to_have_text(mask(NEW))
    systems = page.locator("tbody tr td:first-child").all_inner_texts()
    assert set(systems) == {"hubspot", "salesforce"}  # the person's records in both, untouched
    console.screenshot(page, "new-request-plan")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(r"^Request [0-9a-f]{8}$"))
    expect(page.get_by_role("status")).to_have_text(
        "The erasure is stored and planned; the daemon runs it."
    )
    expect(page.get_by_text("operator:alice").first).to_be_visible()
    steps = page.locator("h2:text-is('Steps') + table tbody td:first-child").all_inner_texts()
    assert set(steps) == {"hubspot", "salesforce"}


def test_a_retention_purge_is_proposed_by_one_operator_and_approved_by_another(
    console: Console,
) -> None:
    alice = console.open(console.signed_in("alice"), "/retention?within=60", "Retention")
    # The idle lead and the former customer are due (overdue); the warned contact comes later.
    expect(alice.get_by_text("2 people are due today")).to_be_visible()
    alice.get_by_role("button", name="Propose purge").click()
    expect(alice.get_by_role("status")).to_contain_text("Purge proposed")
    # Who proposed cannot approve: the second pair of eyes is someone else's.
    expect(alice.get_by_role("button", name="Approve purge")).to_have_count(0)
    expect(alice.get_by_text("another operator must approve it", exact=True)).to_be_visible()

    bob = console.open(console.signed_in("bob"), "/retention?within=60", "Retention")
    expect(bob.get_by_text("awaiting approval")).to_be_visible()
    console.screenshot(bob, "retention")
    bob.get_by_role("button", name="Approve purge").click()
    expect(bob.get_by_role("status")).to_have_text(
        "Purge approved and applied: its erasure requests are listed with the proposal."
    )
    expect(bob.get_by_text("2 erasure requests")).to_be_visible()
    expect(bob.get_by_text("Nobody is due today.")).to_be_visible()
    leads = console.crms.salesforce.get("/__emulator/records", params={"type": "Lead"}).json()
    assert [lead["Email"] for lead in leads["records"]] == [purge.FRESH]


def test_an_erased_person_who_reappears_is_found_by_a_scan_and_erased_again(
    console: Console,
) -> None:
    record = console.crms.seed_hubspot(email=RETURNING, firstname="Rita")  # typed in again
    page = console.open(console.signed_in("bob"), "/reappeared", "Re-appeared")
    page.get_by_role("button", name="Scan now").click()
    expect(page.get_by_role("status")).to_contain_text("1 new re-appearance found.")
    row = page.get_by_role("row").filter(has_text=record)
    expect(row).to_contain_text("HubSpot")
    console.screenshot(page, "reappeared")
    row.get_by_role("button", name="Re-erase").click()
    expect(page.get_by_role("status")).to_have_text(
        "Erased again: the request is linked in the list."
    )
    expect(row.get_by_role("link", name=re.compile(r"^request [0-9a-f]{8}$"))).to_be_visible()
    contacts = console.crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert RETURNING not in {c["properties"].get("email") for c in contacts}


def test_the_audit_chain_verifies_and_names_the_operators(console: Console) -> None:
    page = console.open(console.signed_in("alice"), "/audit", "Audit")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.get_by_role("status")).to_contain_text(re.compile(r"^Chain intact: \d+ events\."))
    console.screenshot(page, "audit")
    page.get_by_label("Event kind").fill("console.signed_in")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]action=console\.signed_in"))  # the new page
    actors = page.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert actors and "operator:alice" in actors
    assert set(actors) <= {f"operator:{name}" for name in (*OPERATORS, ADMIN, "carl")}


def test_the_sync_plan_is_a_dry_run_shown_on_the_page(console: Console) -> None:
    page = console.open(console.signed_in("alice"), "/sync", "Sync")
    page.get_by_role("button", name="Plan now").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sync")
    expect(page.get_by_role("heading", name="Plan")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("A dry run: nothing was written to any CRM")
    expect(page.get_by_role("alert")).to_have_count(0)
    console.screenshot(page, "sync")


def test_an_admin_adds_an_account_whose_password_is_shown_once(console: Console) -> None:
    page = console.open(console.signed_in(ADMIN), "/users", "Users")
    names = page.locator("tbody tr td:first-child").all_inner_texts()
    assert sorted(n.removesuffix(" (you)") for n in names) == sorted([*OPERATORS, ADMIN])
    console.screenshot(page, "users")
    page.get_by_label("Name").fill("carl")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_contain_text("Account carl added as viewer")
    console.passwords["carl"] = page.locator("code.password").inner_text()
    console.open(page, "/users", "Users")
    expect(page.locator("code.password")).to_have_count(0)
    # The password shown works: the new viewer signs in and reads, with no action offered.
    carl = console.signed_in("carl")
    expect(carl.get_by_text("carl (viewer)")).to_be_visible()
    expect(carl.get_by_role("link", name="New request")).to_have_count(0)
