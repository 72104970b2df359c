"""A Salesforce API emulator that unmodified simple-salesforce 1.12 cannot tell from Salesforce.

``create_app(config)`` returns the ASGI app; ``bridge emulate salesforce`` serves it. It
speaks the paths the bridge uses (docs/vendors/salesforce.md): SOAP and OAuth
logins, REST sObjects, SOQL query/queryAll with paging, sObject Collections, getUpdated and
getDeleted, limits, Bulk API 2.0 ingest and query jobs, SOAP ``emptyRecycleBin``, and
Outbound Messages. Any ``vNN.N`` and an optional trailing slash are accepted; every
``/services/data`` response carries ``Sforce-Limit-Info: api-usage=U/M``.

The org profile (``SalesforceEmulatorConfig.org``, ``bridge emulate salesforce --org``, the
admin API's ``/__emulator/org``) is ``privacy`` (Data Protection and Privacy on) or ``basic``:
no Individual, ContactPointTypeConsent, DataUsePurpose or DataUseLegalBasis, and no
``IndividualId``, answered as a real org answers for objects it lacks (``INVALID_TYPE`` in
SOQL and collections, ``NOT_FOUND`` for their REST resources, absent from the describes).

Admin API (never a vendor path; no auth, no quota), besides the shared ``/faults`` and
``/counters``: ``/__emulator/records`` (seed, read), ``state``, ``reset``, ``org``,
``sessions/expire``, ``settings``, ``fields`` and ``outbound``, each described in
:func:`_admin_router` and served as OpenAPI at ``/__emulator/openapi.json`` (a page at
``/__emulator/docs``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge_sandbox.emulators.common import (
    ADMIN_PREFIX,
    ADMIN_TAG,
    DOCS_URL,
    OPENAPI_URL,
    AddHeaders,
    EmulatorControl,
    FaultKind,
    describe_api,
    install,
)
from bridge_sandbox.emulators.salesforce_bulk import BulkJobs
from bridge_sandbox.emulators.salesforce_config import (
    Org,
    OutboundMessageConfig,
    SalesforceEmulatorConfig,
    SettingsUpdate,
)
from bridge_sandbox.emulators.salesforce_model import (
    ApiError,
    CustomField,
    SalesforceError,
    not_found,
)
from bridge_sandbox.emulators.salesforce_outbound import OutboundDispatcher
from bridge_sandbox.emulators.salesforce_soap import (
    INVALID_LOGIN,
    SoapCall,
    SoapFault,
    empty_recycle_bin_response,
    login_response,
    parse_call,
)
from bridge_sandbox.emulators.salesforce_state import (
    QUOTA_EXCEEDED,
    USER_ID,
    SalesforceState,
    SeedError,
)

__all__ = ["SalesforceEmulatorConfig", "create_app"]

VERSION = re.compile(r"^\d{1,3}\.\d$")
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SERVICE_PREFIX = "/services/"
JsonObject = Annotated[dict[str, Any], Body()]


def create_app(config: SalesforceEmulatorConfig | None = None) -> ASGIApp:
    """The emulator as an ASGI app, wrapped by the shared fault and counter middleware."""
    config = config or SalesforceEmulatorConfig()
    state = SalesforceState(config)
    bulk = BulkJobs(state)
    outbound = OutboundDispatcher(state)
    app = FastAPI(
        title="Salesforce emulator",
        description=_description(config),
        redirect_slashes=False,
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
    )
    app.include_router(_data_router(state, bulk))
    app.include_router(_login_router(state))
    app.include_router(_admin_router(state, bulk, outbound))
    app.add_exception_handler(SalesforceError, _on_salesforce_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)

    async def limit_info(request: Request, response: Response) -> dict[str, str]:
        if not request.url.path.startswith("/services/data"):
            return {}
        used, maximum = state.api_usage()
        return {"Sforce-Limit-Info": f"api-usage={used}/{maximum}"}

    app.add_middleware(AddHeaders, headers=limit_info)
    app.add_middleware(_TrimTrailingSlash)
    describe_api(app, "Salesforce")
    return install(app, EmulatorControl(), _fault_response)


def _description(config: SalesforceEmulatorConfig) -> str:
    logins = (
        f"the configured username `{config.username}`, its password and security token"
        if config.strict_auth
        else "any username and password (`strict_auth` off)"
    )
    fields = "; ".join(
        f"{sobject}: {', '.join(f.name for f in custom)}"
        for sobject, custom in config.custom_fields.items()
    )
    privacy = config.org == "privacy"
    seeded = config.seed_legal_bases and privacy
    bases = " and the six GDPR `DataUseLegalBasis` rows" if seeded else ""
    profile = (
        "Data Protection and Privacy on"
        if privacy
        else "no privacy objects: Individual, ContactPointTypeConsent, DataUsePurpose and "
        "DataUseLegalBasis answer `INVALID_TYPE`"
    )
    return (
        f"An emulated Salesforce org (organization id `{config.organization_id}`; profile "
        f"`{config.org}`, {profile}; `PUT /__emulator/org` changes it), in memory. "
        f"It starts with no records but its schema's custom fields ({fields}){bases}. Log in "
        f"with {logins}, by SOAP or OAuth. Outbound messages are off until "
        "`PUT /__emulator/outbound` names an endpoint."
    )


class _TrimTrailingSlash:
    """Salesforce answers ``query/`` like ``query``; routes are declared without the slash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(SERVICE_PREFIX) and path.endswith("/"):
            scope["path"] = path.rstrip("/")
        await self.app(scope, receive, send)


