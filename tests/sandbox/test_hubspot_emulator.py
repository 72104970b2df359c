"""The HubSpot emulator, driven by the unmodified hubspot-api-client 12 over real HTTP.

Each test states one behaviour of HubSpot (docs/vendors/hubspot.md) that adapters rely on;
raw httpx is used only where the SDK has no wrapper (communication preferences v4, headers).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import urllib3
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from hubspot import HubSpot
from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest
from hubspot.communication_preferences.exceptions import ApiException as PrefsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    BatchResponseSimplePublicObject,
    BatchResponseSimplePublicObjectWithErrors,
    PublicGdprDeleteInput,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException, ServiceException
from hubspot.utils.signature import Signature

from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig, RateLimits, create_app
from bridge_sandbox.emulators.hubspot_tiers import (
    BATCH_READ,
    BATCH_WRITE,
    CONTACTS_WRITE,
    REQUIRED_SCOPES,
)
from bridge_sandbox.emulators.hubspot_webhooks import signed_headers, signing_uri

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
TOKEN = {"Authorization": "Bearer test-token"}
RELAXED = RateLimits(burst_max=100_000, search_max=100_000)
FAST_RETRIES = [0.05] * 10


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``predicate`` returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def error_body(exc: Exception) -> dict[str, Any]:
    body = json.loads(exc.body)  # type: ignore[attr-defined]
    assert isinstance(body, dict)
    return body


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    config = HubSpotEmulatorConfig(rate_limits=RELAXED, webhook_retry_delays_s=FAST_RETRIES)
    with serve_in_thread(create_app(config)) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTP: the admin API, v4 calls and header checks."""
    with httpx.Client(base_url=server.url, headers=TOKEN, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def clean(request: pytest.FixtureRequest) -> None:
    """Every test starts from an empty portal without faults or webhooks."""
    if "server" not in request.fixturenames:
        return
    client: httpx.Client = request.getfixturevalue("admin")
    client.post("/__emulator/reset").raise_for_status()
    client.delete("/__emulator/faults").raise_for_status()
    client.delete("/__emulator/webhooks").raise_for_status()
    client.put("/__emulator/tier", json={"tier": "enterprise"}).raise_for_status()
    client.put("/__emulator/rate-limits", json=RELAXED.model_dump()).raise_for_status()


@pytest.fixture(scope="module")
def hubspot_client(server: RunningServer) -> HubSpot:
    """``host`` redirects the generated clients; ``base_url`` the raw ``api_request``."""
    return HubSpot(access_token="test-token", host=server.url, base_url=server.url)


@pytest.fixture(scope="module")
def basic_api(hubspot_client: HubSpot) -> Any:
    return hubspot_client.crm.contacts.basic_api


@pytest.fixture(scope="module")
def batch_api(hubspot_client: HubSpot) -> Any:
    return hubspot_client.crm.contacts.batch_api


@pytest.fixture(scope="module")
def search_api(hubspot_client: HubSpot) -> Any:
    return hubspot_client.crm.contacts.search_api


@pytest.fixture(scope="module")
def status_api(hubspot_client: HubSpot) -> Any:
    return hubspot_client.communication_preferences.status_api


def create(basic_api: Any, **properties: str) -> Any:
    return basic_api.create(SimplePublicObjectInputForCreate(properties=properties))


def seed(admin: httpx.Client, *people: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = admin.post("/__emulator/seed", json={"contacts": list(people), **extra})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


# -- contacts -------------------------------------------------------------------------------------


def test_create_answers_201_and_a_duplicate_email_409(basic_api: Any) -> None:
    created = create(basic_api, email="Ada@Example.com", firstname="Ada")
    assert created is not None  # the SDK only deserialises a 201
    assert created.properties["email"] == "ada@example.com"

    with pytest.raises(ApiException) as caught:
        create(basic_api, email="ada@example.com")
    body = error_body(caught.value)
    assert caught.value.status == 409
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {created.id}"
    assert body["correlationId"]


def test_an_additional_email_counts_as_a_duplicate(basic_api: Any) -> None:
    first = create(basic_api, email="main@example.com", hs_additional_emails="Alt@example.com")
    with pytest.raises(ApiException) as caught:
        create(basic_api, email="alt@example.com")
    assert caught.value.status == 409
    assert error_body(caught.value)["message"].endswith(f"Existing ID: {first.id}")


@pytest.mark.parametrize(
    "email", ["a+b@example.com", "ünïcødé@exämple.com", "O'Brien@example.com", "x/y@example.com"]
)
def test_get_by_email_unquotes_the_path(basic_api: Any, email: str) -> None:
    created = create(basic_api, email=email)
    found = basic_api.get_by_id(email, id_property="email", properties=["email"])
    assert found.id == created.id
    assert found.properties["email"] == email.lower()


def test_unknown_contact_is_404(basic_api: Any) -> None:
    with pytest.raises(NotFoundException):
        basic_api.get_by_id("nobody@example.com", id_property="email")
    with pytest.raises(NotFoundException):
        basic_api.get_by_id("999999")


def test_list_pages_with_a_string_cursor(
    basic_api: Any, hubspot_client: HubSpot, admin: httpx.Client
) -> None:
    seed(admin, *({"email": f"p{i}@example.com", "firstname": f"P{i}"} for i in range(25)))
    seen: list[str] = []
    after = None
    while True:
        page = basic_api.get_page(limit=10, after=after, properties=["email", "firstname"])
        seen += [c.id for c in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
        assert isinstance(after, str)
    assert len(seen) == len(set(seen)) == 25
    assert len(hubspot_client.crm.contacts.get_all()) == 25

    repeated = admin.get("/crm/v3/objects/contacts?properties=email&properties=firstname")
    comma = admin.get("/crm/v3/objects/contacts", params={"properties": "email,firstname"})
    for response in (repeated, comma):
        assert response.json()["results"][0]["properties"]["firstname"] == "P0"


def test_update_bumps_lastmodifieddate_and_archive_frees_the_address(basic_api: Any) -> None:
    created = create(basic_api, email="edit@example.com", firstname="Old")
    time.sleep(0.002)  # timestamps have millisecond resolution
    updated = basic_api.update(created.id, SimplePublicObjectInput(properties={"firstname": "New"}))
    assert updated.properties["firstname"] == "New"
    assert updated.properties["lastmodifieddate"] > created.properties["lastmodifieddate"]

    basic_api.archive(created.id)
    with pytest.raises(NotFoundException):
        basic_api.get_by_id(created.id)
    assert basic_api.get_by_id(created.id, archived=True).archived is True
    assert create(basic_api, email="edit@example.com").id != created.id


def test_batch_read_with_a_missing_id_is_207_with_errors(basic_api: Any, batch_api: Any) -> None:
    create(basic_api, email="one@example.com")
    create(basic_api, email="two@example.com")
    result = batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[
                {"id": "ONE@example.com"},
                {"id": "two@example.com"},
                {"id": "ghost@example.com"},
            ],
            id_property="email",
            properties=["email"],
        )
    )
    assert isinstance(result, BatchResponseSimplePublicObjectWithErrors)
    assert sorted(r.properties["email"] for r in result.results) == [
        "one@example.com",
        "two@example.com",
    ]
    assert result.num_errors == 1
    assert result.errors[0].category == "OBJECT_NOT_FOUND"
    assert result.errors[0].context == {"ids": ["ghost@example.com"]}


def test_batch_create_is_201_or_207_per_input(basic_api: Any, batch_api: Any) -> None:
    good = batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": "b1@example.com"}},
                {"properties": {"email": "b2@example.com"}},
            ]
        )
    )
    assert isinstance(good, BatchResponseSimplePublicObject)  # deserialised only on 201
    assert len(good.results) == 2

    mixed = batch_api.create(
        BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": "b1@example.com"}, "objectWriteTraceId": "dup"},
                {"properties": {"email": "b3@example.com"}},
                {"properties": {"email": "b4@example.com", "hs_email_optout": "true"}},
            ]
        )
    )
    assert isinstance(mixed, BatchResponseSimplePublicObjectWithErrors)
    assert [r.properties["email"] for r in mixed.results] == ["b3@example.com"]
    categories = {e.category for e in mixed.errors}
    assert categories == {"CONFLICT", "VALIDATION_ERROR"}
    conflict = next(e for e in mixed.errors if e.category == "CONFLICT")
    assert conflict.context["objectWriteTraceId"] == ["dup"]


