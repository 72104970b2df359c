"""The Salesforce emulator, driven by the unmodified simple-salesforce 1.12 over real HTTP.

Each test states one behaviour of Salesforce (docs/vendors/salesforce.md) that adapters rely
on. The client reaches the emulator through a ``requests.Session`` that rewrites
``https://<host>`` ("Client and transport"); raw HTTP is used only where simple-salesforce
has no wrapper (SOAP ``emptyRecycleBin``) or to check exact bodies and headers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from defusedxml import ElementTree
from fastapi import FastAPI, Request, Response
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import Usage

from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.salesforce import SalesforceEmulatorConfig, create_app
from bridge_sandbox.emulators.salesforce_model import CustomField

SESSION_EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
QUOTA_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
SOBJECT = "{urn:sobject.enterprise.soap.sforce.com}"
ACK = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    '<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    "</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


class EmulatorSession(requests.Session):
    """Sends every ``https://<host>`` URL simple-salesforce builds to the emulator."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.trust_env = False

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return super().request(method, re.sub(r"^https://[^/]+", self.base, url), *args, **kwargs)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll until ``predicate`` returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def error_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    (error,) = exc.value.content
    assert isinstance(error, dict)
    return error


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    defaults = SalesforceEmulatorConfig()
    external_id = CustomField(name="External_Id__c", external_id=True)
    config = SalesforceEmulatorConfig(
        custom_fields={
            **defaults.custom_fields,
            "Contact": [*defaults.custom_fields["Contact"], external_id],
        },
        outbound_retry_delays_seconds=[0.05],
    )
    with serve_in_thread(create_app(config)) as running:
        yield running


@pytest.fixture
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTP to a freshly reset emulator: the admin API and exact-shape checks."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/__emulator/reset").status_code == 204
        assert client.delete("/__emulator/faults").status_code == 204
        assert client.delete("/__emulator/counters").status_code == 204
        yield client


def connect(server: RunningServer, **credentials: Any) -> Salesforce:
    return Salesforce(session=EmulatorSession(server.url), **credentials)


@pytest.fixture
def sf(server: RunningServer, admin: httpx.Client) -> Salesforce:
    """simple-salesforce after a SOAP username-password login."""
    return connect(
        server, username="bridge@example.com", password="password", security_token="token"
    )


def calls(admin: httpx.Client, route: str) -> int:
    return int(admin.get("/__emulator/counters").json()["calls"].get(route, 0))


def seed(admin: httpx.Client, sobject: str, *rows: dict[str, Any]) -> list[str]:
    response = admin.post(
        "/__emulator/records",
        json={"records": [{"attributes": {"type": sobject}, **r} for r in rows]},
    )
    assert response.status_code == 201, response.text
    ids: list[str] = response.json()["ids"]
    return ids


def bearer(sf: Salesforce) -> dict[str, str]:
    return {"Authorization": f"Bearer {sf.session_id}"}


# -- logins and sessions ---------------------------------------------------------------------------


def test_soap_login_gives_a_session_on_the_emulators_host(
    sf: Salesforce, server: RunningServer
) -> None:
    assert sf.session_id.startswith("00D") and "!" in sf.session_id
    assert f"http://{sf.sf_instance}" == server.url
    assert sf.query("SELECT COUNT() FROM DataUseLegalBasis")["totalSize"] == 6