def _fault_response(kind: FaultKind, status: int) -> Response:
    """An injected fault as Salesforce words it: rate limits are a 403, not a 429."""
    if kind == "rate_limit":
        return JSONResponse([QUOTA_EXCEEDED.rest()], status_code=403)
    code = "SERVER_UNAVAILABLE" if status == 503 else "UNKNOWN_EXCEPTION"
    return JSONResponse(
        [{"message": "An unexpected error occurred. Please try again.", "errorCode": code}],
        status_code=status,
    )


def _vendor_path(request: Request) -> bool:
    return request.url.path.startswith(SERVICE_PREFIX)


async def _on_salesforce_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SalesforceError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _on_invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if not _vendor_path(request):
        return await request_validation_exception_handler(request, exc)
    problems = exc.errors()
    problem = problems[0].get("msg", "invalid") if problems else "invalid request body"
    error = ApiError("JSON_PARSER_ERROR", f"The request body could not be read: {problem}")
    return JSONResponse([error.rest()], status_code=400)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if not _vendor_path(request):
        return await http_exception_handler(request, exc)
    if exc.status_code == 405:
        error = ApiError(
            "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed for this resource"
        )
        return JSONResponse([error.rest()], status_code=405)
    return JSONResponse(not_found().body, status_code=404)


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def _csv(text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text, media_type="text/csv; charset=UTF-8", headers=headers)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") and token.strip() else None


def _instance_url(state: SalesforceState, request: Request) -> str:
    """Where this org answers: the configured URL, else the one it was called on."""
    return state.config.instance_url or f"{request.url.scheme}://{request.url.netloc}"


def _batch_size(options: str | None) -> int | None:
    match = re.search(r"batchSize\s*=\s*(\d+)", options or "")
    return int(match.group(1)) if match else None


class CollectionBody(BaseModel):
    """The body of sObject Collections calls, in Salesforce's spelling."""

    allOrNone: bool = False
    records: list[dict[str, Any]] = Field(default_factory=list)