def test_batch_upsert_by_email_reports_new(basic_api: Any, batch_api: Any) -> None:
    existing = create(basic_api, email="old@example.com")
    result = batch_api.upsert(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "old@example.com", "idProperty": "email", "properties": {"firstname": "O"}},
                {"id": "new@example.com", "idProperty": "email", "properties": {"firstname": "N"}},
            ]
        )
    )
    by_email = {r.properties["email"]: r for r in result.results}
    assert by_email["old@example.com"].new is False
    assert by_email["old@example.com"].id == existing.id
    assert by_email["new@example.com"].new is True


def test_batches_over_100_inputs_are_refused(batch_api: Any) -> None:
    inputs = [{"properties": {"email": f"n{i}@example.com"}} for i in range(101)]
    with pytest.raises(ApiException) as caught:
        batch_api.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs=inputs))
    assert caught.value.status == 400


def test_optout_properties_are_read_only(basic_api: Any) -> None:
    created = create(basic_api, email="ro@example.com")
    for name in ("hs_email_optout", "hs_email_optout_1"):
        with pytest.raises(ApiException) as caught:
            basic_api.update(created.id, SimplePublicObjectInput(properties={name: "true"}))
        body = error_body(caught.value)
        assert caught.value.status == 400
        assert body["category"] == "VALIDATION_ERROR"
        assert body["message"] == f"{name} is a read only property; its value cannot be set"


