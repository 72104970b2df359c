"""The console's Sync page over HTTP against both emulators: the runs a sync records, the
changes left to the person, a failed run's vendor code, and "Plan now" (a dry run)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bridge import audit
from bridge.adapters.base import AdapterError
from bridge.model import ConsentStatus
from bridge.runtime.wiring import Wiring
from bridge.store import records as record_rows
from bridge.store import sync as sync_rows
from bridge_sandbox.emulators.people import Act, Held, Person, seed_hubspot, seed_salesforce
from tests.conftest import PURPOSES, Crms
from tests.web.conftest import Console

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
GRANTED, WITHDRAWN = ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN
# A grant in Salesforce after a HubSpot opt-out: HubSpot lets only the person resubscribe.
KATHERINE = Person(
    "katherine@example.com",
    hubspot=Held(acts=(Act("marketing_email", WITHDRAWN, T0),)),
    salesforce=Held(acts=(Act("marketing_email", GRANTED, T0 + timedelta(days=2)),)),
)
# A withdrawal in Salesforce after a HubSpot grant: the sync unsubscribes her in HubSpot.
ALAN = Person(
    "alan@example.com",
    hubspot=Held(acts=(Act("marketing_email", GRANTED, T0),)),
    salesforce=Held(acts=(Act("marketing_email", WITHDRAWN, T0 + timedelta(days=1)),)),
)


def seed(crms: Crms, *people: Person) -> None:
    seed_hubspot(crms.hubspot, people, PURPOSES)
    seed_salesforce(crms.salesforce, people, PURPOSES)


def held(crms: Crms) -> list[object]:
    """Every record both emulators hold, with every field."""
    return [
        crms.hubspot.get("/__emulator/state").json(),
        crms.salesforce.get("/__emulator/records").json(),
    ]


def hubspot_id(crms: Crms, email: str) -> str:
    contacts = crms.hubspot.get("/__emulator/state").json()["contacts"]
    found = [c["id"] for c in contacts if c["properties"].get("email") == email]
    assert len(found) == 1, contacts
    return str(found[0])


def section(html: str, heading_id: str) -> str:
    """The HTML of the section a heading opens."""
    start = html.index(f'id="{heading_id}"')
    return html[start : html.index("</section>", start)]


def card(html: str, card_id: str) -> str:
    """The text of the card with this id."""
    start = html.index(f'id="{card_id}"')
    return text(html[start : html.index("</article>", start)])


def text(html: str) -> str:
    """What a reader sees: tags dropped, spaces squeezed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split()).removeprefix(">").strip()


def rows(html: str) -> list[str]:
    """Each table row's text, tags dropped and spaces squeezed."""
    found = re.findall(r"<tr>(.*?)</tr>", html, flags=re.S)
    return [text(row) for row in found]


def test_the_runs_and_the_changes_waiting_for_the_person(console: Console) -> None:
    seed(console.crms, KATHERINE, ALAN)
    report = console.wiring.reconciler().sync()
    counts = report.counts()
    assert counts["done"] >= 1 and counts["needs_self_service"] == 1, report.as_dict()
    viewer = console.sign_in("vera", "viewer")

    page = viewer.get("/sync")
    assert page.status_code == 200 and "<h1>Sync</h1>" in page.text
    [run] = rows(section(page.text, "runs-heading"))[1:]
    by_system = "hubspot: 2 read salesforce: 2 read"  # one record of each person in each
    expected = (
        f"cli full ok {counts['records']} {counts['planned']} {counts['done']} "
        f"{counts['already']} 1 {counts['failed']} {by_system}"
    )
    assert expected in run, run
    waiting = section(page.text, "awaiting-heading")
    assert "1 change the CRM lets only the person make" in waiting
    record = hubspot_id(console.crms, "katherine@example.com")
    [entry] = rows(waiting)[1:]
    assert entry.startswith(f"hubspot contact {record} consent:marketing_email granted salesforce")
    assert "Plan now" not in page.text, "a viewer is not offered the plan"
    assert "@example.com" not in page.text

    # She opts back in herself: the change no longer waits for her.
    console.crms.hubspot.post(
        "/communication-preferences/v4/statuses/katherine@example.com",
        json={"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": "1"},
        headers={"Authorization": "Bearer pat-test"},
    ).raise_for_status()
    console.wiring.reconciler().sync(full=True)
    page = viewer.get("/sync")
    assert "0 changes the CRM lets only the person make" in section(page.text, "awaiting-heading")
    assert len(rows(section(page.text, "runs-heading"))) == 3  # the header and two runs