def _data_router(state: SalesforceState, bulk: BulkJobs) -> APIRouter:
    """``/services/data/vXX.X/...``: every call needs a session and spends quota."""

    def admit(request: Request, version: str) -> None:
        if not VERSION.match(version):
            raise not_found()
        state.begin_call(_bearer(request))
        state.instance_url = _instance_url(state, request)

    router = APIRouter(prefix="/services/data/v{version}", dependencies=[Depends(admit)])

    @router.get("")
    def resources(version: str) -> Response:
        base = f"/services/data/v{version}"
        names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
        return _json({name: f"{base}/{name}" for name in names})

    @router.get("/limits")
    def limits() -> Response:
        return _json(state.limits())

    def query_route(include_deleted: bool) -> Callable[..., Response]:
        def run(request: Request, version: str, q: str | None = None) -> Response:
            if q is None:
                error = ApiError("MALFORMED_QUERY", "A query string has to be specified")
                raise SalesforceError(400, error)
            size = _batch_size(request.headers.get("sforce-query-options"))
            return _json(state.query(q, include_deleted, size, version))

        return run

    def query_more(locator: str, version: str) -> Response:
        return _json(state.query_more(locator, version))

    for endpoint, include_deleted in (("query", False), ("queryAll", True)):
        router.add_api_route(f"/{endpoint}", query_route(include_deleted), methods=["GET"])
        router.add_api_route(f"/{endpoint}/{{locator}}", query_more, methods=["GET"])

    @router.get("/sobjects")
    def describe_global(version: str) -> Response:
        return _json(state.describe_global(version))

    @router.get("/sobjects/{sobject}")
    def sobject_info(sobject: str, version: str) -> Response:
        describe = state.describe(sobject, version)
        describe.pop("fields")
        return _json({"objectDescribe": describe, "recentItems": []})

    @router.get("/sobjects/{sobject}/describe")
    def describe(sobject: str, version: str) -> Response:
        return _json(state.describe(sobject, version))

    @router.get("/sobjects/{sobject}/updated")
    def updated(sobject: str, start: str = "", end: str = "") -> Response:
        return _json(state.updated(sobject, _plus(start), _plus(end)))

    @router.get("/sobjects/{sobject}/deleted")
    def deleted(sobject: str, start: str = "", end: str = "") -> Response:
        return _json(state.deleted(sobject, _plus(start), _plus(end)))

    @router.post("/sobjects/{sobject}")
    def create(sobject: str, payload: JsonObject) -> Response:
        record_id = state.create(sobject, payload)
        return _json({"id": record_id, "success": True, "errors": []}, 201)

    @router.get("/sobjects/{sobject}/{record_id}")
    def get(sobject: str, record_id: str, version: str, fields: str | None = None) -> Response:
        names = [name.strip() for name in fields.split(",")] if fields else None
        return _json(state.get(sobject, record_id, names, version))

    @router.patch("/sobjects/{sobject}/{record_id}")
    def update(
        sobject: str,
        record_id: str,
        payload: JsonObject,
    ) -> Response:
        state.update(sobject, record_id, payload)
        return Response(status_code=204)

    @router.delete("/sobjects/{sobject}/{record_id}")
    def delete(sobject: str, record_id: str) -> Response:
        state.delete(sobject, record_id)
        return Response(status_code=204)

    @router.get("/sobjects/{sobject}/{field}/{value}")
    def get_by_external_id(sobject: str, field: str, value: str, version: str) -> Response:
        return _json(state.get_by_external_id(sobject, field, value, version))

    @router.patch("/sobjects/{sobject}/{field}/{value}")
    def upsert(
        sobject: str,
        field: str,
        value: str,
        version: str,
        payload: JsonObject,
        updateOnly: bool = False,
    ) -> Response:
        record_id, created = state.upsert(
            sobject, field, value, payload, version, update_only=updateOnly
        )
        if not created and float(version) < 46:
            return Response(status_code=204)
        body = {"id": record_id, "success": True, "errors": [], "created": created}
        return _json(body, 201 if created else 200)

    @router.post("/composite/sobjects")
    def create_many(body: CollectionBody) -> Response:
        return _json(state.create_many(body.records, body.allOrNone))

    @router.patch("/composite/sobjects")
    def update_many(body: CollectionBody) -> Response:
        return _json(state.update_many(body.records, body.allOrNone))

    @router.delete("/composite/sobjects")
    def delete_many(ids: str = "", allOrNone: bool = False) -> Response:
        return _json(state.delete_many([i for i in ids.split(",") if i], allOrNone))

    @router.get("/composite/sobjects/{sobject}")
    def retrieve_many(sobject: str, version: str, ids: str = "", fields: str = "") -> Response:
        names = [name for name in fields.split(",") if name]
        id_list = [i for i in ids.split(",") if i]
        return _json(state.retrieve_many(sobject, id_list, names, version))

    @router.patch("/composite/sobjects/{sobject}/{field}")
    def upsert_many(sobject: str, field: str, version: str, body: CollectionBody) -> Response:
        return _json(state.upsert_many(sobject, field, body.records, body.allOrNone, version))

    _add_bulk_routes(router, bulk)
    return router


