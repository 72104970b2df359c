"""The Dataverse emulator over real HTTP, driven the way an httpx + msal adapter drives it.

Each test states one behaviour of Dataverse (docs/vendors/dynamics.md) that the adapter will
rely on: the token endpoint and application users, the upsert trap, paging, change
tracking, ``$batch``, service protection limits, consent4 rows and the recycle bin.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

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
    admin.post("/__emulator/reset").raise_for_status()
    admin.delete("/__emulator/faults").raise_for_status()
    admin.delete("/__emulator/counters").raise_for_status()
    admin.put("/__emulator/limits", json=ServiceLimits().model_dump()).raise_for_status()
    admin.put("/__emulator/settings", json={"recycle_bin_days": None}).raise_for_status()


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