def test_legal_basis_options_are_exact(basic_api: Any, hubspot_client: HubSpot) -> None:
    prop = hubspot_client.crm.properties.core_api.get_by_name("contacts", "hs_legal_basis")
    values = [o.value for o in prop.options]
    assert "Legitimate interest – prospect/lead" in values  # en dash
    assert "Legitimate interest - other" in values  # ASCII hyphen
    assert len(values) == 6

    with pytest.raises(ApiException) as caught:
        create(
            basic_api, email="lb@example.com", hs_legal_basis="Legitimate interest - prospect/lead"
        )
    assert error_body(caught.value)["errors"][0]["code"] == "INVALID_OPTION"
    both = "Performance of a contract;Freely given consent from contact"
    assert (
        create(basic_api, email="lb@example.com", hs_legal_basis=both).properties["hs_legal_basis"]
        == both
    )


# -- search ---------------------------------------------------------------------------------------


@pytest.fixture
def people(admin: httpx.Client) -> dict[str, str]:
    """Four contacts to search; returns the id of each by first name."""
    old = datetime(2024, 1, 1, tzinfo=UTC)
    seeded = seed(
        admin,
        {"email": "ann@example.com", "firstname": "Ann", "lastmodifieddate": old.isoformat()},
        {
            "email": "bob@example.com",
            "firstname": "Bob",
            "additional_emails": ["bobby@work.example"],
            "hs_legal_basis": "Performance of a contract;Not applicable",
            "lastmodifieddate": (old + timedelta(days=10)).isoformat(),
        },
        {"email": "cy@example.com", "firstname": "Cy", "lifecyclestage": "customer"},
        {"email": "dee@example.com", "lastmodifieddate": (old + timedelta(days=20)).isoformat()},
    )
    return {p["email"].split("@")[0]: p["id"] for p in seeded["contacts"]}


def _f(name: str, op: str, **operands: Any) -> dict[str, Any]:
    return {"propertyName": name, "operator": op, **operands}


JAN_5_MS = int(datetime(2024, 1, 5, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([[_f("email", "EQ", value="ANN@example.com")]], {"ann"}),
        ([[_f("firstname", "NEQ", value="ann")]], {"bob", "cy", "dee"}),
        ([[_f("firstname", "IN", values=["ann", "cy"])]], {"ann", "cy"}),
        ([[_f("firstname", "IN", values=["Ann"])]], set()),  # IN wants lower-case strings
        ([[_f("firstname", "NOT_IN", values=["ann", "cy"])]], {"bob", "dee"}),
        ([[_f("firstname", "HAS_PROPERTY")]], {"ann", "bob", "cy"}),
        ([[_f("firstname", "NOT_HAS_PROPERTY")]], {"dee"}),
        ([[_f("hs_additional_emails", "CONTAINS_TOKEN", value="bobby@work.example")]], {"bob"}),
        ([[_f("email", "CONTAINS_TOKEN", value="*@example.com")]], {"ann", "bob", "cy", "dee"}),
        ([[_f("firstname", "NOT_CONTAINS_TOKEN", value="bob")]], {"ann", "cy", "dee"}),
        ([[_f("hs_legal_basis", "EQ", value="Not applicable")]], {"bob"}),
        ([[_f("lastmodifieddate", "LT", value=str(JAN_5_MS))]], {"ann"}),
        ([[_f("lastmodifieddate", "LTE", value="2024-01-11T00:00:00Z")]], {"ann", "bob"}),
        (
            [
                [
                    _f(
                        "lastmodifieddate",
                        "BETWEEN",
                        value="2024-01-05T00:00:00Z",
                        highValue="2024-01-25",
                    )
                ]
            ],
            {"bob", "dee"},
        ),
        ([[_f("lastmodifieddate", "GT", value="2024-01-15T00:00:00.000Z")]], {"cy", "dee"}),
        (
            [[_f("lastmodifieddate", "GTE", value=str(JAN_5_MS)), _f("firstname", "HAS_PROPERTY")]],
            {"bob", "cy"},
        ),
        (
            [[_f("firstname", "EQ", value="ann")], [_f("lifecyclestage", "EQ", value="customer")]],
            {"ann", "cy"},
        ),
    ],
)
def test_search_operators(
    search_api: Any, people: dict[str, str], groups: list[list[dict[str, Any]]], expected: set[str]
) -> None:
    request = PublicObjectSearchRequest(
        filter_groups=[{"filters": filters} for filters in groups], limit=100
    )
    result = search_api.do_search(public_object_search_request=request)
    names = {name for name, cid in people.items() if cid in {r.id for r in result.results}}
    assert names == expected
    assert result.total == len(expected)