def _plus(value: str) -> str:
    """An unencoded ``+`` in a query string arrives as a space; Salesforce reads it as ``+``."""
    return value.replace(" ", "+")


def _add_bulk_routes(router: APIRouter, bulk: BulkJobs) -> None:
    @router.post("/jobs/ingest")
    def create_ingest(version: str, payload: JsonObject) -> Response:
        return _json(bulk.create_ingest(payload, version))

    @router.put("/jobs/ingest/{job_id}/batches")
    async def upload(job_id: str, request: Request) -> Response:
        bulk.upload(job_id, await request.body())
        return Response(status_code=201)

    @router.get("/jobs/ingest/{job_id}/{results}")
    def ingest_results(job_id: str, results: str) -> Response:
        return _csv(bulk.ingest_results(job_id, results))

    @router.post("/jobs/query")
    def create_query(version: str, payload: JsonObject) -> Response:
        return _json(bulk.create_query(payload, version))

    @router.get("/jobs/query/{job_id}/results")
    def query_results(
        job_id: str,
        locator: str | None = None,
        maxRecords: int | None = None,
    ) -> Response:
        text, count, following = bulk.query_results(job_id, locator, maxRecords)
        return _csv(text, {"Sforce-NumberOfRecords": str(count), "Sforce-Locator": following})

    for kind in ("ingest", "query"):
        _add_job_routes(router, bulk, kind)


def _add_job_routes(router: APIRouter, bulk: BulkJobs, kind: str) -> None:
    """Listing, reading, closing or aborting, and deleting jobs work alike for both kinds."""

    def list_jobs() -> Response:
        return _json(bulk.jobs(kind))

    def job_info(job_id: str) -> Response:
        return _json(bulk.info(job_id, kind))

    def change_state(job_id: str, payload: JsonObject) -> Response:
        return _json(bulk.set_state(job_id, kind, payload.get("state")))

    def delete_job(job_id: str) -> Response:
        bulk.delete(job_id, kind)
        return Response(status_code=204)

    router.add_api_route(f"/jobs/{kind}", list_jobs, methods=["GET"])
    router.add_api_route(f"/jobs/{kind}/{{job_id}}", job_info, methods=["GET"])
    router.add_api_route(f"/jobs/{kind}/{{job_id}}", change_state, methods=["PATCH"])
    router.add_api_route(f"/jobs/{kind}/{{job_id}}", delete_job, methods=["DELETE"])