def test_oauth_logins_client_credentials_password_and_jwt(
    server: RunningServer, admin: httpx.Client
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    clients = [
        connect(server, consumer_key="k", consumer_secret="s", domain="acme.my"),
        connect(
            server, username="u@example.com", password="pw", consumer_key="k", consumer_secret="s"
        ),
        connect(server, username="u@example.com", consumer_key="k", privatekey=pem),
    ]
    for client in clients:
        page = client.query("SELECT Name FROM DataUseLegalBasis ORDER BY Name LIMIT 1")
        assert page["records"][0]["Name"] == "Consent"
    assert calls(admin, "POST /services/oauth2/token") == 3


def test_strict_auth_refuses_wrong_credentials_and_unknown_tokens(
    server: RunningServer, admin: httpx.Client
) -> None:
    admin.patch("/__emulator/settings", json={"strict_auth": True}).raise_for_status()
    with pytest.raises(SalesforceAuthenticationFailed) as soap:
        connect(server, username="bridge@example.com", password="wrong", security_token="token")
    assert soap.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in soap.value.auth_message
    with pytest.raises(SalesforceAuthenticationFailed) as oauth:
        connect(
            server, consumer_key="bridge-consumer-key", consumer_secret="nope", domain="acme.my"
        )
    assert oauth.value.code == "invalid_client"
    good = connect(
        server,
        consumer_key="bridge-consumer-key",
        consumer_secret="bridge-consumer-secret",
        domain="acme.my",
    )
    assert good.limits()["DailyApiRequests"]["Max"] == 15000
    made_up = admin.get(
        "/services/data/v59.0/limits", headers={"Authorization": "Bearer 00Dx!made-up"}
    )
    assert made_up.status_code == 401
    assert made_up.json() == SESSION_EXPIRED


def test_expired_sessions_make_simple_salesforce_log_in_again_once(
    sf: Salesforce, admin: httpx.Client
) -> None:
    old_session = sf.session_id
    assert admin.post("/__emulator/sessions/expire").json() == {"expired": 1}
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    assert sf.session_id != old_session
    assert admin.post("/__emulator/sessions/expire").json() == {"expired": 1}
    assert sf.Contact.create({"LastName": "Again"})["success"] is True
    assert calls(admin, "POST /services/Soap/u/{version}") == 3  # the first login, then one each
    stale = admin.get(
        "/services/data/v59.0/limits", headers={"Authorization": f"Bearer {old_session}"}
    )
    assert (stale.status_code, stale.json()) == (401, SESSION_EXPIRED)


def test_sessions_expire_after_the_configured_inactivity(
    sf: Salesforce, admin: httpx.Client
) -> None:
    admin.patch("/__emulator/settings", json={"session_lifetime_seconds": 0.2}).raise_for_status()
    assert admin.get("/services/data/v59.0/limits", headers=bearer(sf)).status_code == 200
    time.sleep(0.3)  # the inactivity timeout itself is what is under test
    expired = admin.get("/services/data/v59.0/limits", headers=bearer(sf))
    assert (expired.status_code, expired.json()) == (401, SESSION_EXPIRED)


# -- SOQL ------------------------------------------------------------------------------------------


def test_query_pages_by_2000_with_root_relative_next_urls(
    sf: Salesforce, admin: httpx.Client
) -> None:
    seed(admin, "Contact", *({"LastName": f"Person {n:04d}"} for n in range(5000)))
    first = sf.query("SELECT Id, LastName FROM Contact ORDER BY LastName")
    assert (first["totalSize"], first["done"], len(first["records"])) == (5000, False, 2000)
    assert re.fullmatch(r"/services/data/v59\.0/query/01g\w{15}-2000", first["nextRecordsUrl"])
    assert first["records"][0]["attributes"]["type"] == "Contact"
    everything = sf.query_all("SELECT Id, LastName FROM Contact ORDER BY LastName")["records"]
    assert [r["LastName"] for r in everything] == [f"Person {n:04d}" for n in range(5000)]
    assert len({r["Id"] for r in everything}) == 5000
    assert calls(admin, "GET /services/data/v{version}/query/{locator}") == 2
    small = sf.query("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=500"})
    assert len(small["records"]) == 500 and small["nextRecordsUrl"].endswith("-500")


