"""``field_usage`` on both adapters, against their emulators over real HTTP: which fields hold
data and in how many records, counted in the fewest calls, leaving out what the CRM computes
itself, and never carrying a value. The counting helpers they share are tested on their own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.adapters.base import FieldUsage, ObjectUsage
from bridge.adapters.hubspot.adapter import HubSpotAdapter
from bridge.adapters.hubspot.adapter import property_cost as hubspot_cost
from bridge.adapters.hubspot.settings import HubSpotSettings
from bridge.adapters.salesforce.adapter import SalesforceAdapter
from bridge.adapters.salesforce.settings import SalesforceSettings
from bridge.adapters.usage import chunked, filled, measure
from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.hubspot import HubSpotEmulatorConfig
from bridge_sandbox.emulators.hubspot import create_app as hubspot_emulator
from bridge_sandbox.emulators.salesforce import create_app as salesforce_emulator

# Long custom property names, so that the contact properties take three URL chunks.
CUSTOM = [f"custom_property_with_a_rather_long_name_{n:03d}" for n in range(150)]
NOTE = "Asked us to call after six; mentioned a hospital stay"
WEBSITE = "https://ada.example"
CONTACTS = "GET /crm/v3/objects/contacts"
PROPERTIES = "GET /crm/v3/properties/{object_type}"
DESCRIBE = "GET /services/data/v{version}/sobjects/{sobject}/describe"
QUERY = "GET /services/data/v{version}/query"
QUERY_MORE = "GET /services/data/v{version}/query/{locator}"


def by_name(usage: ObjectUsage) -> dict[str, FieldUsage]:
    return {f.name: f for f in usage.fields}


def calls(admin: httpx.Client) -> dict[str, int]:
    counted: dict[str, int] = admin.get("/__emulator/counters").json()["calls"]
    return counted


# -- HubSpot -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hubspot() -> Iterator[RunningServer]:
    config = HubSpotEmulatorConfig(custom_properties=CUSTOM)
    with serve_in_thread(hubspot_emulator(config)) as running:
        yield running


@pytest.fixture
def hubspot_admin(hubspot: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hubspot.url, timeout=60) as client:
        client.post("/__emulator/reset").raise_for_status()
        yield client


def test_hubspot_counts_each_property_over_every_contact_in_the_fewest_calls(
    hubspot: RunningServer, hubspot_admin: httpx.Client
) -> None:
    people: list[dict[str, Any]] = [
        {"email": f"person{n}@example.com", "firstname": f"P{n}"} for n in range(150)
    ]
    people[0]["properties"] = {"website": WEBSITE, "message": NOTE, CUSTOM[-1]: "x"}
    people[1]["properties"] = {CUSTOM[-1]: "y", CUSTOM[0]: "z"}
    people[2]["lastname"] = ""  # an emptied property holds nothing
    hubspot_admin.post("/__emulator/seed", json={"contacts": people}).raise_for_status()
    hubspot_admin.delete("/__emulator/counters").raise_for_status()
    settings = HubSpotSettings(access_token=SecretStr("pat-test"), base_url=hubspot.url)

    with HubSpotAdapter(settings, []) as adapter:
        [usage] = adapter.field_usage()

    assert (usage.sobject, usage.records) == ("contact", 150)
    fields = by_name(usage)
    assert fields["email"] == FieldUsage("email", 150, free_text=False)
    assert fields["firstname"].filled == 150
    assert fields["lastname"].filled == 0
    assert fields["website"] == FieldUsage("website", 1, free_text=False)
    assert fields["message"] == FieldUsage("message", 1, free_text=True)
    assert (fields[CUSTOM[0]].filled, fields[CUSTOM[-1]].filled) == (1, 2)
    # HubSpot keeps these itself: the id, the dates and the opt-out mirrors.
    computed = {"hs_object_id", "createdate", "lastmodifieddate", "hs_email_optout"}
    assert not computed & set(fields)
    assert not any(name.startswith("hs_email_optout_") for name in fields)
    assert NOTE not in repr(usage) and WEBSITE not in repr(usage)
    # One property list, then 2 pages of 100 contacts for each chunk of names.
    chunks = list(chunked(sorted(fields), 4_000, hubspot_cost))
    assert len(chunks) == 3
    assert calls(hubspot_admin) == {PROPERTIES: 1, CONTACTS: 2 * len(chunks)}


def test_hubspot_counts_a_portal_without_contacts_as_empty(
    hubspot: RunningServer, hubspot_admin: httpx.Client
) -> None:
    settings = HubSpotSettings(access_token=SecretStr("pat-test"), base_url=hubspot.url)
    with HubSpotAdapter(settings, []) as adapter:
        [usage] = adapter.field_usage()
    assert usage.records == 0
    assert all(f.filled == 0 for f in usage.fields)


# -- Salesforce ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def salesforce() -> Iterator[RunningServer]:
    with serve_in_thread(salesforce_emulator()) as running:
        yield running


@pytest.fixture
def salesforce_admin(salesforce: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=salesforce.url, timeout=60) as client:
        client.put("/__emulator/org", json={"org": "privacy"}).raise_for_status()
        yield client


def salesforce_adapter(server: RunningServer) -> SalesforceAdapter:
    settings = SalesforceSettings(
        base_url=server.url,
        username="bridge@example.com",
        password=SecretStr("password"),
        security_token=SecretStr("token"),
    )
    return SalesforceAdapter(settings, [])


def insert(admin: httpx.Client, sobject: str, rows: Sequence[Mapping[str, Any]]) -> None:
    records = [{"attributes": {"type": sobject}, **row} for row in rows]
    admin.post("/__emulator/records", json={"records": records}).raise_for_status()


def test_salesforce_counts_each_fillable_field_of_every_object_in_the_fewest_calls(
    salesforce: RunningServer, salesforce_admin: httpx.Client
) -> None:
    people: list[dict[str, Any]] = [
        {"LastName": f"P{n}", "Email": f"p{n}@example.com"} for n in range(2_001)
    ]
    people[0] |= {"Description": NOTE, "HasOptedOutOfEmail": True, "Title": "Chief"}
    insert(salesforce_admin, "Contact", people)
    insert(salesforce_admin, "Lead", [{"LastName": "Lovelace", "Company": "Engines"}])
    salesforce_admin.delete("/__emulator/counters").raise_for_status()

    with salesforce_adapter(salesforce) as adapter:
        usage = {found.sobject: found for found in adapter.field_usage()}

    assert list(usage) == [
        "Contact",
        "Lead",
        "Individual",
        "ContactPointEmail",
        "ContactPointTypeConsent",
    ]
    contact = by_name(usage["Contact"])
    assert usage["Contact"].records == 2_001
    assert (contact["LastName"].filled, contact["Email"].filled) == (2_001, 2_001)
    assert contact["Description"] == FieldUsage("Description", 1, free_text=True)
    assert contact["Title"] == FieldUsage("Title", 1, free_text=False)
    # A checkbox counts once ticked: every row holds false until someone does.
    assert (contact["HasOptedOutOfEmail"].filled, contact["DoNotCall"].filled) == (1, 0)
    # Salesforce keeps these itself: the id, audit dates, the compound name.
    assert not {"Id", "IsDeleted", "CreatedDate", "SystemModstamp", "Name"} & set(contact)
    lead = by_name(usage["Lead"])
    assert usage["Lead"].records == 1
    assert {name for name, f in lead.items() if f.filled} == {"LastName", "Company", "Status"}
    assert "ConvertedDate" not in lead
    assert usage["Individual"].records == 0
    assert NOTE not in repr(usage)
    # The login, one describe and one query per object, one more page for 2,001 Contacts.
    counted = calls(salesforce_admin)
    assert (counted[DESCRIBE], counted[QUERY], counted[QUERY_MORE]) == (5, 5, 1)


def test_salesforce_counts_contacts_and_leads_alone_where_the_org_has_no_privacy_objects(
    salesforce: RunningServer, salesforce_admin: httpx.Client
) -> None:
    salesforce_admin.put("/__emulator/org", json={"org": "basic"}).raise_for_status()
    insert(salesforce_admin, "Contact", [{"LastName": "Lovelace", "DoNotCall": True}])
    with salesforce_adapter(salesforce) as adapter:
        usage = {found.sobject: found for found in adapter.field_usage()}
    assert list(usage) == ["Contact", "Lead"]
    assert by_name(usage["Contact"])["DoNotCall"].filled == 1


# -- the shared counting -------------------------------------------------------------------------


@given(
    st.lists(st.text(min_size=1, max_size=40), max_size=60, unique=True),
    st.integers(20, 400),
)
def test_chunks_cover_every_name_once_in_order_within_the_budget(
    names: list[str], budget: int
) -> None:
    chunks = list(chunked(names, budget, hubspot_cost))
    assert chunks  # an object without names still gets its records counted
    assert [name for chunk in chunks for name in chunk] == names
    for chunk in chunks:
        assert len(chunk) <= 1 or sum(map(hubspot_cost, chunk)) <= budget


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), (False, False), (0, True), ("false", True), (True, True)],
)
def test_zero_is_a_value_but_an_unticked_checkbox_is_not(value: Any, expected: bool) -> None:
    assert filled(value) is expected


def test_the_first_pass_counts_the_records_and_each_chunk_its_own_fields() -> None:
    rows: list[dict[str, Any]] = [{"a": "1", "b": None, "c": "3"}, {"a": "", "b": "2", "c": "3"}]
    passes: list[Sequence[str]] = []

    def read(names: Sequence[str]) -> Iterator[Mapping[str, Any]]:
        passes.append(names)
        return iter(rows if len(passes) == 1 else [*rows, {"c": "new"}])

    usage = measure("thing", {"a": False, "b": False, "c": True}, read, 2, lambda _: 1)
    assert passes == [["a", "b"], ["c"]]
    assert usage == ObjectUsage(
        "thing", 2, (FieldUsage("a", 1), FieldUsage("b", 1), FieldUsage("c", 3, free_text=True))
    )