def _login_router(state: SalesforceState) -> APIRouter:
    """SOAP partner API (login, emptyRecycleBin) and the OAuth 2.0 token endpoint."""
    router = APIRouter()

    @router.post("/services/Soap/u/{version}")
    async def soap(version: str, request: Request) -> Response:
        if not VERSION.match(version):
            raise not_found()
        try:
            call = parse_call(await request.body())
            if call.operation == "login":
                if not state.accepts(
                    username=call.argument("username"), password=call.argument("password")
                ):
                    raise INVALID_LOGIN
                body = login_response(
                    session_id=state.open_session(),
                    instance_url=_instance_url(state, request),
                    version=version,
                    organization_id=state.config.organization_id,
                    username=call.argument("username"),
                    user_id=USER_ID,
                    session_seconds=int(state.config.session_lifetime_seconds),
                )
            elif call.operation == "emptyRecycleBin":
                body = empty_recycle_bin_response(_empty_recycle_bin(state, call))
            else:
                raise SoapFault("INVALID_OPERATION", f"Operation {call.operation} not supported")
        except SoapFault as fault:
            return Response(fault.xml(), status_code=500, media_type="text/xml; charset=utf-8")
        return Response(body, media_type="text/xml; charset=utf-8")

    @router.post("/services/oauth2/token")
    async def token(request: Request) -> Response:
        body = (await request.body()).decode(errors="replace")
        form = {key: values[0] for key, values in parse_qs(body).items()}
        grant = form.get("grant_type")
        if grant == "password":
            accepted = state.accepts(
                consumer_key=form.get("client_id"),
                consumer_secret=form.get("client_secret"),
                username=form.get("username"),
                password=form.get("password"),
            )
            refusal = ("invalid_grant", "authentication failure")
        elif grant == "client_credentials":
            key, secret = _client_credentials(request, form)
            accepted = state.accepts(consumer_key=key, consumer_secret=secret)
            refusal = ("invalid_client", "invalid client credentials")
        elif grant == JWT_GRANT:
            claims = _jwt_claims(form.get("assertion", ""))
            accepted = claims is not None and state.accepts(
                consumer_key=claims.get("iss"), username=claims.get("sub")
            )
            refusal = ("invalid_grant", "invalid assertion")
        else:
            accepted, refusal = False, ("unsupported_grant_type", "grant type not supported")
        if not accepted:
            return _json({"error": refusal[0], "error_description": refusal[1]}, 400)
        return _json(_token_response(state, _instance_url(state, request)))

    return router


def _empty_recycle_bin(state: SalesforceState, call: SoapCall) -> list[tuple[str, ApiError | None]]:
    try:
        state.begin_call(call.session_id)
        return state.empty_recycle_bin(call.arguments.get("ids", []))
    except SalesforceError as exc:
        error = exc.errors[0]
        if error.code == "INVALID_SESSION_ID":
            raise SoapFault(error.code, "Invalid Session ID found in SessionHeader") from exc
        raise SoapFault(error.code, error.message) from exc


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            key, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None, None
        return key, secret
    return form.get("client_id"), form.get("client_secret")