def test_search_sorts_in_string_and_object_form(
    search_api: Any, admin: httpx.Client, people: dict[str, str]
) -> None:
    by_sdk = search_api.do_search(
        public_object_search_request=PublicObjectSearchRequest(sorts=["-lastmodifieddate"])
    )
    raw = admin.post(
        "/crm/v3/objects/contacts/search",
        json={"sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}]},
    ).json()
    expected = [people["cy"], people["dee"], people["bob"], people["ann"]]
    assert [r.id for r in by_sdk.results] == expected
    assert [r["id"] for r in raw["results"]] == expected


def test_search_limit_is_capped_at_200(search_api: Any) -> None:
    with pytest.raises(ApiException) as caught:
        search_api.do_search(public_object_search_request=PublicObjectSearchRequest(limit=201))
    assert caught.value.status == 400


def test_search_stops_at_10000_results(search_api: Any, admin: httpx.Client) -> None:
    seed(admin, *({"email": f"bulk{i}@example.com"} for i in range(10_050)))
    last = search_api.do_search(
        public_object_search_request=PublicObjectSearchRequest(limit=200, after="9900")
    )
    assert last.total == 10_050
    assert len(last.results) == 100
    assert last.paging is None
    with pytest.raises(ApiException) as caught:
        search_api.do_search(public_object_search_request=PublicObjectSearchRequest(after="10000"))
    assert caught.value.status == 400


# -- GDPR delete ----------------------------------------------------------------------------------


def test_gdpr_delete_blocklists_every_address_but_allows_api_recreation(
    basic_api: Any, admin: httpx.Client
) -> None:
    created = create(basic_api, email="erase@example.com", hs_additional_emails="old@example.com")
    gone = basic_api.purge(
        PublicGdprDeleteInput(object_id="ERASE@example.com", id_property="email")
    )
    assert gone is None
    with pytest.raises(NotFoundException):
        basic_api.get_by_id(created.id)
    with pytest.raises(NotFoundException):
        basic_api.get_by_id(created.id, archived=True)

    blocked = {b["email"] for b in admin.get("/__emulator/state").json()["blocklist"]}
    assert blocked == {"erase@example.com", "old@example.com"}
    imported = admin.post("/__emulator/import", json={"contacts": [{"email": "erase@example.com"}]})
    assert imported.json()["rejected"] == [{"email": "erase@example.com", "reason": "BLOCKLISTED"}]
    assert create(basic_api, email="erase@example.com").id != created.id


def test_gdpr_delete_of_an_unknown_email_still_blocklists(
    basic_api: Any, admin: httpx.Client
) -> None:
    basic_api.purge(PublicGdprDeleteInput(object_id="never@example.com", id_property="email"))
    assert admin.get("/__emulator/state").json()["blocklist"][0]["email"] == "never@example.com"
    with pytest.raises(NotFoundException):
        basic_api.purge(PublicGdprDeleteInput(object_id="424242"))


# -- communication preferences --------------------------------------------------------------------


def _change(email: str, subscription: str = "1") -> PublicUpdateSubscriptionStatusRequest:
    return PublicUpdateSubscriptionStatusRequest(
        email_address=email,
        subscription_id=subscription,
        legal_basis="CONSENT_WITH_NOTICE",
        legal_basis_explanation="Ticked the newsletter box",
    )


def test_default_subscription_definitions(hubspot_client: HubSpot) -> None:
    page = hubspot_client.communication_preferences.definition_api.get_page()
    names = {d.id: d.name for d in page.subscription_definitions}
    assert names == {"1": "Marketing Information", "2": "Product Updates", "3": "One to One"}


def test_v3_refuses_resubscribe_and_repeat_unsubscribe(
    status_api: Any, admin: httpx.Client
) -> None:
    email = "sub@example.com"
    subscribed = status_api.subscribe(public_update_subscription_status_request=_change(email))
    assert (subscribed.status, subscribed.legal_basis) == ("SUBSCRIBED", "CONSENT_WITH_NOTICE")
    unsubscribed = status_api.unsubscribe(public_update_subscription_status_request=_change(email))
    assert unsubscribed.status == "NOT_SUBSCRIBED"

    with pytest.raises(PrefsApiException) as again:
        status_api.unsubscribe(public_update_subscription_status_request=_change(email))
    assert again.value.status == 400
    assert (
        error_body(again.value)["message"] == f"{email} is already unsubscribed from subscription 1"
    )

    with pytest.raises(PrefsApiException) as refused:
        status_api.subscribe(public_update_subscription_status_request=_change(email))
    body = error_body(refused.value)
    assert refused.value.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert "cannot be resubscribed" in body["message"]

    v4 = admin.post(
        f"/communication-preferences/v4/statuses/{email}",
        json={"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": 1},
    )
    assert v4.json()["results"][0]["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"


def test_status_belongs_to_the_address_not_the_contact(
    status_api: Any, basic_api: Any, admin: httpx.Client
) -> None:
    status_api.unsubscribe(
        public_update_subscription_status_request=_change("later@example.com", "2")
    )
    created = create(basic_api, email="later@example.com")
    found = basic_api.get_by_id(created.id, properties=["hs_email_optout_2", "hs_email_optout_1"])
    assert found.properties["hs_email_optout_2"] == "true"
    assert found.properties["hs_email_optout_1"] is None

    statuses = status_api.get_email_status("later@example.com").subscription_statuses
    by_id = {s.id: s for s in statuses}
    assert by_id["2"].status == "NOT_SUBSCRIBED"
    assert by_id["2"].legal_basis_explanation == "Ticked the newsletter box"
    recorded = admin.get("/__emulator/state").json()["subscriptions"]
    assert recorded[0]["subscriptionId"] == "2"
    assert recorded[0]["source"] == "API"
    assert recorded[0]["timestamp"]


def test_v4_batches_and_unsubscribe_all(
    admin: httpx.Client, basic_api: Any, hubspot_client: HubSpot
) -> None:
    contact = create(basic_api, email="v4@example.com")
    base = "/communication-preferences/v4/statuses"
    write = admin.post(
        f"{base}/batch/write",
        json={
            "inputs": [
                {"subscriberIdString": "v4@example.com", "channel": "EMAIL",
                 "statusState": "SUBSCRIBED", "subscriptionId": 2,
                 "legalBasis": "LEGITIMATE_INTEREST_CLIENT", "legalBasisExplanation": "customer"},
                {"subscriberIdString": "v4@example.com", "channel": "EMAIL",
                 "statusState": "SUBSCRIBED", "subscriptionId": 99},
            ]
        },
    )  # fmt: skip
    assert write.status_code == 207
    envelope = write.json()
    assert {"status", "results", "startedAt", "completedAt", "errors"} <= envelope.keys()
    assert envelope["results"][0]["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    assert envelope["errors"][0]["context"]["subscriberIdString"] == ["v4@example.com"]

    read = admin.post(
        f"{base}/batch/read", params={"channel": "EMAIL"}, json={"inputs": ["v4@example.com"]}
    )
    statuses = {s["subscriptionId"]: s for s in read.json()["results"][0]["statuses"]}
    assert statuses[2]["status"] == "SUBSCRIBED"
    assert statuses[2]["legalBasis"] == "LEGITIMATE_INTEREST_CLIENT"
    assert statuses[1]["status"] == "NOT_SPECIFIED"

    via_sdk = hubspot_client.api_request(
        {"method": "POST", "path": f"{base}/v4@example.com/unsubscribe-all",
         "qs": {"channel": "EMAIL", "verbose": "true"}}
    )  # fmt: skip
    assert via_sdk.status_code == 200
    assert {s["setStatusSuccessReason"] for s in via_sdk.json()["results"]} == {
        "UNSUBSCRIBE_FROM_ALL_OCCURRED"
    }
    wide = admin.get(f"{base}/v4@example.com/unsubscribe-all", params={"channel": "EMAIL"})
    assert wide.json()["results"][0]["wideStatusType"] == "PORTAL_WIDE"
    found = basic_api.get_by_id(contact.id, properties=["hs_email_optout"])
    assert found.properties["hs_email_optout"] == "true"

    batch = admin.post(
        f"{base}/batch/unsubscribe-all",
        params={"channel": "EMAIL"},
        json={"inputs": ["fresh@example.com", "not-an-email"]},
    )
    assert batch.status_code == 207
    assert batch.json()["results"] == [{"subscriberIdString": "fresh@example.com", "statuses": []}]
    wide_read = admin.post(
        f"{base}/batch/unsubscribe-all/read",
        params={"channel": "EMAIL"},
        json={"inputs": ["fresh@example.com", "other@example.com"]},
    ).json()
    assert [len(r["wideStatuses"]) for r in wide_read["results"]] == [1, 0]

    missing_channel = admin.get(f"{base}/v4@example.com")
    assert missing_channel.status_code == 400
    assert missing_channel.json()["category"] == "VALIDATION_ERROR"


# -- tiers and scopes ------------------------------------------------------------------------------


def token_scopes(admin: httpx.Client) -> set[str]:
    """What HubSpot's private-app token-info endpoint lists (it takes the token, no header)."""
    info = httpx.post(
        f"{admin.base_url}/oauth/v2/private-apps/get/access-token-info",
        json={"tokenKey": "test-token"},
    )
    assert info.status_code == 200
    assert {"userId", "hubId", "appId", "scopes"} <= info.json().keys()
    return set(info.json()["scopes"])


@pytest.mark.parametrize(("tier", "burst"), [("starter", "100"), ("professional", "190")])
def test_below_enterprise_the_batch_endpoints_answer_as_to_a_token_without_their_scopes(
    admin: httpx.Client, status_api: Any, tier: str, burst: str
) -> None:
    admin.put("/__emulator/tier", json={"tier": tier}).raise_for_status()
    base = "/communication-preferences/v4/statuses"
    emails = {"inputs": ["tier@example.com"]}
    for path, scope in [
        (f"{base}/batch/read", BATCH_READ),
        (f"{base}/batch/unsubscribe-all/read", BATCH_READ),
        (f"{base}/batch/unsubscribe-all", BATCH_WRITE),
    ]:
        refused = admin.post(path, params={"channel": "EMAIL"}, json=emails)
        body = refused.json()
        assert (refused.status_code, body["category"]) == (403, "MISSING_SCOPES"), path
        assert body["context"] == {"missingScopes": [scope]}
        assert body["errors"][0]["context"] == {"requiredGranularScopes": [scope]}
        assert body["correlationId"] and "required scopes" in body["message"]
    write = {"inputs": [{"subscriberIdString": "tier@example.com", "channel": "EMAIL",
                         "statusState": "UNSUBSCRIBED", "subscriptionId": 1}]}  # fmt: skip
    assert admin.post(f"{base}/batch/write", json=write).status_code == 403
    assert token_scopes(admin).isdisjoint({BATCH_READ, BATCH_WRITE})

    # What every tier has: v3 through the SDK, v4 one address at a time; the tier's limits.
    subscribed = status_api.subscribe(public_update_subscription_status_request=_change("t@x.io"))
    assert subscribed.status == "SUBSCRIBED"
    assert status_api.get_email_status("t@x.io").subscription_statuses
    one = admin.post(
        f"{base}/t@x.io",
        json={"channel": "EMAIL", "statusState": "UNSUBSCRIBED", "subscriptionId": 1},
    )
    assert one.json()["results"][0]["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    read = admin.get(f"{base}/t@x.io", params={"channel": "EMAIL"})
    assert {s["subscriptionId"]: s["status"] for s in read.json()["results"]}[1] == "UNSUBSCRIBED"
    left = admin.post(f"{base}/t@x.io/unsubscribe-all", params={"channel": "EMAIL"})
    assert left.status_code == 200
    wide = admin.get(f"{base}/t@x.io/unsubscribe-all", params={"channel": "EMAIL"})
    assert wide.json()["results"][0]["status"] == "UNSUBSCRIBED"
    assert read.headers["X-HubSpot-RateLimit-Max"] == burst
    assert admin.get("/__emulator/tier").json()["tier"] == tier


def test_token_info_lists_what_the_tier_and_the_app_grant(
    admin: httpx.Client, basic_api: Any
) -> None:
    assert {BATCH_READ, BATCH_WRITE, CONTACTS_WRITE} <= token_scopes(admin)  # Enterprise
    oauth = httpx.get(f"{admin.base_url}/oauth/v1/access-tokens/test-token").json()
    assert {"token", "token_type", "expires_in", "hub_id", "app_id", "user_id"} <= oauth.keys()
    assert set(oauth["scopes"]) == token_scopes(admin)

    # A token granted less: HubSpot never grants a tier's missing scope, whatever is asked.
    narrow = {"tier": "professional", "scopes": ["crm.objects.contacts.read", BATCH_READ]}
    admin.put("/__emulator/tier", json=narrow).raise_for_status()
    assert token_scopes(admin) == {"crm.objects.contacts.read"}
    with pytest.raises(ApiException) as refused:
        create(basic_api, email="nope@example.com")
    assert refused.value.status == 403
    assert error_body(refused.value)["context"]["missingScopes"] == [CONTACTS_WRITE]
    assert basic_api.get_page().results == []


def test_token_info_refuses_a_token_the_portal_does_not_know() -> None:
    config = HubSpotEmulatorConfig(strict_auth=True, access_tokens=["pat-good"])
    with serve_in_thread(create_app(config)) as running:
        path = f"{running.url}/oauth/v2/private-apps/get/access-token-info"
        assert httpx.post(path, json={"tokenKey": "pat-good"}).status_code == 200
        refused = httpx.post(path, json={"tokenKey": "pat-bad"})
        assert (refused.status_code, refused.json()["category"]) == (401, "INVALID_AUTHENTICATION")
        assert httpx.get(f"{running.url}/oauth/v1/access-tokens/pat-bad").status_code == 401


def test_every_vendor_route_names_the_scopes_it_needs() -> None:
    """A route missing from the scope table would answer any token: only token info may."""
    app = create_app()
    routes = {
        f"{method} {route.path}"
        for route in app.app.routes  # type: ignore[attr-defined]  # the FastAPI app inside
        if isinstance(route, APIRoute) and not route.path.startswith("/__emulator")
        for method in route.methods
    }
    free = {
        "POST /oauth/v2/private-apps/get/access-token-info",
        "GET /oauth/v1/access-tokens/{token}",
        # the person's own preference page: on the portal's website, opened without a token
        "GET /hs/manage-preferences",
        "POST /hs/manage-preferences",
    }
    assert routes - free == set(REQUIRED_SCOPES)


# -- rate limits, auth and faults -----------------------------------------------------------------


@pytest.fixture
def limited() -> Iterator[tuple[RunningServer, HubSpot]]:
    limits = RateLimits(burst_max=3, burst_interval_ms=400, search_max=2, search_interval_ms=400)
    with serve_in_thread(create_app(HubSpotEmulatorConfig(rate_limits=limits))) as running:
        yield running, HubSpot(access_token="t", host=running.url)


def test_rate_limit_headers_count_down_then_429_names_the_policy(
    limited: tuple[RunningServer, HubSpot],
) -> None:
    running, client = limited
    with httpx.Client(base_url=running.url, headers=TOKEN) as raw:
        remaining = [
            raw.get("/crm/v3/objects/contacts").headers["X-HubSpot-RateLimit-Remaining"]
            for _ in range(3)
        ]
        assert remaining == ["2", "1", "0"]
        headers = raw.get("/crm/v3/objects/contacts").headers
        assert headers["X-HubSpot-RateLimit-Max"] == "3"
        assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "400"
        assert "X-HubSpot-RateLimit-Daily-Remaining" in headers
        assert "X-HubSpot-RateLimit-Secondly-Remaining" in headers

        api = client.crm.contacts.basic_api
        with pytest.raises(ApiException) as caught:
            api.get_page()
        body = error_body(caught.value)
        assert caught.value.status == 429
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["errorType"] == "RATE_LIMIT"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."

        wait_for(lambda: raw.get("/crm/v3/objects/contacts").status_code == 200, timeout=2)

        raw.put("/__emulator/rate-limits", json={"daily_max": 1}).raise_for_status()
        daily = raw.get("/crm/v3/objects/contacts")
        assert (daily.status_code, daily.json()["policyName"]) == (429, "DAILY")


def test_search_has_its_own_limit_and_no_headers(limited: tuple[RunningServer, HubSpot]) -> None:
    running, _ = limited
    with httpx.Client(base_url=running.url, headers=TOKEN) as raw:
        answers = [raw.post("/crm/v3/objects/contacts/search", json={}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["policyName"] == "SECONDLY"
    for answer in answers:
        assert not [h for h in answer.headers if h.lower().startswith("x-hubspot-ratelimit")]


def test_strict_auth_accepts_only_known_tokens() -> None:
    config = HubSpotEmulatorConfig(strict_auth=True, access_tokens=["pat-good"])
    with serve_in_thread(create_app(config)) as running:
        assert HubSpot(access_token="pat-good", host=running.url).crm.contacts.basic_api.get_page()
        with pytest.raises(ApiException) as caught:
            HubSpot(access_token="pat-bad", host=running.url).crm.contacts.basic_api.get_page()
        assert caught.value.status == 401
        assert error_body(caught.value)["category"] == "INVALID_AUTHENTICATION"
        assert httpx.get(f"{running.url}/crm/v3/objects/contacts").status_code == 401


def test_injected_faults_reach_the_sdk_in_hubspot_shape(
    basic_api: Any, admin: httpx.Client
) -> None:
    created = create(basic_api, email="fault@example.com")
    faults = {"error_rate": 1.0, "error_status": 503, "endpoints": ["GET /crm/*"]}
    admin.put("/__emulator/faults", json=faults).raise_for_status()
    with pytest.raises(ServiceException) as caught:
        basic_api.get_by_id(created.id)
    assert caught.value.status == 503
    assert error_body(caught.value)["correlationId"]

    admin.put("/__emulator/faults", json={"burst_429": 1}).raise_for_status()
    with pytest.raises(ApiException) as limited:
        basic_api.get_by_id(created.id)
    assert error_body(limited.value)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert basic_api.get_by_id(created.id).id == created.id

    admin.put("/__emulator/faults", json={"drop_rate": 1.0}).raise_for_status()
    with pytest.raises(urllib3.exceptions.HTTPError):
        basic_api.get_by_id(created.id)
    counters = admin.get("/__emulator/counters").json()
    assert counters["injected"]["drop"] >= 1


# -- webhooks -------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook endpoint that checks HubSpot's signatures with the SDK's own validator."""

    fail_first: int = 0
    stall_first_s: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [e for call in self.calls if call["answered"] == 200 for e in call["events"]]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks")
        async def hooks(request: Request) -> Response:
            body = (await request.body()).decode()
            stamp = request.headers["X-HubSpot-Request-Timestamp"]
            first = not self.calls
            answered = 500 if len(self.calls) < self.fail_first else 200
            self.calls.append(
                {
                    "events": json.loads(body),
                    "answered": answered,
                    "v3": Signature.is_valid(
                        request.headers["X-HubSpot-Signature-v3"],
                        SECRET,
                        body,
                        http_uri=str(request.url),
                        signature_version="v3",
                        timestamp=stamp,
                    ),
                    "v1": Signature.is_valid(
                        request.headers["X-HubSpot-Signature"], SECRET, body, signature_version="v1"
                    ),
                    "version": request.headers["X-HubSpot-Signature-Version"],
                }
            )
            if first and self.stall_first_s:
                await asyncio.sleep(self.stall_first_s)
            return Response(status_code=answered)

        return app


def hook_up(admin: httpx.Client, receiver: RunningServer, **settings: Any) -> None:
    body = {"target_url": f"{receiver.url}/hooks", "client_secret": SECRET, "app_id": 77} | settings
    admin.put("/__emulator/webhooks", json=body).raise_for_status()


def flush(admin: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = admin.post("/__emulator/webhooks/flush", params={"timeout": 5}).json()
    assert stats["drained"]
    return stats


def test_webhooks_are_signed_and_gdpr_delete_sends_both_deletions(
    admin: httpx.Client, basic_api: Any, status_api: Any
) -> None:
    receiver = Receiver()
    with serve_in_thread(receiver.app()) as endpoint:
        hook_up(admin, endpoint)
        created = create(
            basic_api, email="hook@example.com", hs_legal_basis="Freely given consent from contact"
        )
        status_api.unsubscribe(
            public_update_subscription_status_request=_change("hook@example.com")
        )
        basic_api.purge(PublicGdprDeleteInput(object_id="hook@example.com", id_property="email"))
        stats = flush(admin)

    assert all(call["v3"] and call["v1"] and call["version"] == "v1" for call in receiver.calls)
    events = receiver.events()
    assert stats["delivered"] == len(events)
    assert all(len(call["events"]) <= 100 for call in receiver.calls)
    kinds = [(e["subscriptionType"], e.get("propertyName"), e.get("propertyValue")) for e in events]
    assert ("contact.creation", None, None) in kinds
    assert (
        "contact.propertyChange",
        "hs_legal_basis",
        "Freely given consent from contact",
    ) in kinds
    assert ("contact.propertyChange", "hs_email_optout_1", "true") in kinds
    assert ("contact.privacyDeletion", None, None) in kinds
    assert ("contact.deletion", None, None) in kinds
    for event in events:
        assert event["objectId"] == int(created.id)
        assert event["appId"] == 77
        assert event["portalId"] == 62515
        assert event["attemptNumber"] == 0
        assert {"eventId", "subscriptionId", "occurredAt", "changeSource"} <= event.keys()


def test_a_failed_delivery_is_retried_with_the_next_attempt_number(
    admin: httpx.Client, basic_api: Any
) -> None:
    receiver = Receiver(fail_first=1)
    with serve_in_thread(receiver.app()) as endpoint:
        hook_up(admin, endpoint, subscription_types=["contact.creation"])
        create(basic_api, email="retry@example.com")
        stats = flush(admin)
    assert [call["answered"] for call in receiver.calls] == [500, 200]
    assert [call["events"][0]["attemptNumber"] for call in receiver.calls] == [0, 1]
    assert receiver.calls[0]["events"][0]["eventId"] == receiver.calls[1]["events"][0]["eventId"]
    assert (stats["delivered"], stats["failed"], stats["requests"]) == (1, 0, 2)


def test_a_slow_receiver_times_out_into_a_retry_without_blocking_the_api(
    admin: httpx.Client, basic_api: Any
) -> None:
    receiver = Receiver(stall_first_s=1.0)
    with serve_in_thread(receiver.app()) as endpoint:
        hook_up(admin, endpoint, subscription_types=["contact.creation"], timeout_s=0.2)
        started = time.monotonic()
        create(basic_api, email="slow@example.com")
        assert time.monotonic() - started < 0.5
        wait_for(lambda: admin.get("/__emulator/webhooks").json()["delivered"] == 1)
    assert [call["events"][0]["attemptNumber"] for call in receiver.calls] == [0, 1]


def test_events_are_delivered_in_batches_of_at_most_batch_size(
    admin: httpx.Client, batch_api: Any
) -> None:
    receiver = Receiver()
    inputs = [{"properties": {"email": f"many{i}@example.com"}} for i in range(25)]
    with serve_in_thread(receiver.app()) as endpoint:
        hook_up(admin, endpoint, subscription_types=["contact.creation"], batch_size=10)
        batch_api.create(BatchInputSimplePublicObjectBatchInputForCreate(inputs=inputs))
        flush(admin)
    assert all(1 <= len(call["events"]) <= 10 for call in receiver.calls)
    assert len({e["objectId"] for e in receiver.events()}) == 25


def test_signatures_match_the_reference_vectors() -> None:
    body = (
        '[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        '"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        '"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    headers = signed_headers(body, "https://www.example.com/webhook_uri", SECRET, 1564113600000)
    assert headers["X-HubSpot-Signature"] == (
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )
    assert headers["X-HubSpot-Signature-v3"] == "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
    assert signing_uri("https://h.example/p?a=%3A%40%2f&b=%20") == "https://h.example/p?a=:@/&b=%20"
