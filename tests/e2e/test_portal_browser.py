"""The privacy page in real Chromium, as a person uses it: ``bridge run`` as a process with the
portal on a listener of its own (``[web] portal_host/portal_port``, the address ``[web]
public_url`` names), both emulators behind it, and its emails sent over SMTP to a local sink
the test reads them from. The whole journey (the address, the emailed link, what is held, a
withdrawal with each CRM's answer, a refused correction and a good one, the JSON download,
the erasure and its status page), then signing in and withdrawing with JavaScript off, and
the page and its email in Dutch. What each act did is read back from the emulators; the
daemon's log, at the end, names no one.

The main pages are saved as PNGs in ``$BRIDGE_SCREENSHOTS`` (else the module's tmp folder):
``BRIDGE_SCREENSHOTS=docs/screenshots`` renews the README's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from bridge_sandbox.demo_crms import GRANTED as HELD_GRANTED
from bridge_sandbox.demo_crms import WITHDRAWN as HELD_WITHDRAWN
from bridge_sandbox.demo_crms import Crms as ReadBack
from bridge_sandbox.demo_portal import sign_in_link, status_link
from bridge_sandbox.emulators.people import (
    GRANTED,
    Act,
    Held,
    Person,
    seed_hubspot,
    seed_salesforce,
)
from bridge_sandbox.mailbox import Mailbox
from tests.conftest import PURPOSES, emulators, free_port
from tests.e2e.browser import SCREENSHOTS, VIEWPORT, chromium, daemon, prepared_cli
from tests.e2e.test_daemon import eventually

MARKETING = "marketing_email"
MARKETING_LABEL = "Marketing newsletters and offers by email"  # the example settings' words
SUBSCRIBED = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
PIA = Person("pia.portal@example.com", "Pia", "Portalsdottir")  # the whole journey
NORA = Person("nora.nojs@example.com", "Nora", "Noscript")  # JavaScript off
DAAN = Person("daan.dutch@example.com", "Daan", "Vermeulen")  # the page in Dutch
TOO_LONG = "Bartholomew-Maximilian-Alexander-Christopher-Jones"  # 50; Salesforce keeps 40
CORRECTED = "Pía"


@dataclass
class Portal:
    """The privacy page served by a running daemon, the sink its emails reach, both CRMs read
    back through their admin APIs, and a browser."""

    url: str  # http://127.0.0.1:PORT/privacy, from [web] public_url
    mailbox: Mailbox
    crms: ReadBack
    browser: Browser
    shots: Path
    workdir: Path  # the daemon's log is there
    contexts: list[BrowserContext] = field(default_factory=list)

    def visitor(self, *, javascript: bool = True) -> Page:
        """A page in a fresh browser context: no cookies, nobody signed in."""
        context = self.browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        return context.new_page()

    def ask_for_link(self, page: Page, email: str, query: str = "") -> None:
        """The address typed into the first page's form and sent: the code form follows,
        whatever the address."""
        page.goto(f"{self.url}/{query}")
        page.get_by_label("Email address").fill(email)
        page.get_by_role("button", name="Send me a sign-in link").click()
        expect(page).to_have_url(f"{self.url}/check")

    def follow_link(self, page: Page, email: str, button: str = "Sign in") -> EmailMessage:
        """The sign-in email read from the sink, its link opened, the landing page's button
        pressed: the person's own page follows. The email."""
        message = self.mailbox.wait_for(email, timeout=20)
        link = sign_in_link(message)
        assert link is not None and link.startswith(f"{self.url}/verify?t="), link
        page.goto(link)
        page.get_by_role("button", name=button).click()
        expect(page).to_have_url(f"{self.url}/me")
        return message

    def signed_in(self, person: Person, *, javascript: bool = True) -> Page:
        page = self.visitor(javascript=javascript)
        self.ask_for_link(page, person.email)
        self.follow_link(page, person.email)
        return page

    def screenshot(self, page: Page, name: str) -> Path:
        """The page as the user sees it (the viewport), as ``<name>.png``."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=path)
        return path

    def marketing(self, email: str) -> list[str]:
        """What each record of the address says about marketing email, HubSpot's first."""
        return [r.effective(MARKETING) for r in self.crms.person(email).records]

    def names(self, email: str) -> tuple[str, str]:
        """The first name HubSpot and Salesforce hold for the address."""
        [contact] = [
            c for c in self.crms.hubspot_state()["contacts"]
            if c["properties"]["email"] == email
        ]  # fmt: skip
        [row] = [r for r in self.crms.salesforce_rows("Contact") if r["Email"] == email]
        return contact["properties"]["firstname"], row["FirstName"]

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def subscribed(person: Person) -> Person:
    """``person`` in both CRMs, subscribed to marketing in both on a consent basis."""
    held = Held((Act(MARKETING, GRANTED, SUBSCRIBED),), lawful_basis="consent")
    return Person(person.email, person.first_name, person.last_name, held, held)


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """One daemon (its portal on a listener of its own) and one browser for the module."""
    workdir = tmp_path_factory.mktemp("portal")
    shots = Path(os.environ.get(SCREENSHOTS) or workdir / "screenshots").resolve()
    shots.mkdir(parents=True, exist_ok=True)
    with (
        chromium() as browser,
        emulators(f"sqlite:///{workdir / 'bridge.db'}") as crms,
        Mailbox(workdir / "mail") as mailbox,
    ):
        cli = prepared_cli(workdir, crms)
        people = [subscribed(p) for p in (PIA, NORA, DAAN)]
        seed_hubspot(crms.hubspot, people, PURPOSES)
        seed_salesforce(crms.salesforce, people, PURPOSES)
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {
            "BRIDGE_WEB__PORTAL_HOST": "127.0.0.1",
            "BRIDGE_WEB__PORTAL_PORT": str(port),
            "BRIDGE_WEB__PUBLIC_URL": public,
            "BRIDGE_SMTP__HOST": mailbox.host,
            "BRIDGE_SMTP__PORT": str(mailbox.port),
            "BRIDGE_SMTP__STARTTLS": "false",  # the local sink speaks no TLS
        }
        with daemon(cli, **env):
            eventually(lambda: _answers(f"{public}/privacy/"), 30, "the portal's own listener")
            both = {"hubspot": crms.hubspot, "salesforce": crms.salesforce}
            running = Portal(
                f"{public}/privacy", mailbox, ReadBack(both, PURPOSES), browser, shots, workdir
            )
            try:
                yield running
            finally:
                running.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def signing_in(portal: Portal) -> tuple[Page, EmailMessage]:
    """Pia's browser, signed in through the first page and the emailed link; the email."""
    page = portal.visitor()
    portal.ask_for_link(page, PIA.email)
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your email")
    return page, portal.follow_link(page, PIA.email)