def test_a_failed_run_shows_the_crm_error_and_its_vendor_code(console: Console) -> None:
    console.crms.seed_people(["ada@example.com"])
    settings = console.crms.settings
    impatient = settings.model_copy(
        update={"hubspot": settings.hubspot.model_copy(update={"give_up_after_seconds": 0.3})}
    )
    console.crms.hubspot.put("/__emulator/faults", json={"error_rate": 1.0}).raise_for_status()
    wiring = Wiring(config=None, _settings=impatient)
    try:
        with pytest.raises(AdapterError):
            wiring.reconciler().sync(trigger="daemon")
    finally:
        wiring.store().dispose()
    console.crms.hubspot.delete("/__emulator/faults").raise_for_status()

    operator = console.sign_in("olive")
    page = operator.get("/sync").text
    [run] = rows(section(page, "runs-heading"))[1:]
    assert run.startswith(f"{datetime.now(UTC):%Y-%m-%d}")
    assert "daemon full failed" in run
    assert "hubspot: 0 read, Transient INTERNAL_ERROR (unavailable)" in run
    today = operator.get("/").text
    hubspot = card(today, "crm-hubspot")
    assert "Transient, vendor code INTERNAL_ERROR (unavailable): HubSpot unreachable at" in hubspot
    assert "Service Unavailable" not in today, "the adapter's words, never the vendor's"
    assert "Last error none recorded" in card(today, "crm-salesforce")


def test_plan_now_shows_a_dry_run_and_changes_nothing(console: Console) -> None:
    crms = console.crms
    seed(crms, ALAN)
    operator = console.sign_in("olive")
    assert "Plan now" in operator.get("/sync").text
    before = held(crms)

    page = operator.post("/sync/plan", {"full": "on"})
    assert page.status_code == 200, page.text
    assert "<h1>Sync</h1>" in page.text and 'role="alert"' not in page.text
    plan = section(page.text, "plan-heading")
    assert "A dry run: nothing was written to any CRM" in plan
    record = hubspot_id(crms, "alan@example.com")
    planned = rows(plan)[1:]
    assert any(
        row.startswith(f"hubspot contact {record} consent marketing_email withdrawn salesforce")
        for row in planned
    ), planned
    assert "@example.com" not in page.text

    assert held(crms) == before, "no CRM changed"
    store = console.wiring.store()
    assert record_rows.cursor(store, "sync:hubspot") is None, "no cursor moved"
    assert not sync_rows.ledger(store, [("hubspot", "contact", record)])
    [run] = sync_rows.runs(store, 5)
    assert (run["trigger"], run["dry_run"], run["outcome"]) == ("operator:olive", True, "ok")
    assert run["counts"]["planned"] == len(planned)
    [event] = [e for e in audit.events(store) if e["action"] == "sync.planned"]
    assert (event["actor"], event["outcome"]) == ("operator:olive", "ok")
    listed = rows(section(page.text, "runs-heading"))[1:]
    assert listed and "operator:olive full, plan only ok" in listed[0]


def test_a_viewer_may_not_plan_and_garbage_is_refused(console: Console) -> None:
    viewer = console.sign_in("vera", "viewer")
    viewer.get("/sync")
    refused = viewer.post("/sync/plan")
    assert refused.status_code == 403
    assert "may not do this" in refused.text
    operator = console.sign_in("olive")
    operator.get("/sync")
    bad = operator.post("/sync/plan", {"full": "<script>"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert "<script>" not in bad.text
    assert not sync_rows.runs(console.wiring.store(), 5), "nothing ran"
