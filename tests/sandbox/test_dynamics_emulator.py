"""The Dataverse emulator over real HTTP, driven the way an httpx + msal adapter drives it.

Each test states one behaviour of Dataverse (docs/vendors/dynamics.md) that the adapter will
rely on: the token endpoint and application users, the upsert trap, paging, change
tracking, ``$batch``, service protection limits, consent4 rows, the recycle bin, string
lengths, metadata, opportunities and webhooks.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from bridge_sandbox.emulators.common import RunningServer, serve_in_thread
from bridge_sandbox.emulators.dynamics import (
    AppRegistration,
    DynamicsEmulatorConfig,
    ServiceLimits,
    create_app,
)
from bridge_sandbox.emulators.dynamics_http import DataverseError
from bridge_sandbox.emulators.dynamics_limits import ServiceProtection
from bridge_sandbox.emulators.dynamics_state import DynamicsState, build_tables
from tests.adapters.dynamics_world import reset

TENANT = "11111111-2222-3333-4444-555555555555"
APP = AppRegistration(client_id="bridge-app", client_secret="s3cret-value")
OUTSIDER = AppRegistration(client_id="outsider", client_secret="other", application_user=False)
API = "/api/data/v9.2/"
MISSING = "00000000-0000-0000-0000-0000000000aa"


def token_for(client: httpx.Client, app: AppRegistration) -> httpx.Response:
    return client.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "scope": f"{client.base_url}/.default",
        },
    )


def bearer(client: httpx.Client, app: AppRegistration) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(client, app).json()['access_token']}"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve_in_thread(create_app(DynamicsEmulatorConfig(apps=[APP, OUTSIDER]))) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def api(server: RunningServer, admin: httpx.Client) -> Iterator[httpx.Client]:
    """The Web API with a token of the application user."""
    with httpx.Client(base_url=server.url + API, headers=bearer(admin, APP), timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def clean(admin: httpx.Client) -> None:
    reset(admin)


def seed(admin: httpx.Client, **tables: list[dict[str, Any]]) -> dict[str, list[str]]:
    response = admin.post("/__emulator/seed", json=tables)
    response.raise_for_status()
    made: dict[str, list[str]] = response.json()
    return made


def people(count: int) -> list[dict[str, Any]]:
    return [{"firstname": f"P{n}", "emailaddress1": f"p{n}@example.test"} for n in range(count)]


def table(admin: httpx.Client, name: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = admin.get("/__emulator/state").json()["tables"][name]
    return rows


# -- authentication ---------------------------------------------------------------------------


def test_token_endpoint_answers_entra_shape_for_a_registered_app(admin: httpx.Client) -> None:
    response = token_for(admin, APP)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0 and body["access_token"]


def test_wrong_secret_is_invalid_client_without_echoing_it(admin: httpx.Client) -> None:
    wrong = APP.model_copy(update={"client_secret": "guessed-secret"})
    response = token_for(admin, wrong)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert "guessed-secret" not in response.text


def test_unknown_client_is_not_found_in_the_directory(admin: httpx.Client) -> None:
    response = token_for(admin, AppRegistration(client_id="nobody", client_secret="x"))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert response.json()["error_codes"] == [700016]


def test_an_app_that_is_no_application_user_gets_a_token_but_403(admin: httpx.Client) -> None:
    response = admin.get(f"{API}contacts", headers=bearer(admin, OUTSIDER))
    assert response.status_code == 403
    assert response.json() == {
        "error": {"code": "0x80072560", "message": "The user is not a member of the organization."}
    }


def test_a_call_without_a_valid_token_is_401_with_a_challenge(admin: httpx.Client) -> None:
    response = admin.get(f"{API}contacts", headers={"Authorization": "Bearer forged"})
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")


# -- writes and the upsert trap -----------------------------------------------------------------


def test_create_answers_204_with_the_entity_id_or_201_with_the_row(api: httpx.Client) -> None:
    plain = api.post("contacts", json={"lastname": "Plain"})
    assert plain.status_code == 204 and plain.content == b""
    assert re.search(r"/api/data/v9\.2/contacts\([0-9a-f-]{36}\)$", plain.headers["OData-EntityId"])
    shown = api.post(
        "contacts?$select=lastname,followemail,donotemail",
        json={"lastname": "Shown"},
        headers={"Prefer": "return=representation"},
    )
    assert shown.status_code == 201
    body = shown.json()
    assert (body["lastname"], body["followemail"], body["donotemail"]) == ("Shown", True, False)
    assert body["@odata.etag"].startswith('W/"')


def test_patch_without_if_match_recreates_a_missing_row(
    api: httpx.Client, admin: httpx.Client
) -> None:
    response = api.patch(f"contacts({MISSING})", json={"lastname": "Back"})
    assert response.status_code == 204
    assert [row["contactid"] for row in table(admin, "contacts")] == [MISSING]


def test_patch_with_if_match_star_refuses_a_missing_row(
    api: httpx.Client, admin: httpx.Client
) -> None:
    response = api.patch(f"contacts({MISSING})", json={"lastname": "X"}, headers={"If-Match": "*"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "", "message": f"contact With Id = {MISSING} Does Not Exist"}
    }
    assert table(admin, "contacts") == []


def test_if_none_match_star_refuses_an_existing_row(api: httpx.Client, admin: httpx.Client) -> None:
    (contact,) = seed(admin, contacts=people(1))["contacts"]
    response = api.patch(
        f"contacts({contact})", json={"lastname": "Y"}, headers={"If-None-Match": "*"}
    )
    assert response.status_code == 412
    assert response.json() == {
        "error": {"code": "", "message": "A record with matching key values already exists."}
    }
    stale = api.patch(f"contacts({contact})", json={"lastname": "Z"}, headers={"If-Match": 'W/"0"'})
    assert stale.status_code == 412
    assert stale.json()["error"]["message"].startswith("The version of the existing record")


def test_delete_answers_204_then_404(api: httpx.Client, admin: httpx.Client) -> None:
    (contact,) = seed(admin, contacts=people(1))["contacts"]
    assert api.delete(f"contacts({contact})").status_code == 204
    again = api.delete(f"contacts({contact})")
    assert again.status_code == 404
    assert again.json() == {
        "error": {"code": "0x80040217", "message": f"contact With Id = {contact} Does Not Exist"}
    }


def test_unknown_column_in_a_body_is_refused(api: httpx.Client) -> None:
    response = api.post("contacts", json={"nickname": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "0x80048d19",
        "message": "Invalid property 'nickname' was found in entity "
        "'Microsoft.Dynamics.CRM.contact'.",
    }


# -- reads --------------------------------------------------------------------------------------


def test_pages_follow_the_next_link_unchanged(api: httpx.Client, admin: httpx.Client) -> None:
    made = set(seed(admin, contacts=people(7))["contacts"])
    prefer = {"Prefer": "odata.maxpagesize=3"}
    page = api.get("contacts?$select=firstname", headers=prefer)
    assert page.headers["Preference-Applied"] == "odata.maxpagesize=3"
    seen, pages = [], 0
    while True:
        pages += 1
        body = page.json()
        seen += [row["contactid"] for row in body["value"]]
        if "@odata.nextLink" not in body:
            break
        assert "$skiptoken=" in body["@odata.nextLink"]
        page = api.get(body["@odata.nextLink"], headers=prefer)
    assert pages == 3 and len(seen) == 7 and set(seen) == made


def test_skip_is_refused(api: httpx.Client) -> None:
    response = api.get("contacts?$skip=10")
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "0x80060888", "message": "The query parameter $skip is not supported"}
    }


def test_select_of_a_column_the_table_lacks_is_400(api: httpx.Client) -> None:
    response = api.get("contacts?$select=firstname,nickname")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "0x80060888",
        "message": "Could not find a property named 'nickname' on type "
        "'Microsoft.Dynamics.CRM.contact'.",
    }


def test_gdpr_optout_exists_only_with_the_sales_solution() -> None:
    config = DynamicsEmulatorConfig(apps=[APP], sales_solution=False)
    with serve_in_thread(create_app(config)) as running, httpx.Client(base_url=running.url) as c:
        response = c.get(f"{API}leads?$select=msdyn_gdproptout", headers=bearer(c, APP))
    assert response.status_code == 400
    assert (
        "Could not find a property named 'msdyn_gdproptout'" in response.json()["error"]["message"]
    )


def test_filter_subset(api: httpx.Client, admin: httpx.Client) -> None:
    rows = people(4)
    rows[1]["donotemail"] = True
    rows[2]["lastname"] = "O'Neil"
    ids = seed(admin, contacts=rows)["contacts"]

    def emails(expression: str) -> list[str]:
        response = api.get("contacts", params={"$filter": expression, "$select": "emailaddress1"})
        assert response.status_code == 200, response.text
        return sorted(row["emailaddress1"] for row in response.json()["value"])

    assert emails("emailaddress1 eq 'P0@EXAMPLE.test'") == ["p0@example.test"]
    assert emails("emailaddress1 eq 'p0@example.test' or emailaddress1 eq 'p3@example.test'") == [
        "p0@example.test",
        "p3@example.test",
    ]
    assert emails(
        "Microsoft.Dynamics.CRM.In(PropertyName='emailaddress1',"
        "PropertyValues=['p1@example.test','p2@example.test'])"
    ) == ["p1@example.test", "p2@example.test"]
    assert emails("donotemail eq true") == ["p1@example.test"]
    assert emails("lastname eq 'O''Neil'") == ["p2@example.test"]
    assert emails(f"contactid eq {ids[3]} and lastname eq null") == ["p3@example.test"]
    assert emails("modifiedon gt 2000-01-01T00:00:00Z and startswith(firstname,'P0')") == [
        "p0@example.test"
    ]
    assert api.get("contacts", params={"$filter": "nickname eq 'x'"}).status_code == 400
    assert api.get("contacts", params={"$filter": "firstname gt 5"}).status_code == 400
    top = api.get("contacts", params={"$top": "2", "$select": "firstname"}).json()
    assert len(top["value"]) == 2 and "@odata.nextLink" not in top


# -- change tracking ----------------------------------------------------------------------------


def test_delta_link_returns_changes_and_deleted_entities(
    api: httpx.Client, admin: httpx.Client
) -> None:
    kept, gone = seed(admin, contacts=people(2))["contacts"]
    first = api.get("contacts?$select=firstname", headers={"Prefer": "odata.track-changes"})
    assert first.headers["Preference-Applied"] == "odata.track-changes"
    assert len(first.json()["value"]) == 2
    filtered = api.get(
        "contacts?$filter=donotemail eq true", headers={"Prefer": "odata.track-changes"}
    )
    assert filtered.status_code == 400
    assert "isn't supported when Change Tracking is enabled" in filtered.json()["error"]["message"]
    delta_link = first.json()["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link
    api.patch(f"contacts({kept})", json={"firstname": "Changed"}, headers={"If-Match": "*"})
    api.delete(f"contacts({gone})")
    delta = api.get(delta_link).json()
    changed = [row for row in delta["value"] if "reason" not in row]
    deleted = [row for row in delta["value"] if "reason" in row]
    assert [(row["contactid"], row["firstname"]) for row in changed] == [(kept, "Changed")]
    assert deleted == [
        {
            "@odata.context": f"{api.base_url}$metadata#contacts/$deletedEntity",
            "id": gone,
            "reason": "deleted",
        }
    ]
    assert api.get(delta["@odata.deltaLink"]).json()["value"] == []


def test_an_expired_delta_token_asks_for_a_full_sync(
    api: httpx.Client, admin: httpx.Client
) -> None:
    first = api.get("contacts", headers={"Prefer": "odata.track-changes"}).json()
    assert admin.post("/__emulator/change-tokens/expire").json() == {"expired": 1}
    response = api.get(first["@odata.deltaLink"])
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "0x80044352",
            "message": "Version stamp associated with the client has expired. "
            "Please perform a full sync.",
        }
    }


# -- $batch ---------------------------------------------------------------------------------------


def batch_body(boundary: str, parts: list[str]) -> str:
    return "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"


def http_part(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    cid: str = "",
    if_match: bool = False,
) -> str:
    """One ``application/http`` part of a batch or changeset."""
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    head += f"Content-ID: {cid}\r\n" if cid else ""
    request = f"{method} {url} HTTP/1.1\r\nContent-Type: application/json\r\n"
    request += "If-Match: *\r\n" if if_match else ""
    return f"{head}\r\n{request}\r\n{json.dumps(body) if body is not None else ''}"


def changeset(parts: list[str]) -> str:
    inner = f"changeset_{uuid.uuid4().hex}"
    return f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n" + batch_body(inner, parts)


def send_batch(api: httpx.Client, parts: list[str], prefer: str = "") -> httpx.Response:
    boundary = f"batch_{uuid.uuid4().hex}"
    headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
    if prefer:
        headers["Prefer"] = prefer
    return api.post("$batch", content=batch_body(boundary, parts), headers=headers)


def test_a_failing_changeset_writes_nothing_and_stops_the_batch(
    api: httpx.Client, admin: httpx.Client
) -> None:
    response = send_batch(
        api,
        [
            changeset(
                [
                    http_part("POST", f"{API}contacts", {"lastname": "A"}, cid="1"),
                    http_part("PATCH", f"{API}contacts({MISSING})", {"lastname": "B"}, "2", True),
                ]
            ),
            http_part("POST", f"{API}contacts", {"lastname": "never"}),
        ],
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert "HTTP/1.1 404 Not Found" in response.text and "Does Not Exist" in response.text
    assert table(admin, "contacts") == []


def test_changeset_references_and_continue_on_error(api: httpx.Client, admin: httpx.Client) -> None:
    purpose = seed(admin, msdynmkt_purposes=[{"msdynmkt_name": "Commercial"}])
    purpose_id = purpose["msdynmkt_purposes"][0]
    consent = {
        "msdynmkt_contactpointvalue": "p@example.test",
        "msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({purpose_id})",
    }
    response = send_batch(
        api,
        [
            http_part("DELETE", f"{API}contacts({MISSING})"),
            changeset(
                [
                    http_part("POST", f"{API}contacts", {"lastname": "A"}, cid="1"),
                    http_part("PATCH", "$1", {"firstname": "Ann"}, cid="2"),
                ]
            ),
            http_part("POST", f"{API}msdynmkt_contactpointconsent4s", consent),
        ],
        prefer="odata.continue-on-error",
    )
    assert response.status_code == 200
    assert response.text.count("HTTP/1.1 204 No Content") == 3
    assert "changesetresponse_" in response.text and "Content-ID: 2" in response.text
    assert (
        "Content-ID Reference: '$7' does not exist"
        in send_batch(api, [http_part("PATCH", "$7", {"firstname": "x"})]).text
    )
    ((contact,),) = [[(r["firstname"], r["lastname"]) for r in table(admin, "contacts")]]
    assert contact == ("Ann", "A")
    (row,) = table(admin, "msdynmkt_contactpointconsent4s")
    assert row["_msdynmkt_purposeid_value"] == purpose_id


# -- service protection -------------------------------------------------------------------------


def test_request_limit_answers_429_with_retry_after(api: httpx.Client, admin: httpx.Client) -> None:
    admin.put("/__emulator/limits", json={"max_requests": 3}).raise_for_status()
    assert all(api.get("contacts").status_code == 200 for _ in range(3))
    refused = api.get("contacts")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "0x80072322"
    assert int(refused.headers["Retry-After"]) >= 1


def test_batch_parts_count_against_the_request_limit(
    api: httpx.Client, admin: httpx.Client
) -> None:
    admin.put("/__emulator/limits", json={"max_requests": 2}).raise_for_status()
    parts = [http_part("GET", f"{API}contacts") for _ in range(3)]
    refused = send_batch(api, parts)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "0x80072322"


def test_execution_time_limit_answers_its_own_code(api: httpx.Client, admin: httpx.Client) -> None:
    limits = {"cost_ms": 100, "max_execution_ms": 250}
    admin.put("/__emulator/limits", json=limits).raise_for_status()
    assert [api.get("contacts").status_code for _ in range(3)] == [200, 200, 429]
    refused = api.get("contacts")
    assert refused.json()["error"]["code"] == "0x80072321"
    assert "Retry-After" in refused.headers


# -- consent rows, deletion, recycle bin, audit ---------------------------------------------


def test_consent_rows_survive_the_contact_delete(api: httpx.Client, admin: httpx.Client) -> None:
    purpose_id = seed(admin, msdynmkt_purposes=[{"msdynmkt_name": "Commercial"}])[
        "msdynmkt_purposes"
    ][0]
    (contact,) = seed(admin, contacts=people(1))["contacts"]
    seed(
        admin,
        msdynmkt_contactpointconsent4s=[
            {
                "msdynmkt_contactpointvalue": "p0@example.test",
                "msdynmkt_value": 534120002,
                "msdynmkt_purposeid@odata.bind": f"/msdynmkt_purposes({purpose_id})",
            }
        ],
    )
    assert api.delete(f"contacts({contact})").status_code == 204
    found = api.get(
        "msdynmkt_contactpointconsent4s",
        params={
            "$filter": f"msdynmkt_contactpointvalue eq 'p0@example.test' and "
            f"_msdynmkt_purposeid_value eq {purpose_id}",
            "$select": "msdynmkt_value,_msdynmkt_purposeid_value",
        },
    ).json()["value"]
    assert [row["msdynmkt_value"] for row in found] == [534120002]


def test_recycle_bin_keeps_deleted_rows_restorable(api: httpx.Client, admin: httpx.Client) -> None:
    (contact,) = seed(admin, contacts=people(1))["contacts"]
    api.delete(f"contacts({contact})")
    assert admin.get("/__emulator/state").json()["recycle_bin"] == []
    admin.put("/__emulator/settings", json={"recycle_bin_days": 30}).raise_for_status()
    (other,) = seed(admin, contacts=people(1))["contacts"]
    api.delete(f"contacts({other})")
    assert [e["id"] for e in admin.get("/__emulator/state").json()["recycle_bin"]] == [other]
    restored = admin.post("/__emulator/restore", json={"entity_set": "contacts", "id": other})
    assert restored.status_code == 200
    assert api.get(f"contacts({other})").status_code == 200


def test_delete_record_change_history_counts_audit_entries(
    api: httpx.Client, admin: httpx.Client
) -> None:
    (contact,) = seed(admin, contacts=people(1))["contacts"]
    api.patch(f"contacts({contact})", json={"lastname": "New"}, headers={"If-Match": "*"})
    api.delete(f"contacts({contact})")
    target = {"Target": {"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": contact}}
    first = api.post("DeleteRecordChangeHistory", json=target)
    assert first.status_code == 200 and first.json()["DeletedEntriesCount"] == 3
    assert api.post("DeleteRecordChangeHistory", json=target).json()["DeletedEntriesCount"] == 0


def test_injected_rate_limit_fault_speaks_dataverse(api: httpx.Client, admin: httpx.Client) -> None:
    admin.put("/__emulator/faults", json={"burst_429": 1}).raise_for_status()
    refused = api.get("contacts")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "0x80072322"
    counters = admin.get("/__emulator/counters").json()["calls"]
    assert counters == {"GET /api/data/v9.2/contacts": 1}


def test_concurrent_requests_beyond_the_limit_are_refused_at_once() -> None:
    protection = ServiceProtection(ServiceLimits(max_concurrent=2))
    with protection.running("app"), protection.running("app"):
        with pytest.raises(DataverseError) as refused, protection.running("app"):
            pass
        with protection.running("other-app"):
            pass
    assert (refused.value.status, refused.value.code) == (429, "0x80072326")
    assert refused.value.headers["Retry-After"] == "1"
    with protection.running("app"):
        pass


def test_tokens_and_binned_rows_lapse_with_their_configured_days() -> None:
    moment = [datetime(2026, 1, 1, tzinfo=UTC)]
    state = DynamicsState(
        build_tables("cb_lawfulbasis", True), recycle_bin_days=30, clock=lambda: moment[0]
    )
    contact = state.create("contacts", {"lastname": "A"})["contactid"]
    token = state.issue_token()
    state.delete("contacts", contact)
    moment[0] += timedelta(days=6)
    assert state.changes_since("contacts", token) == ([], [contact])
    assert [entry["id"] for entry in state.snapshot()["recycle_bin"]] == [contact]
    moment[0] += timedelta(days=25)
    with pytest.raises(DataverseError) as expired:
        state.changes_since("contacts", token)
    assert expired.value.code == "0x80044352"
    assert state.snapshot()["recycle_bin"] == []


# -- seeding old rows, person columns, string lengths ---------------------------------------


def test_seeding_keeps_given_timestamps_and_web_api_writes_restamp(
    api: httpx.Client, admin: httpx.Client
) -> None:
    old = {"lastname": "Old", "createdon": "2020-01-02T03:04:05Z", "modifiedon": "2021-06-07"}
    (contact,) = seed(admin, contacts=[old])["contacts"]
    row = api.get(f"contacts({contact})?$select=createdon,modifiedon").json()
    assert (row["createdon"], row["modifiedon"]) == ("2020-01-02T03:04:05Z", "2021-06-07T00:00:00Z")
    stale = api.get("contacts", params={"$filter": "modifiedon lt 2022-01-01T00:00:00Z"})
    assert [r["contactid"] for r in stale.json()["value"]] == [contact]
    api.patch(f"contacts({contact})", json={"lastname": "New"}, headers={"If-Match": "*"})
    row = api.get(f"contacts({contact})?$select=createdon,modifiedon").json()
    assert row["createdon"] == "2020-01-02T03:04:05Z"
    assert row["modifiedon"] > "2025"
    made = api.post("leads", json={"lastname": "L", "createdon": "2000-01-01T00:00:00Z"})
    lead = api.get(made.headers["OData-EntityId"]).json()
    assert lead["createdon"] > "2025"
    assert admin.post("/__emulator/seed", json={"contacts": [{"createdon": "x"}]}).is_error


def test_description_and_purge_due_date_on_contact_and_lead(
    api: httpx.Client, admin: httpx.Client
) -> None:
    for entity_set in ("contacts", "leads"):
        body = {"lastname": "A", "description": "notes", "cb_purgedue": "2026-12-31"}
        made = api.post(entity_set, json=body, headers={"Prefer": "return=representation"})
        assert made.status_code == 201, made.text
        assert (made.json()["description"], made.json()["cb_purgedue"]) == ("notes", "2026-12-31")
        assert api.post(entity_set, json={"cb_lawfulbasis": 100000001}).status_code == 204
        bad = api.post(entity_set, json={"cb_purgedue": "2026-12-31T00:00:00Z"})
        assert bad.status_code == 400 and "Edm.Date" in bad.json()["error"]["message"]
    due = api.get(
        "contacts", params={"$filter": "cb_purgedue le 2027-01-01", "$select": "lastname"}
    )
    assert [row["lastname"] for row in due.json()["value"]] == ["A"]


@pytest.mark.parametrize(
    ("entity_set", "column", "limit"),
    [
        ("contacts", "firstname", 50),
        ("contacts", "lastname", 50),
        ("contacts", "emailaddress3", 100),
        ("leads", "telephone1", 50),
        ("leads", "description", 2000),
        ("msdynmkt_contactpointconsent4s", "msdynmkt_contactpointvalue", 400),
        ("msdynmkt_contactpointconsent4s", "msdynmkt_reason", 500),
        ("msdynmkt_purposes", "msdynmkt_name", 100),
    ],
)
def test_text_beyond_its_maximum_length_is_refused_without_echoing_it(
    api: httpx.Client, admin: httpx.Client, entity_set: str, column: str, limit: int
) -> None:
    assert api.post(entity_set, json={column: "a" * limit}).status_code == 204
    record = api.post(entity_set, json={}).headers["OData-EntityId"]
    too_long = "Zq" * limit
    for response in (
        api.post(entity_set, json={column: too_long}),
        api.patch(record, json={column: too_long}, headers={"If-Match": "*"}),
    ):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "0x80044331"
        assert f"'{column}'" in error["message"] and f"'{limit}'" in error["message"]
        assert "Zq" not in response.text
    assert len(table(admin, entity_set)) == 2


# -- metadata -----------------------------------------------------------------------------------


def test_entity_definitions_say_which_tables_track_changes(
    api: httpx.Client, admin: httpx.Client
) -> None:
    query = {
        "$select": "LogicalName,ChangeTrackingEnabled",
        "$filter": "ChangeTrackingEnabled eq true",
    }
    tracked = api.get("EntityDefinitions", params=query)
    assert tracked.status_code == 200, tracked.text
    names = {row["LogicalName"] for row in tracked.json()["value"]}
    assert {"contact", "lead", "msdynmkt_contactpointconsent4", "opportunity"} <= names
    assert set(tracked.json()["value"][0]) == {"LogicalName", "ChangeTrackingEnabled"}
    admin.put("/__emulator/settings", json={"untracked_tables": ["lead"]}).raise_for_status()
    names = {
        row["LogicalName"] for row in api.get("EntityDefinitions", params=query).json()["value"]
    }
    assert "lead" not in names and "contact" in names
    assert admin.get("/__emulator/settings").json()["untracked_tables"] == ["lead"]
    assert api.get("EntityDefinitions", headers={"Authorization": "Bearer x"}).status_code == 401


def test_attributes_give_type_and_maximum_length_of_every_column(api: httpx.Client) -> None:
    """The type of every column on the base AttributeMetadata; MaxLength only through a
    cast to the String and Memo types, as Dataverse holds it there."""
    columns = "EntityDefinitions(LogicalName='contact')/Attributes"
    response = api.get(columns, params={"$select": "LogicalName,AttributeType"})
    assert response.status_code == 200, response.text
    found = {row["LogicalName"]: row for row in response.json()["value"]}
    assert found["lastname"] == {"LogicalName": "lastname", "AttributeType": "String"}
    assert found["description"]["AttributeType"] == "Memo"
    refused = api.get(columns, params={"$select": "LogicalName,MaxLength"})
    assert refused.status_code == 400 and "MaxLength" in refused.json()["error"]["message"]
    lengths = {}
    for cast in ("StringAttributeMetadata", "MemoAttributeMetadata"):
        typed = api.get(
            f"{columns}/Microsoft.Dynamics.CRM.{cast}", params={"$select": "LogicalName,MaxLength"}
        )
        assert typed.status_code == 200, typed.text
        lengths |= {row["LogicalName"]: row["MaxLength"] for row in typed.json()["value"]}
    assert lengths["lastname"] == 50 and lengths["description"] == 2000
    assert "donotbulkemail" not in lengths
    unknown = api.get(f"{columns}/Microsoft.Dynamics.CRM.NoSuchAttributeMetadata")
    assert unknown.status_code == 404
    assert found["donotbulkemail"] == {"LogicalName": "donotbulkemail", "AttributeType": "Boolean"}
    assert found["cb_lawfulbasis"]["AttributeType"] == "Picklist"
    assert found["cb_purgedue"]["AttributeType"] == "DateTime"
    assert found["contactid"]["AttributeType"] == "Uniqueidentifier"
    assert "msdyn_gdproptout" in found
    opportunity = api.get("EntityDefinitions(LogicalName='opportunity')/Attributes").json()
    types = {row["LogicalName"]: row["AttributeType"] for row in opportunity["value"]}
    assert types["parentcontactid"] == types["originatingleadid"] == "Lookup"
    missing = api.get("EntityDefinitions(LogicalName='nosuchtable')/Attributes")
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"code", "message"}
    bad = api.get("EntityDefinitions", params={"$select": "Nickname"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "0x80060888"


def test_metadata_calls_spend_the_request_limit(api: httpx.Client, admin: httpx.Client) -> None:
    admin.put("/__emulator/limits", json={"max_requests": 1}).raise_for_status()
    assert api.get("EntityDefinitions").status_code == 200
    assert api.get("EntityDefinitions").status_code == 429


# -- opportunities and the recycle bin's configuration ---------------------------------------


def test_opportunities_filter_by_contact_and_state(api: httpx.Client, admin: httpx.Client) -> None:
    first, second = seed(admin, contacts=people(2))["contacts"]
    (lead,) = seed(admin, leads=people(1))["leads"]
    made = seed(
        admin,
        opportunities=[
            {"name": "Won", "statecode": 1, "parentcontactid@odata.bind": f"/contacts({first})"},
            {"name": "Open", "parentcontactid@odata.bind": f"/contacts({second})"},
            {"name": "Lost", "statecode": 2, "originatingleadid@odata.bind": f"/leads({lead})"},
        ],
    )["opportunities"]

    def names(expression: str) -> list[str]:
        response = api.get("opportunities", params={"$filter": expression, "$select": "name"})
        assert response.status_code == 200, response.text
        return sorted(row["name"] for row in response.json()["value"])

    assert names(f"_parentcontactid_value eq {first}") == ["Won"]
    assert names(
        f"Microsoft.Dynamics.CRM.In(PropertyName='_parentcontactid_value',"
        f"PropertyValues=['{first}','{second}'])"
    ) == ["Open", "Won"]
    assert names("statecode eq 1") == ["Won"]
    assert names(f"_originatingleadid_value eq {lead} and statecode eq 2") == ["Lost"]
    assert len(made) == 3
    unbound = admin.post(
        "/__emulator/seed",
        json={"opportunities": [{"parentcontactid@odata.bind": f"/contacts({MISSING})"}]},
    )
    assert unbound.status_code == 404


def test_recycle_bin_configs_follow_the_setting(api: httpx.Client, admin: httpx.Client) -> None:
    select = {"$select": "name,statecode,isreadyforrecyclebin,cleanupintervalindays"}
    assert api.get("recyclebinconfigs", params=select).json()["value"] == []
    admin.put("/__emulator/settings", json={"recycle_bin_days": 30}).raise_for_status()
    rows = api.get("recyclebinconfigs", params=select).json()["value"]
    assert {row["name"]: row["cleanupintervalindays"] for row in rows} == {
        "organization": 30,
        "contact": -1,
        "lead": -1,
    }
    assert all(row["statecode"] == 0 and row["isreadyforrecyclebin"] for row in rows)
    organization = api.get(
        "recyclebinconfigs", params={"$filter": "name eq 'organization'", **select}
    ).json()["value"]
    assert [row["cleanupintervalindays"] for row in organization] == [30]
    assert api.post("recyclebinconfigs", json={"name": "x"}).status_code == 405


# -- webhooks -------------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint that records what arrives and answers the statuses it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.add_api_route("/hook", self.hook, methods=["POST"])

    async def hook(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.received.append((dict(request.headers), dict(request.query_params), body))
            status = self.statuses.pop(0) if self.statuses else 204
        return Response(status_code=status)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as running:
        yield hooks, f"{running.url}/hook"


@pytest.fixture
def hooks(receiver: tuple[Receiver, str]) -> tuple[Receiver, str]:
    receiver[0].received.clear()
    receiver[0].statuses.clear()
    return receiver


def settle(admin: httpx.Client, count: int) -> list[dict[str, Any]]:
    """The deliveries, once ``count`` of them are done and none is pending."""
    deadline = time.monotonic() + 10
    while True:
        found = admin.get("/__emulator/webhooks/deliveries").json()
        if found["pending"] == 0 and len(found["deliveries"]) >= count:
            deliveries: list[dict[str, Any]] = found["deliveries"]
            return deliveries
        assert time.monotonic() < deadline, found
        time.sleep(0.02)


def test_webhooks_post_the_execution_context_of_committed_writes(
    api: httpx.Client, admin: httpx.Client, hooks: tuple[Receiver, str]
) -> None:
    receiver, url = hooks
    endpoint = {"url": url, "auth": "HttpHeader", "key_name": "x-bridge-key", "key_value": "k1"}
    admin.put("/__emulator/webhooks", json=[endpoint]).raise_for_status()
    seed(admin, contacts=people(1))
    created = api.post("contacts", json={"lastname": "A", "emailaddress1": "a@example.test"})
    contact = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    api.patch(f"contacts({contact})", json={"firstname": "Ann"}, headers={"If-Match": "*"})
    api.delete(f"contacts({contact})")
    send_batch(
        api,
        [
            changeset(
                [
                    http_part("POST", f"{API}leads", {"lastname": "never"}, cid="1"),
                    http_part("PATCH", f"{API}leads({MISSING})", {"lastname": "B"}, "2", True),
                ]
            )
        ],
    )
    deliveries = settle(admin, 3)
    assert [(d["message"], d["statuses"], d["delivered"]) for d in deliveries] == [
        ("Create", [204], True),
        ("Update", [204], True),
        ("Delete", [204], True),
    ]
    (create_h, create_q, create), (_, _, update), (_, _, delete) = receiver.received
    assert create_h["x-bridge-key"] == "k1" and create_q == {}
    assert create_h["x-ms-dynamics-organization"] == "127.0.0.1"
    assert create_h["x-ms-dynamics-entity-name"] == "contact"
    assert create_h["x-ms-dynamics-request-name"] == "Create"
    assert create_h["x-ms-correlation-request-id"] == create["CorrelationId"]
    assert (create["MessageName"], create["PrimaryEntityName"]) == ("Create", "contact")
    assert create["PrimaryEntityId"] == contact
    assert (create["Stage"], create["Mode"], create["Depth"]) == (40, 1, 1)
    assert re.fullmatch(r"/Date\(\d+\)/", create["OperationCreatedOn"])
    assert create["OperationId"] != update["OperationId"]
    assert create["OrganizationId"] == update["OrganizationId"]
    assert create["UserId"] == update["UserId"]
    ((target_key, target),) = [(p["key"], p["value"]) for p in create["InputParameters"]]
    assert target_key == "Target" and target["LogicalName"] == "contact"
    attributes = {pair["key"]: pair["value"] for pair in target["Attributes"]}
    assert attributes["emailaddress1"] == "a@example.test"
    update_target = update["InputParameters"][0]["value"]
    assert {p["key"]: p["value"] for p in update_target["Attributes"]} == {
        "contactid": contact,
        "firstname": "Ann",
    }
    assert delete["InputParameters"][0]["value"] == {
        "LogicalName": "contact",
        "Id": contact,
        "Name": None,
    }


def test_webhook_keys_in_the_query_and_the_one_retry(
    api: httpx.Client, admin: httpx.Client, hooks: tuple[Receiver, str]
) -> None:
    receiver, url = hooks
    endpoints = [
        {"url": url, "auth": "WebhookKey", "key_value": "k2", "messages": ["Create"]},
        {
            "url": url,
            "auth": "HttpQueryString",
            "key_name": "secret",
            "key_value": "k3",
            "messages": ["Update"],
            "entities": ["lead"],
        },
    ]
    admin.put("/__emulator/webhooks", json=endpoints).raise_for_status()
    receiver.statuses[:] = [503, 200]
    lead = api.post("leads", json={"lastname": "L"}).headers["OData-EntityId"]
    assert settle(admin, 1)[0]["statuses"] == [503, 200]
    receiver.statuses[:] = [500]
    api.patch(lead, json={"lastname": "M"}, headers={"If-Match": "*"})
    api.patch(f"contacts({MISSING})", json={"lastname": "C"}, headers={"If-Match": "*"})
    second = settle(admin, 2)[1]
    assert (second["message"], second["statuses"], second["delivered"]) == ("Update", [500], False)
    queries = [query for _, query, _ in receiver.received]
    assert queries == [{"code": "k2"}, {"code": "k2"}, {"secret": "k3"}]
