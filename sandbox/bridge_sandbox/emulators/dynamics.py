"""A Dataverse (Dynamics 365) emulator: the Web API paths the bridge uses, from memory.

It serves Entra ID's client-credentials token endpoint and the Web API v9.2 over contacts,
leads, opportunities and Customer Insights - Journeys' consent tables
(``msdynmkt_contactpointconsent4s``, purposes, topics), with OData paging, the ``$filter``
subset, ``$batch`` changesets, change tracking, the upsert trap, string lengths, service
protection limits, an optional recycle bin (and ``recyclebinconfigs``), ``EntityDefinitions``
metadata and webhooks, as docs/vendors/dynamics.md describes them. ``create_app()`` is what
``bridge emulate dynamics`` serves; the admin API (``/__emulator/...``) seeds and inspects it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from bridge_sandbox.emulators.common import (
    DOCS_URL,
    OPENAPI_URL,
    EmulatorControl,
    FaultKind,
    describe_api,
    install,
)
from bridge_sandbox.emulators.dynamics_admin import admin_routes
from bridge_sandbox.emulators.dynamics_auth import (
    OPENID_PATH,
    TOKEN_PATH,
    AppRegistration,
    Apps,
    Directory,
)
from bridge_sandbox.emulators.dynamics_http import (
    API_ROOT,
    REQUESTS_LIMIT,
    Call,
    DataverseError,
    Headers,
    Reply,
)
from bridge_sandbox.emulators.dynamics_limits import ServiceLimits, ServiceProtection
from bridge_sandbox.emulators.dynamics_state import DynamicsState, build_tables
from bridge_sandbox.emulators.dynamics_webapi import (
    BATCH,
    DEFINITIONS,
    DELETE_HISTORY,
    WebApi,
    not_a_segment,
)
from bridge_sandbox.emulators.dynamics_webhooks import Webhooks

__all__ = ["AppRegistration", "DynamicsEmulatorConfig", "ServiceLimits", "create_app"]


class DynamicsEmulatorConfig(BaseModel):
    """How one emulated environment behaves; by default one app that is an application user."""

    tenant_id: str = "11111111-2222-3333-4444-555555555555"
    apps: list[AppRegistration] = Field(default_factory=lambda: Apps().apps)
    token_lifetime_s: int = Field(3599, ge=1)
    limits: ServiceLimits = Field(default_factory=ServiceLimits)
    lawful_basis_field: str = Field("cb_lawfulbasis", pattern=r"^[a-z][a-z0-9_]*$")
    sales_solution: bool = Field(True, description="msdyn_gdproptout exists on contact and lead")
    recycle_bin_days: int | None = Field(None, ge=1, le=90, description="None: the bin is off")
    change_expiry_days: float = Field(7, gt=0, description="delta tokens expire after this")
    untracked_tables: list[str] = Field(
        default_factory=list,
        description="logical names of tables whose metadata says change tracking is off",
    )
    organization_id: str = "99999999-8888-7777-6666-555555555555"


def _call(request: Request, body: bytes) -> Call:
    path = request.url.path.removeprefix(API_ROOT).lstrip("/")
    query = dict(parse_qsl(request.url.query, keep_blank_values=True))
    base = f"{request.url.scheme}://{request.url.netloc}"
    return Call(request.method, path, query, Headers.of(request.headers.items()), body, base)


def _fault_response(kind: FaultKind, status: int) -> Response:
    """Injected faults look like Dataverse's own: a request-limit 429 or a 5xx body."""
    if kind == "rate_limit":
        message = "Number of requests exceeded the limit of 6000 over time window of 300 seconds."
        error = DataverseError(429, REQUESTS_LIMIT, message, {"Retry-After": "1"})
    else:
        error = DataverseError(status, "", "An unexpected error occurred.")
    return error.reply().response()


def web_api_routes(
    app: FastAPI, web: WebApi, directory: Directory, protection: ServiceProtection
) -> None:
    """One route per table shape (so counters name them), all answered by ``web``."""

    async def endpoint(request: Request) -> Response:
        call = _call(request, await request.body())
        try:
            user = directory.caller(request.headers.get("authorization", ""), call.base_url)
            call.user = user
            with protection.running(user):
                if call.path == BATCH:
                    return web.batch(call, lambda n: protection.admit(user, n))
                protection.admit(user)
                reply = web.execute(call)
        except DataverseError as error:
            reply = Reply(401, None, error.headers) if error.status == 401 else error.reply()
            return reply.response()
        reply.headers |= protection.remaining(user)
        return reply.response()

    def route(path: str, methods: tuple[str, ...], name: str) -> None:
        for method in methods:  # one operation each, so OpenAPI ids stay unique
            app.add_api_route(path, endpoint, methods=[method], name=f"{method.lower()}_{name}")

    for name in web.state.tables:  # writes to a read-only table get the Web API's 405
        route(f"{API_ROOT}/{name}", ("GET", "POST"), name)
        route(f"{API_ROOT}/{name}({{record_id}})", ("GET", "PATCH", "DELETE"), f"{name}_item")
    route(f"{API_ROOT}/{DEFINITIONS}", ("GET",), "entity_definitions")
    route(f"{API_ROOT}/{DEFINITIONS}({{key}})", ("GET",), "entity_definition")
    route(f"{API_ROOT}/{DEFINITIONS}({{key}})/Attributes", ("GET",), "entity_attributes")
    route(f"{API_ROOT}/{DEFINITIONS}({{key}})/Attributes/{{cast}}", ("GET",), "typed_attributes")
    route(f"{API_ROOT}/{BATCH}", ("POST",), "batch")
    route(f"{API_ROOT}/{DELETE_HISTORY}", ("POST",), "delete_record_change_history")

    @app.api_route(
        f"{API_ROOT}/{{segment:path}}",
        methods=["GET", "POST", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def unknown(segment: str) -> Response:
        return not_a_segment(segment.split("(")[0]).reply().response()


def create_app(config: DynamicsEmulatorConfig | None = None) -> ASGIApp:
    """A fresh emulated environment; serve the result with uvicorn (the outermost wrapper)."""
    config = config or DynamicsEmulatorConfig()
    state = DynamicsState(
        build_tables(config.lawful_basis_field, config.sales_solution),
        config.recycle_bin_days,
        config.change_expiry_days,
        untracked=frozenset(config.untracked_tables),
    )
    webhooks = Webhooks(config.organization_id)
    directory = Directory(config.tenant_id, Apps(apps=config.apps), config.token_lifetime_s)
    protection = ServiceProtection(config.limits)
    app = FastAPI(
        title="Dataverse (Dynamics 365) API emulator",
        description=(
            f"An emulated Dataverse environment in tenant {config.tenant_id}, in memory. Get a "
            f"token at `POST /{config.tenant_id}/oauth2/v2.0/token` (client credentials, scope "
            f"`<this URL>/.default`) with one of the configured apps "
            f"({', '.join(a.client_id for a in config.apps)}), then call `{API_ROOT}/`."
        ),
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
    )
    app.state.dynamics = state
    app.add_api_route(OPENID_PATH, directory.openid_configuration, methods=["GET"], name="openid")
    app.add_api_route(TOKEN_PATH, directory.token, methods=["POST"], name="token")
    web_api_routes(app, WebApi(state, webhooks), directory, protection)
    app.include_router(admin_routes(state, directory, protection, webhooks))
    describe_api(app, "Dataverse")
    return install(app, EmulatorControl(), _fault_response)
