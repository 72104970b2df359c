"""HubSpot's own preference page, which the portal hands a person to when HubSpot lets only
them resubscribe: the link the adapter asks for (v4 ``links/generate``) against the emulator,
and the page behind it, where the act is the person's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.adapters.base import PreferenceLinks
from bridge.adapters.hubspot.adapter import HubSpotAdapter
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.model import ConsentStatus, Purpose
from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, create_app

PURPOSES = (
    Purpose(id="marketing", hubspot_subscription_id="1"),
    Purpose(id="product_updates", hubspot_subscription_id="2"),
)
LINKS = "POST /communication-preferences/v4/links/generate"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with serve_in_thread(create_app(HubSpotEmulatorConfig())) as running:
        yield running


@pytest.fixture
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def adapter(server: RunningServer) -> Iterator[HubSpotAdapter]:
    settings = HubSpotSettings(access_token=SecretStr("pat-test"), base_url=server.url)
    with HubSpotAdapter(settings, PURPOSES) as made:
        yield made


def seed_opted_out(admin: httpx.Client) -> None:
    """Ada left the marketing subscription; product updates she never chose."""
    contact = {
        "email": "ada@example.com",
        "firstname": "Ada",
        "subscriptions": [{"subscription_id": "1", "status": "UNSUBSCRIBED"}],
    }
    admin.post("/__emulator/seed", json={"contacts": [contact]}).raise_for_status()


def statuses(admin: httpx.Client) -> dict[str | None, dict[str, Any]]:
    state = admin.get("/__emulator/state").json()
    return {s["subscriptionId"]: s for s in state["subscriptions"]}


def test_the_link_opens_the_persons_own_page_where_their_resubscribe_is_theirs(
    admin: httpx.Client, adapter: HubSpotAdapter
) -> None:
    seed_opted_out(admin)
    assert isinstance(adapter, PreferenceLinks)

    url = adapter.preference_link(" Ada@Example.com ")

    assert url is not None and url.startswith(f"{admin.base_url}/hs/manage-preferences?d=")
    assert "ada" not in url.lower()  # an opaque token names the address, never the address
    page = httpx.get(url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "ada@example.com" in page.text and "Marketing Information" in page.text
    assert 'name="subscription" value="1">' in page.text  # not ticked: she left it
    assert statuses(admin)["1"]["status"] == "UNSUBSCRIBED"  # opening the page changes nothing

    saved = httpx.post(url, data={"subscription": "1"})

    assert saved.status_code == 200
    held = statuses(admin)
    assert (held["1"]["status"], held["1"]["source"]) == ("SUBSCRIBED", "SOURCE_RECIPIENT")
    assert "2" not in held  # what she did not tick stays as it was: never chosen
    [record] = adapter.find_by_emails(["ada@example.com"])
    consents = {c.purpose: c.status for c in record.consents}
    assert consents["marketing"] is ConsentStatus.GRANTED


def test_on_the_page_a_person_leaves_all_email_and_may_come_back(
    admin: httpx.Client, adapter: HubSpotAdapter
) -> None:
    seed_opted_out(admin)
    url = adapter.preference_link("ada@example.com")
    assert url is not None

    httpx.post(url, data={"unsubscribe_all": "1"}).raise_for_status()
    assert statuses(admin)[None]["status"] == "UNSUBSCRIBED"
    assert 'name="unsubscribe_all" value="1" checked' in httpx.get(url).text

    httpx.post(url, data={"subscription": "2"}).raise_for_status()  # a tick lifts it
    held = statuses(admin)
    assert held[None]["status"] == "SUBSCRIBED"
    assert (held["2"]["status"], held["2"]["source"]) == ("SUBSCRIBED", "SOURCE_RECIPIENT")
    [record] = adapter.find_by_emails(["ada@example.com"])
    assert record.opt_out is not None and not record.opt_out.email


def test_links_hubspot_did_not_make_open_nothing(admin: httpx.Client) -> None:
    for method in ("GET", "POST"):
        answer = admin.request(method, "/hs/manage-preferences", params={"d": "guessed"})
        assert answer.status_code == 404
    assert admin.get("/hs/manage-preferences").status_code == 404


def test_the_generate_call_answers_in_hubspots_shape(admin: httpx.Client) -> None:
    headers = {"Authorization": "Bearer pat-test"}
    answer = admin.post(
        "/communication-preferences/v4/links/generate",
        params={"channel": "EMAIL", "businessUnitId": 0},
        json={"subscriberIdString": "Ada@Example.com", "subscriptionId": 2, "language": "en"},
        headers=headers,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {
        "managePreferencesUrl",
        "subscriberIdString",
        "unsubscribeAllUrl",
        "unsubscribeSingleUrl",
    }
    assert body["subscriberIdString"] == "ada@example.com"
    unchecked = httpx.get(body["unsubscribeSingleUrl"]).text
    assert 'value="2">' in unchecked  # the page opens with that one unticked
    refused = admin.post(
        "/communication-preferences/v4/links/generate",
        params={"channel": "EMAIL"},
        json={"subscriberIdString": "not an address"},
        headers=headers,
    )
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    unauthenticated = admin.post(
        "/communication-preferences/v4/links/generate",
        params={"channel": "EMAIL"},
        json={"subscriberIdString": "ada@example.com"},
    )
    assert unauthenticated.status_code == 401


def test_a_token_without_the_preferences_scopes_gets_no_link_and_a_line_without_the_address(
    admin: httpx.Client, adapter: HubSpotAdapter
) -> None:
    scopes = ["crm.objects.contacts.read", "communication_preferences.read"]
    admin.put("/__emulator/tier", json={"tier": "enterprise", "scopes": scopes})
    with capture_logs() as logs:
        assert adapter.preference_link("ada@example.com") is None
    [line] = [e for e in logs if e["event"] == "hubspot.preference_link_refused"]
    assert "MISSING_SCOPES" in line["error"] and "ada@example.com" not in str(logs)
    calls = admin.get("/__emulator/counters").json()["calls"]
    assert calls[LINKS] == 1  # a refusal is not retried