def _jwt_claims(assertion: str) -> dict[str, Any] | None:
    """The JWT's claims. The signature is not checked: the emulator holds no certificate."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        expired = float(claims.get("exp", 0)) < time.time()
    except (ValueError, TypeError, AttributeError):
        return None
    return None if expired else dict(claims)


def _token_response(state: SalesforceState, instance_url: str) -> dict[str, Any]:
    identity = f"https://login.salesforce.com/id/{state.config.organization_id}/{USER_ID}"
    issued_at = str(int(time.time() * 1000))
    digest = hmac.new(
        state.config.consumer_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
    ).digest()
    return {
        "access_token": state.open_session(),
        "instance_url": instance_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": base64.b64encode(digest).decode(),
        "scope": "api",
    }


class SeedBody(BaseModel):
    records: list[dict[str, Any]]


class FieldBody(CustomField):
    object: str


class OrgBody(BaseModel):
    org: Org


class OutboundBody(BaseModel):
    organization_id: str | None = Field(None, pattern=r"^00D[A-Za-z0-9]{15}$")
    messages: list[OutboundMessageConfig]


def _admin_router(
    state: SalesforceState, bulk: BulkJobs, outbound: OutboundDispatcher
) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=[ADMIN_TAG])

    @router.post("/records", status_code=201)
    def seed(body: SeedBody) -> Response:
        """Seed records, ``{"records": [{"attributes": {"type": "Contact"}, "LastName": ...},
        ...]}``: validated as the API would, but they may also set CreatedDate,
        LastModifiedDate, SystemModstamp, IsDeleted and read-only fields (Lead conversion).
        201 ``{"ids": [...]}``; a bad row is a 400 ``{"index": i, "errors": [...]}`` and
        nothing is kept. Seeding fires no outbound message."""
        try:
            return _json({"ids": state.seed(body.records)}, 201)
        except SeedError as exc:
            errors = [error.rest() for error in exc.error.errors]
            return _json({"index": exc.index, "errors": errors}, 400)

    @router.get("/records")
    def records(type: str | None = None, include_deleted: bool = True) -> Response:
        """Every record (of one ``type``, e.g. ``Contact``) with every field:
        ``{"records": [...]}``; ``include_deleted`` takes in the recycle bin."""
        return _json({"records": state.dump(type, include_deleted)})

    @router.get("/state")
    def summary() -> Response:
        """Counts per object, the ``recycle_bin`` and ``hard_deleted`` rows
        (``[{"id", "type", "deletedDate"}]``), open sessions and settings."""
        return _json(state.summary())

    @router.post("/reset", status_code=204)
    def reset() -> Response:
        """Back to the state the emulator started in: no records but the defaults, no
        sessions, no Bulk jobs, the configured outbound messages only."""
        state.reset()
        bulk.reset()
        outbound.reset()
        return Response(status_code=204)

    @router.get("/org")
    def org() -> Response:
        """The org profile, ``{"org": "privacy"}`` or ``{"org": "basic"}``, and the objects
        it serves (``sobjects``), as the global describe lists them."""
        names = sorted(o["name"] for o in state.describe_global("59.0")["sobjects"])
        return _json({"org": state.config.org, "sobjects": names})

    @router.put("/org")
    def change_org(body: OrgBody) -> Response:
        """Become an org of another profile, ``{"org": "basic"}``: objects and fields differ,
        so it starts over as ``reset`` does, empty but for that profile's defaults; later
        resets keep the profile."""
        state.reset(body.org)
        bulk.reset()
        outbound.reset()
        return org()

    @router.post("/sessions/expire")
    def expire_sessions() -> Response:
        """End every session now: ``{"expired": n}``; clients must log in again."""
        return _json({"expired": state.expire_sessions()})

    @router.get("/settings")
    def settings() -> Response:
        """``strict_auth``, ``session_lifetime_seconds``, ``daily_api_limit``,
        ``api_requests_used``, ``hard_delete_permission``, ``undeletable_ids`` as they are
        now."""
        return _json(state.settings())

    @router.patch("/settings")
    def change_settings(update: SettingsUpdate) -> Response:
        """Change the settings given; the others stay as they are."""
        return _json(state.update_settings(update))

    @router.post("/fields", status_code=201)
    def add_field(body: FieldBody) -> Response:
        """Add a custom field to an object, ``{"object": "Contact", "name": "Ext__c",
        "type": "string", "external_id": true, ...}``: 201 with the field's describe."""
        spec = CustomField.model_validate(body.model_dump(exclude={"object"}))
        return _json(state.add_custom_field(body.object, spec), 201)

    @router.get("/outbound")
    def outbound_status() -> Response:
        """Outbound messages and their delivery: the organization id they carry, the
        configured messages, ``pending``/``delivered``/``dropped`` counts, ``posts``, and
        every notification with its status, attempts and last error."""
        return _json(outbound.status())

    @router.put("/outbound")
    def configure_outbound(body: OutboundBody) -> Response:
        """Replace the outbound messages, as Setup would: each sends a SOAP notification to
        ``endpoint_url`` (the bridge's ``/webhooks/salesforce/<token>``) when one of its
        ``watched_fields`` changes on an ``object``, retried until acknowledged; an
        ``organization_id`` also changes the org's id (which the bridge checks). An empty
        ``messages`` list turns them off."""
        outbound.configure(body.messages)
        if body.organization_id:
            state.set_organization_id(body.organization_id)
        return _json(outbound.status())

    return router