def test_query_all_includes_deleted_rows_flagged_is_deleted(sf: Salesforce) -> None:
    kept, gone = (sf.Contact.create({"LastName": name})["id"] for name in ("Kept", "Gone"))
    assert sf.Contact.delete(gone) == 204
    live = sf.query("SELECT Id, IsDeleted FROM Contact")["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in live] == [(kept, False)]
    everything = sf.query_all("SELECT Id, IsDeleted FROM Contact", include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in everything] == [(kept, False), (gone, True)]


def test_parent_relationship_fields_come_back_nested(sf: Salesforce) -> None:
    person = sf.Individual.create({"LastName": "Doe", "ShouldForget": True})["id"]
    linked = sf.Contact.create({"LastName": "Doe", "IndividualId": person})["id"]
    alone = sf.Contact.create({"LastName": "Roe"})["id"]
    rows = sf.query(
        format_soql(
            "SELECT Id, Individual.ShouldForget FROM Contact WHERE Id IN {}", [linked, alone]
        )
    )["records"]
    assert rows[0]["Individual"]["ShouldForget"] is True
    assert rows[0]["Individual"]["attributes"] == {
        "type": "Individual",
        "url": f"/services/data/v59.0/sobjects/Individual/{person}",
    }
    assert rows[1]["Individual"] is None
    basis = sf.query("SELECT Id FROM DataUseLegalBasis WHERE Name = 'Consent'")["records"][0]["Id"]
    purpose = sf.DataUsePurpose.create({"Name": "Marketing", "LegalBasisId": basis})["id"]
    sf.ContactPointTypeConsent.create(
        {
            "Name": "Email marketing",
            "PartyId": person,
            "DataUsePurposeId": purpose,
            "PrivacyConsentStatus": "OptIn",
        }
    )
    consent = sf.query(
        "SELECT PrivacyConsentStatus, DataUsePurpose.LegalBasis.Name FROM ContactPointTypeConsent"
    )["records"][0]
    assert consent["PrivacyConsentStatus"] == "OptIn"
    assert consent["DataUsePurpose"]["LegalBasis"]["Name"] == "Consent"


def test_bad_soql_is_a_malformed_request_worded_as_salesforce(
    sf: Salesforce, admin: httpx.Client
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.query("SELECT Id, Emial FROM Contact")
    assert error_of(unknown)["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Emial' on entity 'Contact'" in error_of(unknown)["message"]
    with pytest.raises(SalesforceMalformedRequest) as malformed:
        sf.query("SELECT Id FROM Contact WHERE Email = ")
    assert error_of(malformed)["errorCode"] == "MALFORMED_QUERY"
    assert error_of(malformed)["message"].endswith(
        "ERROR at Row:1:Column:38\nunexpected token: '<EOF>'"
    )
    no_query = admin.get("/services/data/v59.0/query/", headers=bearer(sf))
    assert (no_query.status_code, no_query.json()[0]["errorCode"]) == (400, "MALFORMED_QUERY")


def test_seeded_timestamps_drive_system_modstamp_filters(
    sf: Salesforce, admin: httpx.Client
) -> None:
    old, new = seed(
        admin,
        "Contact",
        {
            "LastName": "Old",
            "SystemModstamp": "2024-01-01T00:00:00.000+0000",
            "CreatedDate": "2024-01-01T00:00:00Z",
        },
        {"LastName": "New", "SystemModstamp": "2024-06-01T12:00:00Z"},
    )
    cursor = datetime(2024, 3, 1, tzinfo=UTC)
    rows = sf.query(
        format_soql("SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp > {}", cursor)
    )
    assert [(r["Id"], r["SystemModstamp"]) for r in rows["records"]] == [
        (new, "2024-06-01T12:00:00.000+0000")
    ]
    assert sf.Contact.get(old)["CreatedDate"] == "2024-01-01T00:00:00.000+0000"


# -- sObjects --------------------------------------------------------------------------------------


def test_sobject_calls_answer_salesforce_status_codes(sf: Salesforce) -> None:
    created = sf.Contact.create({"LastName": "Smith", "Email": "smith@example.com"})
    assert created == {"id": created["id"], "success": True, "errors": []}
    assert re.fullmatch(r"003\w{15}", created["id"])
    assert sf.Contact.update(created["id"], {"HasOptedOutOfEmail": True}) == 204
    partial = sf.Contact.get(created["id"], params={"fields": "Email,HasOptedOutOfEmail"})
    assert list(partial) == ["attributes", "Email", "HasOptedOutOfEmail"]
    assert partial["HasOptedOutOfEmail"] is True
    full = sf.Contact.get(created["id"])
    assert full["Name"] == "Smith" and full["LastModifiedDate"] >= full["CreatedDate"]
    assert sf.Contact.delete(created["id"]) == 204


def test_upsert_by_external_id_answers_201_200_and_300(sf: Salesforce, admin: httpx.Client) -> None:
    first = sf.Contact.upsert("External_Id__c/ext-1", {"LastName": "Ext"}, raw_response=True)
    assert first.status_code == 201 and first.json()["created"] is True
    second = sf.Contact.upsert("External_Id__c/EXT-1", {"Title": "CTO"}, raw_response=True)
    assert second.status_code == 200
    assert second.json() == {
        "id": first.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    assert sf.Contact.get_by_custom_id("External_Id__c", "ext-1")["Title"] == "CTO"
    seed(
        admin,
        "Contact",
        {"LastName": "Twin", "External_Id__c": "dup"},
        {"LastName": "Twin", "External_Id__c": "dup"},
    )
    with pytest.raises(SalesforceMoreThanOneRecord) as ambiguous:
        sf.Contact.upsert("External_Id__c/dup", {"Title": "x"})
    assert all(
        url.startswith("/services/data/v59.0/sobjects/Contact/003")
        for url in ambiguous.value.content
    )
    with pytest.raises(SalesforceResourceNotFound) as not_external:
        sf.Contact.upsert("Email/a@example.com", {"LastName": "x"})
    assert "Provided external ID field does not exist" in error_of(not_external)["message"]


@pytest.mark.parametrize(
    ("sobject", "fields", "code", "named"),
    [
        ("Contact", {"LastName": "x" * 81}, "STRING_TOO_LONG", ["LastName"]),
        ("Contact", {"LastName": "x", "FirstName": "y" * 41}, "STRING_TOO_LONG", ["FirstName"]),
        (
            "Contact",
            {"LastName": "x", "Email": "a" * 70 + "@example.com"},
            "STRING_TOO_LONG",
            ["Email"],
        ),
        ("Contact", {"LastName": "x", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ("Contact", {"FirstName": "y"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ("Lead", {"LastName": "x"}, "REQUIRED_FIELD_MISSING", ["Company"]),
        ("Account", {"Phone": "1"}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ("Contact", {"LastName": "x", "Shoe_Size__c": 44}, "INVALID_FIELD", ["Shoe_Size__c"]),
        (
            "Contact",
            {"LastName": "x", "IsDeleted": True},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["IsDeleted"],
        ),
        (
            "ContactPointEmail",
            {"EmailAddress": "a@example.com", "UsageType": "Mars"},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            ["UsageType"],
        ),
    ],
)
def test_validation_errors_carry_code_and_fields(
    sf: Salesforce, sobject: str, fields: dict[str, Any], code: str, named: list[str]
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        getattr(sf, sobject).create(fields)
    assert error_of(caught)["errorCode"] == code
    assert error_of(caught)["fields"] == named


def test_restricted_picklist_and_converted_leads_are_enforced(
    sf: Salesforce, admin: httpx.Client
) -> None:
    party = sf.Individual.create({"LastName": "P"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as bad_status:
        sf.ContactPointTypeConsent.create({"PartyId": party, "PrivacyConsentStatus": "Maybe"})
    assert (
        error_of(bad_status)["message"]
        == "Privacy Consent Status: bad value for restricted picklist field: Maybe"
    )
    contact = sf.Contact.create({"LastName": "Converted"})["id"]
    (lead,) = seed(
        admin,
        "Lead",
        {
            "LastName": "L",
            "Company": "C",
            "IsConverted": True,
            "ConvertedContactId": contact,
            "ConvertedDate": "2024-05-01",
        },
    )
    row = sf.query("SELECT IsConverted, ConvertedContactId, ConvertedDate FROM Lead")["records"][0]
    assert (row["IsConverted"], row["ConvertedContactId"], row["ConvertedDate"]) == (
        True,
        contact,
        "2024-05-01",
    )
    with pytest.raises(SalesforceMalformedRequest) as converted:
        sf.Lead.update(lead, {"HasOptedOutOfEmail": True})
    assert error_of(converted)["errorCode"] == "CANNOT_UPDATE_CONVERTED_LEAD"
    opportunity = sf.Opportunity.create(
        {"Name": "Deal", "StageName": "Closed Won", "CloseDate": "2024-01-31", "ContactId": contact}
    )
    won = sf.Opportunity.get(opportunity["id"])
    assert (won["IsClosed"], won["IsWon"]) == (True, True)


def test_deleted_records_answer_entity_is_deleted(sf: Salesforce) -> None:
    record_id = sf.Contact.create({"LastName": "Binned"})["id"]
    sf.Contact.delete(record_id)
    for call in (
        lambda: sf.Contact.get(record_id),
        lambda: sf.Contact.delete(record_id),
        lambda: sf.Contact.update(record_id, {"Title": "x"}),
    ):
        with pytest.raises(SalesforceResourceNotFound) as caught:
            call()
        assert error_of(caught) == {
            "message": "entity is deleted",
            "errorCode": "ENTITY_IS_DELETED",
            "fields": [],
        }
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.Contact.get("003000000000zzzAAA")
    assert error_of(missing)["errorCode"] == "NOT_FOUND"


def test_get_deleted_and_get_updated_cover_the_window(sf: Salesforce) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    kept, gone = (sf.Contact.create({"LastName": name})["id"] for name in ("Kept", "Gone"))
    sf.Contact.delete(gone)
    end = datetime.now(UTC) + timedelta(minutes=2)
    deleted = sf.Contact.deleted(start, end)
    assert [r["id"] for r in deleted["deletedRecords"]] == [gone]
    assert set(deleted) == {"deletedRecords", "earliestDateAvailable", "latestDateCovered"}
    assert sf.Contact.updated(start, end)["ids"] == [kept]
    with pytest.raises(SalesforceMalformedRequest) as too_old:
        sf.Contact.deleted(start - timedelta(days=16), end)
    assert error_of(too_old)["errorCode"] == "INVALID_REPLICATION_DATE"


def test_describe_serves_simple_salesforce(sf: Salesforce) -> None:
    assert {"Contact", "Individual", "DataUseLegalBasis"} <= {
        o["name"] for o in sf.describe()["sobjects"]
    }
    assert sf.Contact.metadata()["objectDescribe"]["keyPrefix"] == "003"
    fields = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert fields["Lawful_Basis__c"]["custom"] is True
    assert fields["Email"]["length"] == 80 and fields["LastName"]["nillable"] is False


# -- collections, limits, faults -------------------------------------------------------------------


def test_collections_answer_per_row_and_roll_back_all_or_none(
    sf: Salesforce, admin: httpx.Client
) -> None:
    rows = [
        {"attributes": {"type": "Contact"}, "LastName": "Good"},
        {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
        {"attributes": {"type": "Lead"}, "LastName": "Lead", "Company": "Acme"},
    ]
    results = sf.restful(
        "composite/sobjects", method="POST", json={"allOrNone": False, "records": rows}
    )
    assert [r["success"] for r in results] == [True, False, True]
    assert "id" not in results[1]
    assert results[1]["errors"] == [
        {
            "statusCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [LastName]",
            "fields": ["LastName"],
        }
    ]
    rolled_back = sf.restful(
        "composite/sobjects", method="POST", json={"allOrNone": True, "records": rows}
    )
    assert [r["errors"][0]["statusCode"] for r in rolled_back] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    counts = admin.get("/__emulator/state").json()["counts"]
    assert (counts["Contact"]["live"], counts["Lead"]["live"]) == (1, 1)
    good, lead = results[0]["id"], results[2]["id"]
    updates = [
        {"attributes": {"type": "Contact"}, "Id": good, "Email": "bad"},
        {"attributes": {"type": "Lead"}, "Id": lead, "DoNotCall": True},
    ]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": updates})
    assert [(r["id"], r["success"]) for r in updated] == [(good, False), (lead, True)]
    sf.Contact.delete(good)
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{good},{lead}"})
    assert [r["success"] for r in deleted] == [False, True]
    assert deleted[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceMalformedRequest) as too_many:
        sf.restful("composite/sobjects", method="POST", json={"records": [rows[0]] * 201})
    assert error_of(too_many)["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_limit_info_header_feeds_api_usage_and_limits(sf: Salesforce, admin: httpx.Client) -> None:
    sf.query("SELECT COUNT() FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(used=1, total=15000)
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 14998}
    assert {"DailyBulkApiBatches", "DailyBulkV2QueryJobs", "DailyBulkV2QueryFileStorageMB"} <= set(
        limits
    )
    raw = admin.get("/services/data/v59.0/limits/", headers=bearer(sf))
    assert raw.headers["Sforce-Limit-Info"] == "api-usage=3/15000"


def test_spent_daily_quota_is_request_limit_exceeded(sf: Salesforce, admin: httpx.Client) -> None:
    admin.patch(
        "/__emulator/settings", json={"daily_api_limit": 100, "api_requests_used": 99}
    ).raise_for_status()
    sf.query("SELECT COUNT() FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(used=100, total=100)
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT COUNT() FROM Contact")
    assert refused.value.content == QUOTA_EXCEEDED
    seed(admin, "Contact", {"LastName": "Seeding ignores the quota"})


def test_injected_faults_reach_simple_salesforce(sf: Salesforce, admin: httpx.Client) -> None:
    admin.put(
        "/__emulator/faults", json={"error_rate": 1.0, "endpoints": ["GET /services/data/*"]}
    ).raise_for_status()
    with pytest.raises(SalesforceGeneralError) as unavailable:
        sf.query("SELECT COUNT() FROM Contact")
    assert unavailable.value.status == 503
    admin.put("/__emulator/faults", json={"drop_rate": 1.0}).raise_for_status()
    with pytest.raises(requests.ConnectionError):
        sf.Contact.create({"LastName": "Dropped"})
    admin.put("/__emulator/faults", json={"burst_429": 1}).raise_for_status()
    with pytest.raises(SalesforceRefusedRequest) as burst:
        sf.query("SELECT COUNT() FROM Contact")
    assert burst.value.content == QUOTA_EXCEEDED
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    assert admin.get("/__emulator/counters").json()["injected"] == {
        "error": 1,
        "drop": 1,
        "rate_limit": 1,
    }


def test_any_version_and_trailing_slash_are_accepted(sf: Salesforce, admin: httpx.Client) -> None:
    for path in (
        "/services/data/v42.0/limits",
        "/services/data/v62.0/limits/",
        "/services/data/v59.0/",
    ):
        assert admin.get(path, headers=bearer(sf)).status_code == 200, path
    for path in ("/services/data/vX/limits", "/services/data/v59.0/nothing"):
        missing = admin.get(path, headers=bearer(sf))
        assert (missing.status_code, missing.json()[0]["errorCode"]) == (404, "NOT_FOUND"), path


def test_bad_input_gets_salesforce_errors_never_a_crash(
    sf: Salesforce, admin: httpx.Client
) -> None:
    contacts = "/services/data/v59.0/sobjects/Contact"
    not_an_object = admin.post(contacts, json=[1], headers=bearer(sf))
    assert (not_an_object.status_code, not_an_object.json()[0]["errorCode"]) == (
        400,
        "JSON_PARSER_ERROR",
    )
    bad_flag = admin.post(
        contacts, json={"LastName": "x", "DoNotCall": "maybe"}, headers=bearer(sf)
    )
    assert (bad_flag.status_code, bad_flag.json()[0]["errorCode"]) == (400, "JSON_PARSER_ERROR")
    wrong_method = admin.put(contacts, json={}, headers=bearer(sf))
    assert (wrong_method.status_code, wrong_method.json()[0]["errorCode"]) == (
        405,
        "METHOD_NOT_ALLOWED",
    )
    entity_bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    soap = admin.post("/services/Soap/u/59.0", content=entity_bomb)
    assert soap.status_code == 500 and b"<sf:exceptionCode>" in soap.content
    token = "/services/oauth2/token"
    unsupported = admin.post(token, data={"grant_type": "magic"})
    assert (unsupported.status_code, unsupported.json()["error"]) == (400, "unsupported_grant_type")
    garbage = admin.post(token, data={"grant_type": JWT_BEARER, "assertion": "a.b.c"})
    assert (garbage.status_code, garbage.json()["error"]) == (400, "invalid_grant")


# -- deletion: recycle bin, Bulk API 2.0, emptyRecycleBin ------------------------------------------


def test_user_permission_access_shows_the_running_users_own_hard_delete_permission(
    sf: Salesforce, admin: httpx.Client
) -> None:
    soql = "SELECT PermissionsApiEnabled, PermissionsBulkApiHardDelete FROM UserPermissionAccess"
    [before] = sf.query(soql)["records"]
    assert (before["PermissionsApiEnabled"], before["PermissionsBulkApiHardDelete"]) == (
        True,
        False,
    )
    admin.patch("/__emulator/settings", json={"hard_delete_permission": True}).raise_for_status()
    [after] = sf.query(soql)["records"]
    assert after["PermissionsBulkApiHardDelete"] is True


def test_bulk2_hard_delete_needs_the_permission(sf: Salesforce, admin: httpx.Client) -> None:
    ids = seed(admin, "Contact", *({"LastName": f"Bulk {n}"} for n in range(3)))
    with pytest.raises(SalesforceOperationError, match="Bulk API Hard Delete"):
        sf.bulk2.Contact.hard_delete(records=[{"Id": i} for i in ids], wait=0)
    assert admin.get("/__emulator/state").json()["counts"]["Contact"] == {"live": 3, "deleted": 0}
    admin.patch("/__emulator/settings", json={"hard_delete_permission": True}).raise_for_status()
    (result,) = sf.bulk2.Contact.hard_delete(records=[{"Id": i} for i in [*ids, ids[0]]], wait=0)
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (4, 1)
    failed = sf.bulk2.Contact.get_failed_records(result["job_id"])
    assert failed.splitlines()[0] == '"sf__Id","sf__Error","Id"'
    assert failed.splitlines()[1] == (
        f'"{ids[0]}","NOT_FOUND:The requested resource does not exist:--","{ids[0]}"'
    )
    state = admin.get("/__emulator/state").json()
    assert {r["id"] for r in state["hard_deleted"]} == set(ids)
    assert sf.query_all("SELECT Id FROM Contact", include_deleted=True)["totalSize"] == 0


def test_bulk2_delete_and_query_jobs(sf: Salesforce, admin: httpx.Client) -> None:
    ids = seed(
        admin,
        "Contact",
        *({"LastName": f"Row {n}", "Email": f"row{n}@example.com"} for n in range(5)),
    )
    (deleted,) = sf.bulk2.Contact.delete(records=[{"Id": ids[0]}], wait=0)
    assert (deleted["numberRecordsProcessed"], deleted["numberRecordsFailed"]) == (1, 0)
    assert (
        sf.bulk2.Contact.get_successful_records(deleted["job_id"]).splitlines()[1]
        == f'"{ids[0]}","false","{ids[0]}"'
    )
    pages = list(
        sf.bulk2.Contact.query(
            "SELECT Id, Email FROM Contact ORDER BY LastName", max_records=2, wait=0
        )
    )
    assert len(pages) == 2
    assert pages[0].splitlines() == [
        '"Id","Email"',
        f'"{ids[1]}","row1@example.com"',
        f'"{ids[2]}","row2@example.com"',
    ]
    every = list(sf.bulk2.Contact.query("SELECT Id FROM Contact", wait=0))
    assert len(every[0].splitlines()) == 5
    with_deleted = "".join(sf.bulk2.Contact.query_all("SELECT Id, IsDeleted FROM Contact", wait=0))
    assert f'"{ids[0]}","true"' in with_deleted


def test_empty_recycle_bin_purges_deleted_records(sf: Salesforce, admin: httpx.Client) -> None:
    binned, live = (sf.Contact.create({"LastName": name})["id"] for name in ("Binned", "Live"))
    sf.Contact.delete(binned)
    envelope = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Header><urn:SessionHeader>'
        f"<urn:sessionId>{sf.session_id}</urn:sessionId></urn:SessionHeader></soapenv:Header>"
        f"<soapenv:Body><urn:emptyRecycleBin><urn:ids>{binned}</urn:ids><urn:ids>{live}</urn:ids>"
        "</urn:emptyRecycleBin></soapenv:Body></soapenv:Envelope>"
    )
    response = admin.post(
        "/services/Soap/u/59.0",
        content=envelope,
        headers={"Content-Type": "text/xml", "SOAPAction": "emptyRecycleBin"},
    )
    assert response.status_code == 200
    partner = "{urn:partner.soap.sforce.com}"
    results = [
        (
            r.findtext(f"{partner}id"),
            r.findtext(f"{partner}success"),
            r.findtext(f"{partner}errors/{partner}statusCode"),
        )
        for r in ElementTree.fromstring(response.content).iter(f"{partner}result")
    ]
    assert results == [(binned, "true", None), (live, "false", "INVALID_ID_FIELD")]
    assert [r["id"] for r in admin.get("/__emulator/state").json()["hard_deleted"]] == [binned]
    assert [
        r["Id"] for r in sf.query_all("SELECT Id FROM Contact", include_deleted=True)["records"]
    ] == [live]
    admin.post("/__emulator/sessions/expire").raise_for_status()
    refused = admin.post("/services/Soap/u/59.0", content=envelope)
    assert refused.status_code == 500
    assert b"<sf:exceptionCode>INVALID_SESSION_ID</sf:exceptionCode>" in refused.content


# -- outbound messages -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """A stand-in for the bridge's webhook: parses notifications with defusedxml and acks."""

    failures: int = 0
    bodies: list[bytes] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/webhooks/salesforce/{token}")
        async def receive(token: str, request: Request) -> Response:
            self.bodies.append(await request.body())
            if self.failures:
                self.failures -= 1
                return Response("busy", status_code=500)
            return Response(ACK, media_type="text/xml")

        return app

    def notifications(self) -> list[dict[str, Any]]:
        found = []
        for body in self.bodies:
            root = ElementTree.fromstring(body)
            envelope = root.find(f".//{OUTBOUND}notifications")
            assert envelope is not None
            for notification in envelope.iter(f"{OUTBOUND}Notification"):
                sobject = notification.find(f"{OUTBOUND}sObject")
                assert sobject is not None
                values = {child.tag.removeprefix(SOBJECT): child.text for child in sobject}
                found.append(
                    {
                        "organization": envelope.findtext(f"{OUTBOUND}OrganizationId"),
                        "id": notification.findtext(f"{OUTBOUND}Id"),
                        "type": sobject.get("{http://www.w3.org/2001/XMLSchema-instance}type"),
                        **values,
                    }
                )
        return found


def configure_outbound(admin: httpx.Client, url: str) -> str:
    organization = "00D5g000004SaLtEAK"
    message = {
        "object": "Contact",
        "endpoint_url": f"{url}/webhooks/salesforce/secret-token",
        "watched_fields": ["HasOptedOutOfEmail", "DoNotCall"],
        "fields": ["Email"],
    }
    admin.put(
        "/__emulator/outbound", json={"organization_id": organization, "messages": [message]}
    ).raise_for_status()
    return organization


def test_outbound_message_is_delivered_with_latest_values(
    sf: Salesforce, admin: httpx.Client
) -> None:
    receiver = Receiver()
    with serve_in_thread(receiver.app()) as endpoint:
        organization = configure_outbound(admin, endpoint.url)
        contact = sf.Contact.create({"LastName": "Opt", "Email": "opt@example.com"})["id"]
        sf.Contact.update(contact, {"Title": "Not watched"})
        assert admin.get("/__emulator/outbound").json()["notifications"] == []
        sf.Contact.update(contact, {"HasOptedOutOfEmail": True})
        wait_for(lambda: admin.get("/__emulator/outbound").json()["delivered"] == 1)
    (notification,) = receiver.notifications()
    assert notification["organization"] == organization
    assert notification["id"].startswith("04l") and notification["type"] == "sf:Contact"
    assert {k: notification[k] for k in ("Id", "HasOptedOutOfEmail", "DoNotCall", "Email")} == {
        "Id": contact,
        "HasOptedOutOfEmail": "true",
        "DoNotCall": "false",
        "Email": "opt@example.com",
    }
    status = admin.get("/__emulator/outbound").json()
    assert (status["pending"], status["delivered"], status["posts"]) == (0, 1, 1)


def test_outbound_message_is_retried_until_acknowledged(
    sf: Salesforce, admin: httpx.Client
) -> None:
    receiver = Receiver(failures=1)
    with serve_in_thread(receiver.app()) as endpoint:
        configure_outbound(admin, endpoint.url)
        contact = sf.Contact.create({"LastName": "Retry", "DoNotCall": True})["id"]
        wait_for(lambda: admin.get("/__emulator/outbound").json()["delivered"] == 1)
    first, second = receiver.notifications()
    assert first["id"] == second["id"] and second["Id"] == contact
    (report,) = admin.get("/__emulator/outbound").json()["notifications"]
    assert (report["status"], report["attempts"], report["last_error"]) == ("delivered", 2, None)


def test_outbound_deliveries_are_logged_without_the_endpoints_secret_token(
    sf: Salesforce, admin: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("", "httpx", "httpcore", "bridge_sandbox"):  # everything, whatever was set
        caplog.set_level(logging.DEBUG, logger=name)
    receiver = Receiver(failures=1)
    with serve_in_thread(receiver.app()) as endpoint:
        configure_outbound(admin, endpoint.url)  # .../webhooks/salesforce/secret-token
        sf.Contact.create({"LastName": "Logged", "DoNotCall": True})
        wait_for(lambda: admin.get("/__emulator/outbound").json()["delivered"] == 1)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "secret-token" not in logged
    assert f"{endpoint.url}/webhooks/salesforce/***: HTTP 500" in logged
    assert f"{endpoint.url}/webhooks/salesforce/***: acknowledged" in logged


def test_seeding_is_validated_and_all_or_nothing(admin: httpx.Client) -> None:
    before = admin.get("/__emulator/state").json()["counts"]["Contact"]
    bad = admin.post(
        "/__emulator/records",
        json={
            "records": [
                {"attributes": {"type": "Contact"}, "LastName": "Fine"},
                {"attributes": {"type": "Contact"}, "Email": "x@example.com"},
            ]
        },
    )
    assert bad.status_code == 400
    assert bad.json() == {
        "index": 1,
        "errors": [
            {
                "message": "Required fields are missing: [LastName]",
                "errorCode": "REQUIRED_FIELD_MISSING",
                "fields": ["LastName"],
            }
        ],
    }
    assert admin.get("/__emulator/state").json()["counts"]["Contact"] == before
    deleted = seed(
        admin,
        "Contact",
        {"LastName": "In the bin", "IsDeleted": True, "LastModifiedDate": "2024-01-02T00:00:00Z"},
    )
    (bin_entry,) = admin.get("/__emulator/state").json()["recycle_bin"]
    assert bin_entry == {
        "id": deleted[0],
        "type": "Contact",
        "deletedDate": "2024-01-02T00:00:00.000+0000",
    }
    records = admin.get("/__emulator/records", params={"type": "Contact"}).json()["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in records] == [(deleted[0], True)]


# -- an org without the privacy objects ------------------------------------------------------------

PRIVACY_OBJECTS = ("Individual", "ContactPointTypeConsent", "DataUsePurpose", "DataUseLegalBasis")


@pytest.fixture(scope="module")
def basic() -> Iterator[Salesforce]:
    """simple-salesforce logged in to an org that never turned on Data Protection and Privacy."""
    with serve_in_thread(create_app(SalesforceEmulatorConfig(org="basic"))) as running:
        yield connect(running, username="u", password="p", security_token="t")


def test_a_basic_org_answers_for_the_privacy_objects_as_an_org_without_them(
    basic: Salesforce,
) -> None:
    listed = {o["name"] for o in basic.describe()["sobjects"]}
    assert {"Contact", "Lead", "ContactPointEmail"} <= listed
    assert not listed & set(PRIVACY_OBJECTS)
    for name in PRIVACY_OBJECTS:
        with pytest.raises(SalesforceMalformedRequest) as refused:
            basic.query(f"SELECT Id FROM {name}")  # noqa: S608 - names are constants
        assert error_of(refused)["errorCode"] == "INVALID_TYPE"
        assert f"sObject type '{name}' is not supported." in error_of(refused)["message"]
        with pytest.raises(SalesforceResourceNotFound) as missing:
            basic.restful(f"sobjects/{name}/describe")
        assert error_of(missing)["errorCode"] == "NOT_FOUND"
    row = {"attributes": {"type": "Individual"}, "LastName": "Lovelace"}
    [answer] = basic.restful(
        "composite/sobjects", method="POST", json={"allOrNone": False, "records": [row]}
    )
    assert answer["success"] is False and answer["errors"][0]["statusCode"] == "INVALID_TYPE"
    for sobject in ("Contact", "Lead"):
        fields = {f["name"] for f in basic.restful(f"sobjects/{sobject}/describe")["fields"]}
        assert {"HasOptedOutOfEmail", "DoNotCall", "Lawful_Basis__c"} <= fields
        assert "IndividualId" not in fields
        with pytest.raises(SalesforceMalformedRequest) as refused:
            basic.query(f"SELECT Id, IndividualId FROM {sobject}")  # noqa: S608
        assert error_of(refused)["errorCode"] == "INVALID_FIELD"
    described = basic.restful("sobjects/ContactPointEmail/describe")["fields"]
    assert next(f for f in described if f["name"] == "ParentId")["referenceTo"] == ["Account"]


def test_the_org_profile_is_switched_through_the_admin_api_and_starts_over() -> None:
    with (
        serve_in_thread(create_app()) as running,
        httpx.Client(base_url=running.url, timeout=10) as admin,
    ):
        assert admin.get("/__emulator/org").json()["org"] == "privacy"
        seed(admin, "Contact", {"LastName": "Lovelace"})
        switched = admin.put("/__emulator/org", json={"org": "basic"})
        assert switched.status_code == 200
        assert switched.json()["org"] == "basic" and "Individual" not in switched.json()["sobjects"]
        counts = admin.get("/__emulator/state").json()["counts"]
        assert counts["Contact"] == {"live": 0, "deleted": 0} and "Individual" not in counts
        assert admin.post("/__emulator/reset").status_code == 204
        assert admin.get("/__emulator/settings").json()["org"] == "basic", "a reset keeps it"
        assert admin.put("/__emulator/org", json={"org": "plain"}).status_code == 422
        back = admin.put("/__emulator/org", json={"org": "privacy"}).json()
        assert set(PRIVACY_OBJECTS) <= set(back["sobjects"])
        bases = admin.get("/__emulator/records", params={"type": "DataUseLegalBasis"}).json()
        assert len(bases["records"]) == 6