@pytest.fixture
def pia(signing_in: tuple[Page, EmailMessage]) -> Page:
    return signing_in[0]


def test_the_journey_begins_with_an_address_and_an_emailed_link(
    portal: Portal, signing_in: tuple[Page, EmailMessage]
) -> None:
    page = portal.visitor()  # what a newcomer sees, the address typed
    page.goto(f"{portal.url}/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "See and manage the data we hold about you"
    )
    expect(page.get_by_label("Email address")).to_be_focused()
    page.get_by_label("Email address").fill(PIA.email)
    portal.screenshot(page, "portal-sign-in")

    pia, message = signing_in  # Pia sent it and followed the link in the email
    expect(pia).to_have_url(f"{portal.url}/me")
    assert message["Subject"] == "Your sign-in link for the privacy page"
    assert re.search(r"\b\d{6}\b", message.get_content()), "the code fallback"


def test_the_page_shows_every_record_held_and_nothing_of_anyone_else(
    portal: Portal, pia: Page
) -> None:
    expect(pia.get_by_role("heading", level=1)).to_have_text("The data we hold about you")
    records = portal.crms.person(PIA.email).records
    assert {r.system for r in records} == {"hubspot", "salesforce"}
    for record in records:
        expect(pia.locator("dd.ref", has_text=record.id)).to_have_count(1)
    expect(pia.get_by_text(PIA.last_name).first).to_be_visible()
    for other in (NORA, DAAN):  # only what the proved address holds
        expect(pia.get_by_text(other.email)).to_have_count(0)
        expect(pia.get_by_text(other.last_name)).to_have_count(0)
    row = pia.get_by_role("row").filter(has_text=MARKETING_LABEL)
    expect(row.get_by_role("cell").first).to_contain_text("given")
    portal.screenshot(pia, "portal-me")


def test_withdrawing_a_purpose_lists_each_crms_answer_and_reaches_both(
    portal: Portal, pia: Page
) -> None:
    assert portal.marketing(PIA.email) == [HELD_GRANTED, HELD_GRANTED]
    pia.get_by_role("button", name=f"Withdraw: {MARKETING_LABEL}").click()
    expect(pia.get_by_role("heading", level=1)).to_have_text(
        f"You withdrew your consent to: {MARKETING_LABEL}"
    )
    for crm in ("HubSpot", "Salesforce"):
        answer = pia.get_by_role("row").filter(has=pia.get_by_role("rowheader", name=crm))
        expect(answer.get_by_role("cell").first).to_have_text("applied")
    assert portal.marketing(PIA.email) == [HELD_WITHDRAWN, HELD_WITHDRAWN]


def test_a_name_too_long_for_one_crm_is_refused_before_any_write(portal: Portal, pia: Page) -> None:
    before = portal.crms.fingerprint()
    pia.goto(f"{portal.url}/correct")
    pia.get_by_label("First name").fill(TOO_LONG)
    pia.get_by_role("button", name="Save the correction").click()
    expect(pia.get_by_role("alert")).to_contain_text(
        "Nothing was changed: one of our systems cannot hold what you typed."
    )
    expect(pia.get_by_role("alert")).to_contain_text("First name")
    assert portal.crms.fingerprint() == before  # neither CRM written, HubSpot included


