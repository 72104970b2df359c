"""What a signed-in person does on the privacy portal, over real HTTP against both emulators:
see what is held (their own records only), withdraw a purpose (reaching both CRMs, audited as
the portal's), correct their name (refused whole when a CRM cannot hold it), download
everything, and ask to be forgotten (a request from the portal, its status page reached by
the emailed link, then only its receipt). An address the session did not prove, or a form
without the session's token, is refused."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bridge import audit
from bridge.identity import subject_ref
from bridge.services.erasure import COMPLETED
from bridge_sandbox.demo_portal import portal_answers, sign_in_link, status_link
from bridge_sandbox.emulators.people import GRANTED, WITHDRAWN, Act, Held, Person
from tests.conftest import PSEUDONYM_KEY
from tests.web.conftest import Portal

MARKETING = "marketing_email"
SUBSCRIBED = Held((Act(MARKETING, GRANTED, datetime(2024, 3, 1, 9, tzinfo=UTC)),),
                  lawful_basis="consent")  # fmt: skip
ANN = Person("ann.portal@example.com", "Ann", "Quillfeather", SUBSCRIBED, SUBSCRIBED)
EVE = Person("eve.other@example.com", "Eve", "Oddsock", SUBSCRIBED, SUBSCRIBED)
TOO_LONG = "Bartholomew-Maximilian-Alexander-Christopher-Jones"  # 50: Salesforce keeps 40


def hubspot_status(portal: Portal, email: str, subscription: str = "1") -> str | None:
    rows = portal.crms.hubspot.get("/__emulator/state").json()["subscriptions"]
    return next((r["status"] for r in rows if r["email"] == email
                 and r["subscriptionId"] == subscription), None)  # fmt: skip


def salesforce_rows(portal: Portal, sobject: str) -> list[dict[str, Any]]:
    reply = portal.crms.salesforce.get("/__emulator/records", params={"type": sobject})
    rows: list[dict[str, Any]] = reply.json()["records"]
    return rows


def salesforce_contact(portal: Portal, email: str) -> dict[str, Any] | None:
    return next((r for r in salesforce_rows(portal, "Contact") if r["Email"] == email), None)


def salesforce_marketing(portal: Portal, email: str) -> str | None:
    """The latest marketing consent row's status of the address's Individual."""
    contact = salesforce_contact(portal, email)
    assert contact is not None
    rows = [r for r in salesforce_rows(portal, "ContactPointTypeConsent")
            if r["PartyId"] == contact["IndividualId"]]  # fmt: skip
    purposes = {r["Id"]: r["Name"] for r in salesforce_rows(portal, "DataUsePurpose")}
    mine = sorted((r for r in rows if purposes[r["DataUsePurposeId"]] == "Marketing"),
                  key=lambda r: (r["CaptureDate"] or "", r["CreatedDate"] or ""))  # fmt: skip
    return str(mine[-1]["PrivacyConsentStatus"]) if mine else None


def events(portal: Portal, email: str) -> list[dict[str, Any]]:
    ref = subject_ref(PSEUDONYM_KEY.encode(), email)
    return list(audit.events(portal.wiring.store(), ref))


def test_the_page_shows_what_is_held_on_the_proved_address_alone(portal: Portal) -> None:
    portal.seed(ANN, EVE)
    me = portal.sign_in(ANN.email).get("/me")
    contact = salesforce_contact(portal, ANN.email)
    assert contact is not None and contact["Id"] in me.text
    assert ANN.first_name in me.text and ANN.last_name in me.text
    assert "Consent</strong>: You agreed to it" in me.text  # the basis, in plain words
    assert "given" in me.text  # marketing, as both CRMs hold it
    assert EVE.email not in me.text and EVE.last_name not in me.text


def test_withdrawing_reaches_both_crms_and_is_audited_as_the_portals(portal: Portal) -> None:
    portal.seed(ANN, EVE)
    assert hubspot_status(portal, ANN.email) == "SUBSCRIBED"
    assert salesforce_marketing(portal, ANN.email) == "OptIn"
    ann = portal.sign_in(ANN.email)
    answered = ann.post(
        "/consent", {"action": "withdraw", "purpose": MARKETING, "address": ANN.email}
    )
    assert answered.status_code == 200
    assert portal_answers(answered.text) == {"hubspot": "applied", "salesforce": "applied"}
    assert hubspot_status(portal, ANN.email) == "UNSUBSCRIBED"
    assert salesforce_marketing(portal, ANN.email) == "OptOut"
    assert hubspot_status(portal, EVE.email) == "SUBSCRIBED"  # nobody else's
    acts = events(portal, ANN.email)
    carried = [e for e in acts if e["action"] == "portal.act"]
    assert carried and carried[-1]["actor"] == "portal" and carried[-1]["outcome"] == "applied"
    writes = [
        e for e in acts if e["system"] in ("hubspot", "salesforce") and e["actor"] == "portal"
    ]
    assert {e["system"] for e in writes} == {"hubspot", "salesforce"}
    shown = ann.get("/me").text
    assert "withdrawn" in shown


def test_giving_consent_back_hands_the_person_to_hubspots_own_page(portal: Portal) -> None:
    """HubSpot takes no API resubscribe after an opt-out: the person is given its page."""
    withdrawn = Held((Act(MARKETING, WITHDRAWN, datetime(2024, 3, 1, 9, tzinfo=UTC)),),
                     lawful_basis="consent")  # fmt: skip
    portal.seed(replace(ANN, hubspot=withdrawn, salesforce=withdrawn))
    ann = portal.sign_in(ANN.email)
    answered = ann.post("/consent", {"action": "grant", "purpose": MARKETING, "address": ANN.email})
    assert answered.status_code == 200
    assert portal_answers(answered.text) == {"hubspot": "needs you", "salesforce": "applied"}
    page = re.search(r'<a href="([^"]+)"[^>]*>Open the HubSpot preference page</a>', answered.text)
    assert page and page.group(1).startswith(portal.crms.settings.hubspot.base_url)
    assert 'rel="noreferrer noopener"' in answered.text
    assert httpx.get(html.unescape(page.group(1))).status_code == 200  # the person's own page
    assert hubspot_status(portal, ANN.email) == "UNSUBSCRIBED"  # until they act there
    assert salesforce_marketing(portal, ANN.email) == "OptIn"


def test_an_address_not_proved_or_a_form_without_the_sessions_token_is_refused(
    portal: Portal,
) -> None:
    portal.seed(ANN, EVE)
    ann = portal.sign_in(ANN.email)
    for path, form in (
        ("/consent", {"action": "withdraw", "purpose": MARKETING}),
        ("/correct", {"first_name": "Mallory"}),
        ("/erase", {}),
    ):
        refused = ann.post(path, {**form, "address": EVE.email})
        assert refused.status_code == 403, path
        assert "only on the addresses you signed in with" in refused.text
        both = ann.post(path, {**form, "address": [ANN.email, EVE.email]})
        assert both.status_code == 403, path
        forged = ann.client.post(
            f"/privacy{path}", data={**form, "address": ANN.email, "csrf": "forged"}
        )
        assert forged.status_code == 403 and "out of date" in forged.text, path
    assert hubspot_status(portal, EVE.email) == "SUBSCRIBED"
    assert hubspot_status(portal, ANN.email) == "SUBSCRIBED"
    eve = salesforce_contact(portal, EVE.email)
    assert eve is not None and eve["FirstName"] == EVE.first_name
    assert portal.wiring.erasure().summaries() == []


def test_a_correction_reaches_both_crms_or_neither(portal: Portal) -> None:
    portal.seed(ANN)
    ann = portal.sign_in(ANN.email)
    assert 'autocomplete="given-name"' in ann.get("/correct").text
    refused = ann.post("/correct", {"first_name": TOO_LONG, "address": ANN.email})
    assert refused.status_code == 400
    assert "Nothing was changed" in refused.text and "40" in refused.text
    assert "Check: First name" in refused.text and TOO_LONG not in refused.text
    contact = salesforce_contact(portal, ANN.email)
    assert contact is not None and contact["FirstName"] == ANN.first_name
    held = portal.crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert {c["properties"]["firstname"] for c in held} == {ANN.first_name}

    done = ann.post("/correct", {"first_name": "Anna", "last_name": "", "address": ANN.email})
    assert done.status_code == 200 and 'role="status"' in done.text
    contact = salesforce_contact(portal, ANN.email)
    assert contact is not None and contact["FirstName"] == "Anna"
    assert contact["LastName"] == ANN.last_name  # left empty: left as it was
    held = portal.crms.hubspot.get("/__emulator/state").json()["contacts"]
    assert {c["properties"]["firstname"] for c in held} == {"Anna"}
    assert {e["actor"] for e in events(portal, ANN.email) if e["action"] == "rectify"} == {"portal"}
    assert ann.post("/correct", {"address": ANN.email}).status_code == 400  # nothing typed


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_the_download_holds_everything_held_and_nothing_of_anyone_else(
    portal: Portal, kind: str
) -> None:
    portal.seed(ANN, EVE)
    ann = portal.sign_in(ANN.email)
    download = ann.get(f"/download.{kind}")
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment; filename=")
    assert download.headers["cache-control"] == "no-store"
    assert ANN.last_name in download.text and EVE.email not in download.text
    if kind == "json":
        assert set(json.loads(download.text)["systems"]) == {"hubspot", "salesforce"}
    else:
        rows = list(csv.reader(io.StringIO(download.text)))
        assert rows[0] == ["system", "object", "record_id", "field", "value"]
        assert {row[0] for row in rows[1:]} >= {"hubspot", "salesforce"}
    exported = [e for e in events(portal, ANN.email) if e["action"] == "export"]
    assert exported and exported[-1]["actor"] == "portal"


def test_asking_to_be_forgotten_makes_a_portal_request_whose_link_shows_it_then_its_receipt(
    portal: Portal,
) -> None:
    portal.seed(ANN, EVE)
    ann = portal.sign_in(ANN.email)
    plan = ann.get("/erase")
    contact = salesforce_contact(portal, ANN.email)
    assert plan.status_code == 200 and contact is not None and contact["Id"] in plan.text
    asked = ann.post("/erase", {"address": ANN.email})
    assert asked.status_code == 303
    location = asked.headers["location"]
    assert location.startswith("/privacy/requests/")
    erasure = portal.wiring.erasure()
    [request] = erasure.summaries()
    assert request["trigger"] == "portal"
    received = [e for e in events(portal, ANN.email) if e["action"] == "erasure.requested"]
    assert received[-1]["details"]["origin"].startswith("portal:")
    link = status_link(portal.mailbox.wait_for(ANN.email))
    assert link == f"{portal.url}{location}"

    stranger = portal.visitor()  # the link alone, no session
    open_page = stranger.client.get(location)
    assert open_page.status_code == 200 and request["id"] in open_page.text
    assert "Due by" in open_page.text

    assert erasure.run(request["id"], wait_seconds=10)["status"] == COMPLETED
    assert salesforce_contact(portal, ANN.email) is None
    assert salesforce_contact(portal, EVE.email) is not None
    closed = stranger.client.get(location)
    assert closed.status_code == 200 and request["id"] in closed.text
    assert "Receipt" in closed.text and "Due by" not in closed.text
    assert ANN.email not in closed.text

    forged = stranger.client.get(location[:-3] + "xyz")
    assert forged.status_code == 404 and request["id"] not in forged.text


def test_an_erasure_waits_until_every_address_on_the_records_is_proved(portal: Portal) -> None:
    """Ann's HubSpot contact holds her work address too: an erasure would follow it."""
    work = "ann.work@example.com"
    portal.crms.seed_hubspot(email=ANN.email, additional_emails=[work], lastname=ANN.last_name)
    portal.seed(replace(ANN, hubspot=None))
    ann = portal.sign_in(ANN.email)
    assert "a***@e***.com" in ann.get("/me").text  # named (masked), to be proved
    page = ann.get("/erase")
    assert page.status_code == 200 and "a***@e***.com" in page.text
    assert "Erase my data" not in page.text
    refused = ann.post("/erase", {"address": ANN.email})
    assert refused.status_code == 403 and portal.wiring.erasure().summaries() == []

    ann.post("/addresses", {"email": work})
    token = sign_in_link(portal.mailbox.wait_for(work))
    assert token is not None
    ann.get(f"/verify?t={token.partition('?t=')[2]}")
    ann.post("/verify", {"t": token.partition("?t=")[2]})
    assert "Erase my data" in ann.get("/erase").text