def test_correcting_the_name_reaches_both_crms(portal: Portal, pia: Page) -> None:
    pia.goto(f"{portal.url}/correct")
    pia.get_by_label("First name").fill(CORRECTED)
    pia.get_by_role("button", name="Save the correction").click()
    expect(pia.get_by_role("status")).to_contain_text("Corrected: First name")
    assert portal.names(PIA.email) == (CORRECTED, CORRECTED)


def test_the_json_download_holds_what_is_held_on_the_address_alone(
    portal: Portal, pia: Page
) -> None:
    pia.goto(f"{portal.url}/me")
    with pia.expect_download() as download:
        pia.get_by_role("link", name="Download everything (JSON)").click()
    assert download.value.suggested_filename.endswith(".json")
    document: dict[str, Any] = json.loads(Path(download.value.path()).read_text("utf-8"))
    assert document["emails"] == [PIA.email]
    assert set(document["systems"]) == {"hubspot", "salesforce"}
    text = json.dumps(document, ensure_ascii=False)
    assert CORRECTED in text and PIA.last_name in text
    assert NORA.email not in text and DAAN.email not in text


def test_asking_to_be_forgotten_leads_to_the_status_page_and_its_receipt(
    portal: Portal, pia: Page
) -> None:
    pia.goto(f"{portal.url}/erase")
    expect(pia.get_by_role("heading", level=1)).to_have_text("Ask us to erase your data")
    planned = pia.get_by_role("table").filter(has_text="What the erasure would do")
    for record in portal.crms.person(PIA.email).records:
        expect(planned.get_by_role("row").filter(has_text=record.id)).to_contain_text("erased")
    pia.get_by_role("button", name="Erase my data").click()
    expect(pia.get_by_role("heading", level=1)).to_have_text("Your erasure request")
    link = status_link(portal.mailbox.wait_for(PIA.email, timeout=20))
    assert link is not None and link == pia.url  # the confirmation email's link: this page

    eventually(lambda: not portal.crms.holding(PIA.email), 60, "the daemon's erasure")
    later = portal.visitor()  # the link from the email, in a browser that never signed in
    later.goto(link)
    expect(later.get_by_role("heading", level=1)).to_have_text("Your erasure request")
    eventually(lambda: "completed" in _reloaded(later), 30, "the request completed")
    expect(later.get_by_role("table")).to_contain_text("Receipt: what each of our systems did")
    expect(later.get_by_text("Searched again afterwards: none of our systems")).to_be_visible()
    expect(later.get_by_text("Due by")).to_have_count(0)  # closed: only the receipt
    portal.screenshot(later, "portal-erase-status")


def _reloaded(page: Page) -> str:
    page.reload()
    return page.locator("main dl").inner_text()


def test_signing_in_and_withdrawing_with_javascript_off(portal: Portal) -> None:
    page = portal.signed_in(NORA, javascript=False)
    page.get_by_role("button", name=f"Withdraw: {MARKETING_LABEL}").click()
    for crm in ("HubSpot", "Salesforce"):
        answer = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=crm))
        expect(answer.get_by_role("cell").first).to_have_text("applied")
    assert portal.marketing(NORA.email) == [HELD_WITHDRAWN, HELD_WITHDRAWN]


def test_the_page_and_its_email_in_dutch(portal: Portal) -> None:
    page = portal.visitor()
    page.goto(f"{portal.url}/?lang=nl")  # the language link; a cookie keeps it
    expect(page.locator("html")).to_have_attribute("lang", "nl")
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Bekijk en beheer de gegevens die we over u hebben"
    )
    page.get_by_label("E-mailadres").fill(DAAN.email)
    page.get_by_role("button", name="Stuur mij een inloglink").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Kijk in uw e-mail")
    message = portal.mailbox.wait_for(DAAN.email, timeout=20)
    assert message["Content-Language"] == "nl"
    link = sign_in_link(message)
    assert link is not None
    page.goto(link)
    page.locator("main").get_by_role("button").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("De gegevens die we over u hebben")
    page.get_by_role("button", name=re.compile(rf"^Intrekken: {MARKETING_LABEL}$")).click()
    answer = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Salesforce"))
    expect(answer.get_by_role("cell").first).to_have_text("doorgevoerd")
    assert portal.marketing(DAAN.email) == [HELD_WITHDRAWN, HELD_WITHDRAWN]


def test_the_daemons_log_names_no_one(portal: Portal) -> None:
    """After all of it, the log of ``bridge run`` holds no address and no name."""
    [log] = portal.workdir.glob("run-*.log")
    text = log.read_text()
    assert "erasure.completed" in text  # the log of the whole journey, the erasure too
    words = set(re.findall(r"[\w'-]+", text))
    for person in (PIA, NORA, DAAN):
        assert person.email not in text.lower()
        assert not {person.first_name, person.last_name, CORRECTED} & words, person.email
