"""A HubSpot API emulator that hubspot-api-client 12 cannot tell from HubSpot on our paths.

It serves CRM contacts v3 (CRUD, batch, search, GDPR delete, the ``hs_legal_basis`` property),
communication preferences v3 and v4, HubSpot's rate limits and headers, the scopes a token
holds on each Marketing Hub tier (:mod:`bridge_sandbox.emulators.hubspot_tiers`) and signed
webhooks, from memory, as docs/vendors/hubspot.md describes them. ``create_app()`` is what
``bridge emulate hubspot`` serves; the admin API (``/__emulator/...``) seeds and inspects it.
The domain rules live in :mod:`bridge_sandbox.emulators.hubspot_state`; the handlers here only parse
and shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from bridge_sandbox.emulators.common import (
    ADMIN_PREFIX,
    DOCS_URL,
    OPENAPI_URL,
    AddHeaders,
    EmulatorControl,
    FaultKind,
    describe_api,
    install,
)
from bridge_sandbox.emulators.hubspot_admin import admin_routes
from bridge_sandbox.emulators.hubspot_http import (
    HubSpotError,
    bad_request,
    batch_envelope,
    batch_response,
    missing_scopes,
    now,
    rate_limited,
    server_error,
)
from bridge_sandbox.emulators.hubspot_limits import RateLimiter, RateLimits
from bridge_sandbox.emulators.hubspot_properties import PropertyDef, PropertyType
from bridge_sandbox.emulators.hubspot_search import Scalar, SearchRequest
from bridge_sandbox.emulators.hubspot_state import (
    HubSpotState,
    LegalBasis,
    StatusState,
    SubscriptionDefinition,
)
from bridge_sandbox.emulators.hubspot_tiers import PUBLISHED_LIMITS, Account, Profile
from bridge_sandbox.emulators.hubspot_webhooks import WebhookDispatcher

__all__ = ["HubSpotEmulatorConfig", "Profile", "RateLimits", "SubscriptionDefinition", "create_app"]

CONTACTS = "/crm/v3/objects/contacts"
SEARCH_PATH = f"{CONTACTS}/search"
PREFS_V3 = "/communication-preferences/v3"
PREFS_V4 = "/communication-preferences/v4"
# The person's preference page: on the portal's website, not the API (no token, no limits).
PREFERENCE_PAGE = "/hs/manage-preferences"
PRIVATE_APP_INFO = "/oauth/v2/private-apps/get/access-token-info"
OAUTH_INFO = "/oauth/v1/access-tokens"
APP_ID, USER_ID = 1_234_567, 7_654_321  # the emulated private app and the user who made it
MAX_BATCH = 100
MAX_PAGE = 100
CONTACT_OBJECT_TYPES = ("contacts", "contact", "0-1")
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
DEFAULT_DEFINITIONS = (
    SubscriptionDefinition(
        id="1",
        name="Marketing Information",
        description="Marketing offers and updates.",
        is_default=True,
    ),
    SubscriptionDefinition(
        id="2", name="Product Updates", description="Product news and release notes."
    ),
    SubscriptionDefinition(
        id="3",
        name="One to One",
        description="One to one emails.",
        purpose="Sales",
        is_default=True,
        is_internal=True,
    ),
)


class HubSpotEmulatorConfig(BaseModel):
    """How one emulator instance behaves; by default an Enterprise portal's private app."""

    strict_auth: bool = Field(False, description="accept only access_tokens (else any bearer)")
    access_tokens: list[str] = Field(default_factory=list)
    portal_id: int = 62515
    profile: Profile = Field(default_factory=Profile)
    rate_limits: RateLimits | None = Field(
        None, description="the limits calls are held to; none given: the tier's published ones"
    )
    webhook_retry_delays_s: list[float] = Field(
        default_factory=lambda: [0.5 * 2**n for n in range(10)],
        max_length=10,
        description="delay before each retry; HubSpot spreads 10 retries over 24 hours",
    )
    webhook_timeout_s: float = Field(5.0, gt=0, description="slower answers count as failures")
    subscription_definitions: list[SubscriptionDefinition] = Field(
        default_factory=lambda: list(DEFAULT_DEFINITIONS)
    )
    custom_properties: list[str] = Field(
        default_factory=list, description="extra writable string properties of contacts"
    )


# -- request bodies ---------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", coerce_numbers_to_str=True)


class ContactInput(_Body):
    properties: dict[str, Scalar | None] = Field(default_factory=dict)


class ObjectId(_Body):
    id: str


class BatchIds(_Body):
    inputs: list[ObjectId]


class BatchRead(BatchIds):
    id_property: str | None = Field(None, alias="idProperty")
    properties: list[str] = Field(default_factory=list)
    properties_with_history: list[str] = Field(default_factory=list, alias="propertiesWithHistory")


class BatchWriteItem(ContactInput):
    id: str | None = None
    id_property: str | None = Field(None, alias="idProperty")
    object_write_trace_id: str | None = Field(None, alias="objectWriteTraceId")


class BatchWrite(_Body):
    inputs: list[BatchWriteItem]


class PropertyOption(_Body):
    label: str
    value: str


class PropertyCreate(_Body):
    """``PropertyCreate``: what a portal's own property is made of."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    type: PropertyType
    field_type: str = Field(alias="fieldType")
    group_name: str = Field(alias="groupName")
    options: list[PropertyOption] = Field(default_factory=list)


class GdprDelete(_Body):
    object_id: str = Field(alias="objectId")
    id_property: str | None = Field(None, alias="idProperty")


class V3StatusChange(_Body):
    email_address: str = Field(alias="emailAddress")
    subscription_id: str = Field(alias="subscriptionId")
    legal_basis: LegalBasis | None = Field(None, alias="legalBasis")
    legal_basis_explanation: str | None = Field(None, alias="legalBasisExplanation")


class V4StatusChange(_Body):
    channel: Literal["EMAIL"]
    status_state: StatusState = Field(alias="statusState")
    subscription_id: str = Field(alias="subscriptionId")
    legal_basis: LegalBasis | None = Field(None, alias="legalBasis")
    legal_basis_explanation: str | None = Field(None, alias="legalBasisExplanation")


class V4BatchWriteItem(V4StatusChange):
    subscriber_id_string: str = Field(alias="subscriberIdString")


class V4BatchWrite(_Body):
    inputs: list[V4BatchWriteItem]


class V4Subscribers(_Body):
    inputs: list[str]


class LinksRequest(_Body):
    subscriber_id_string: str = Field(alias="subscriberIdString")
    subscription_id: str | None = Field(None, alias="subscriptionId")
    language: str | None = None


# -- shared handler plumbing ----------------------------------------------------------------

Names = Annotated[list[str] | None, Query()]
HistoryNames = Annotated[list[str] | None, Query(alias="propertiesWithHistory")]
IdProperty = Annotated[str | None, Query(alias="idProperty")]
Channel = Annotated[Literal["EMAIL"], Query()]
Item = TypeVar("Item")


def _names(values: list[str] | None) -> list[str] | None:
    """Query lists arrive repeated (``?p=a&p=b``, as the SDK sends them) or comma-separated."""
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _no_content() -> Response:
    return Response(status_code=204)


def _check_batch(count: int) -> None:
    if count > MAX_BATCH:
        raise bad_request(f"Batch input size {count} exceeds the limit of {MAX_BATCH} inputs")


def _each(
    inputs: Iterable[Item], run: Callable[[Item], Any], key: Callable[[Item], str]
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Run a v4 batch input by input, collecting HubSpot errors for a 207."""
    results: list[Any] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        try:
            results.append(run(item))
        except HubSpotError as exc:
            exc.context = (exc.context or {}) | {"subscriberIdString": [key(item)]}
            errors.append(exc.standard_error())
    return results, errors


def _check_token(config: HubSpotEmulatorConfig, token: str) -> None:
    """401 ``INVALID_AUTHENTICATION`` for a token the portal does not know."""
    if not token.strip() or (config.strict_auth and token.strip() not in config.access_tokens):
        raise HubSpotError(401, AUTH_MESSAGE, "INVALID_AUTHENTICATION")


def _guard(
    config: HubSpotEmulatorConfig, limiter: RateLimiter, account: Account
) -> Callable[[Request], None]:
    """Authentication, the rate limits, then the token's scopes: what every vendor call (not
    admin) passes first. The token-info routes take the token in their request instead."""

    def guard(request: Request) -> None:
        path = request.url.path
        if path.startswith((ADMIN_PREFIX, PREFERENCE_PAGE)):
            return
        if path != PRIVATE_APP_INFO and not path.startswith(OAUTH_INFO):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            _check_token(config, token if scheme.lower() == "bearer" else "")
        policy = limiter.admit(search=path == SEARCH_PATH)
        if policy is not None:
            raise rate_limited(policy)
        route = request.scope.get("route")
        missing = account.profile.missing(f"{request.method} {getattr(route, 'path', path)}")
        if missing:
            raise missing_scopes(missing)

    return guard


class TokenKey(_Body):
    token_key: str = Field(alias="tokenKey")


def token_routes(app: FastAPI, config: HubSpotEmulatorConfig, account: Account) -> None:
    """What a token was granted: the private-app and the OAuth token-info endpoints."""

    @app.post(PRIVATE_APP_INFO)
    def private_app_token_info(body: TokenKey) -> JSONResponse:
        _check_token(config, body.token_key)
        scopes = sorted(account.profile.granted())
        return _json(
            {"userId": USER_ID, "hubId": config.portal_id, "appId": APP_ID, "scopes": scopes}
        )

    @app.get(f"{OAUTH_INFO}/{{token}}")
    def oauth_token_info(token: str) -> JSONResponse:
        _check_token(config, token)
        return _json(
            {
                "token": token,
                "token_type": "access",
                "expires_in": 1800,
                "hub_id": config.portal_id,
                "app_id": APP_ID,
                "user_id": USER_ID,
                "scopes": sorted(account.profile.granted()),
            }
        )


# -- CRM --------------------------------------------------------------------------------------


def crm_routes(app: FastAPI, state: HubSpotState) -> None:
    """Contacts v3 and the contact property definitions."""

    @app.get(CONTACTS)
    def list_contacts(
        request: Request,
        limit: int = 10,
        after: str | None = None,
        properties: Names = None,
        with_history: HistoryNames = None,
        archived: bool = False,
    ) -> JSONResponse:
        if not 1 <= limit <= MAX_PAGE:
            raise bad_request(f"limit must be between 1 and {MAX_PAGE}", limit=[str(limit)])
        results, cursor = state.page(
            after, limit, _names(properties), _names(with_history), archived
        )
        body: dict[str, Any] = {"results": results}
        if cursor is not None:
            link = f"{str(request.base_url).rstrip('/')}{CONTACTS}?after={cursor}"
            body["paging"] = {"next": {"after": cursor, "link": link}}
        return _json(body)

    @app.post(CONTACTS, status_code=201)
    def create_contact(body: ContactInput) -> JSONResponse:
        return _json(state.create(body.properties), 201)

    @app.post(f"{CONTACTS}/search")
    def search_contacts(body: SearchRequest) -> JSONResponse:
        return _json(state.search(body))

    @app.post(f"{CONTACTS}/gdpr-delete", status_code=204)
    def gdpr_delete(body: GdprDelete) -> Response:
        state.gdpr_delete(body.object_id, body.id_property)
        return _no_content()

    @app.post(f"{CONTACTS}/batch/read")
    def batch_read(body: BatchRead, archived: bool = False) -> JSONResponse:
        _check_batch(len(body.inputs))
        started = now()
        results, errors = state.batch_read(
            [i.id for i in body.inputs],
            body.id_property,
            body.properties,
            body.properties_with_history,
            archived,
        )
        return batch_response(results, errors, started)

    def batch_write_route(operation: Literal["create", "update", "upsert"], success: int) -> None:
        @app.post(f"{CONTACTS}/batch/{operation}", name=f"batch_{operation}")
        def batch_write(body: BatchWrite) -> JSONResponse:
            _check_batch(len(body.inputs))
            started = now()
            inputs = [item.model_dump(by_alias=True) for item in body.inputs]
            results, errors = state.batch_write(inputs, operation)
            return batch_response(results, errors, started, success)

    batch_write_route("create", 201)
    batch_write_route("update", 200)
    batch_write_route("upsert", 200)

    @app.post(f"{CONTACTS}/batch/archive", status_code=204)
    def batch_archive(body: BatchIds) -> Response:
        _check_batch(len(body.inputs))
        state.archive(i.id for i in body.inputs)
        return _no_content()

    # ``:path`` keeps an address containing an encoded ``/`` in one parameter.
    @app.get(f"{CONTACTS}/{{contact_id:path}}")
    def get_contact(
        contact_id: str,
        id_property: IdProperty = None,
        properties: Names = None,
        with_history: HistoryNames = None,
        archived: bool = False,
    ) -> JSONResponse:
        return _json(
            state.get(
                contact_id,
                id_property,
                _names(properties),
                _names(with_history),
                archived,
            )
        )

    @app.patch(f"{CONTACTS}/{{contact_id:path}}")
    def update_contact(
        contact_id: str,
        body: ContactInput,
        id_property: IdProperty = None,
    ) -> JSONResponse:
        return _json(state.update(contact_id, id_property, body.properties))

    @app.delete(f"{CONTACTS}/{{contact_id:path}}", status_code=204)
    def archive_contact(contact_id: str) -> Response:
        state.archive([contact_id])
        return _no_content()

    @app.get("/crm/v3/properties/{object_type}")
    def list_properties(object_type: str) -> JSONResponse:
        if object_type not in CONTACT_OBJECT_TYPES:
            raise HubSpotError(
                404, f"Unable to infer object type from: {object_type}", "OBJECT_NOT_FOUND"
            )
        return _json({"results": [prop.to_api() for prop in state.catalog.all()]})

    @app.post("/crm/v3/properties/{object_type}")
    def create_property(object_type: str, body: PropertyCreate) -> JSONResponse:
        if object_type not in CONTACT_OBJECT_TYPES:
            raise HubSpotError(
                404, f"Unable to infer object type from: {object_type}", "OBJECT_NOT_FOUND"
            )
        prop = PropertyDef(
            body.name,
            body.label,
            body.type,
            body.field_type,
            options=tuple(option.value for option in body.options),
            group=body.group_name,
            hubspot_defined=False,
        )
        return _json(state.catalog.create(prop).to_api(), 201)

    @app.get("/crm/v3/properties/{object_type}/{property_name}")
    def get_property(object_type: str, property_name: str) -> JSONResponse:
        prop = state.catalog.get(property_name)
        if object_type not in CONTACT_OBJECT_TYPES or prop is None:
            message = f"Unable to find property {property_name} for object type {object_type}"
            raise HubSpotError(404, message, "OBJECT_NOT_FOUND")
        return _json(prop.to_api())


# -- communication preferences ----------------------------------------------------------------


def preferences_routes(app: FastAPI, state: HubSpotState) -> None:
    """Communication preferences v3 (what the SDK wraps) and v4 (raw HTTP only)."""

    @app.get(f"{PREFS_V3}/definitions")
    def v3_definitions() -> JSONResponse:
        return _json({"subscriptionDefinitions": state.definitions_body()})

    @app.get(f"{PREFS_V3}/status/email/{{email_address:path}}")
    def v3_status(email_address: str) -> JSONResponse:
        return _json(state.v3_statuses(email_address))

    def v3_change_route(action: Literal["subscribe", "unsubscribe"]) -> None:
        @app.post(f"{PREFS_V3}/{action}", name=f"v3_{action}")
        def change(body: V3StatusChange) -> JSONResponse:
            return _json(
                state.v3_change(
                    body.email_address,
                    body.subscription_id,
                    action == "subscribe",
                    body.legal_basis,
                    body.legal_basis_explanation,
                )
            )

    v3_change_route("subscribe")
    v3_change_route("unsubscribe")

    @app.get(f"{PREFS_V4}/definitions")
    def v4_definitions() -> JSONResponse:
        return _json(batch_envelope(state.definitions_body(), [], now()))

    @app.post(f"{PREFS_V4}/statuses/batch/read")
    def v4_batch_read(body: V4Subscribers, channel: Channel) -> JSONResponse:
        _check_batch(len(body.inputs))
        started = now()
        results, errors = _each(
            body.inputs,
            lambda email: {"subscriberIdString": email, "statuses": state.v4_statuses(email)},
            key=str,
        )
        return batch_response(results, errors, started)

    @app.post(f"{PREFS_V4}/statuses/batch/write")
    def v4_batch_write(body: V4BatchWrite) -> JSONResponse:
        _check_batch(len(body.inputs))
        started = now()
        results, errors = _each(
            body.inputs,
            lambda item: state.v4_set(
                item.subscriber_id_string,
                item.subscription_id,
                item.status_state,
                item.legal_basis,
                item.legal_basis_explanation,
            ),
            key=lambda item: item.subscriber_id_string,
        )
        return batch_response(results, errors, started)

    @app.post(f"{PREFS_V4}/statuses/batch/unsubscribe-all")
    def v4_batch_unsubscribe_all(
        body: V4Subscribers, channel: Channel, verbose: bool = False
    ) -> JSONResponse:
        _check_batch(len(body.inputs))
        started = now()

        def unsubscribe(email: str) -> dict[str, Any]:
            statuses = state.unsubscribe_all(email)
            return {"subscriberIdString": email, "statuses": statuses if verbose else []}

        results, errors = _each(body.inputs, unsubscribe, key=str)
        return batch_response(results, errors, started)

    @app.post(f"{PREFS_V4}/statuses/batch/unsubscribe-all/read")
    def v4_batch_wide_read(body: V4Subscribers, channel: Channel) -> JSONResponse:
        _check_batch(len(body.inputs))
        started = now()
        results, errors = _each(
            body.inputs,
            lambda email: {
                "subscriberIdString": email,
                "wideStatuses": state.v4_wide_statuses(email),
            },
            key=str,
        )
        return batch_response(results, errors, started)

    @app.get(f"{PREFS_V4}/statuses/{{subscriber:path}}/unsubscribe-all")
    def v4_wide_status(subscriber: str, channel: Channel) -> JSONResponse:
        return _json(batch_envelope(state.v4_wide_statuses(subscriber), [], now()))

    @app.post(f"{PREFS_V4}/statuses/{{subscriber:path}}/unsubscribe-all")
    def v4_unsubscribe_all(
        subscriber: str, channel: Channel, verbose: bool = False
    ) -> JSONResponse:
        statuses = state.unsubscribe_all(subscriber)
        return _json(batch_envelope(statuses if verbose else [], [], now()))

    @app.post(f"{PREFS_V4}/links/generate")
    def v4_links(body: LinksRequest, channel: Channel, request: Request) -> JSONResponse:
        page = str(request.url_for("preference_page"))
        return _json(state.preference_links(body.subscriber_id_string, body.subscription_id, page))

    @app.get(f"{PREFS_V4}/statuses/{{subscriber:path}}")
    def v4_status(subscriber: str, channel: Channel) -> JSONResponse:
        return _json(batch_envelope(state.v4_statuses(subscriber), [], now()))

    @app.post(f"{PREFS_V4}/statuses/{{subscriber:path}}")
    def v4_set_status(subscriber: str, body: V4StatusChange) -> JSONResponse:
        status = state.v4_set(
            subscriber,
            body.subscription_id,
            body.status_state,
            body.legal_basis,
            body.legal_basis_explanation,
        )
        return _json(batch_envelope([status], [], now()))


def preference_page_routes(app: FastAPI, state: HubSpotState) -> None:
    """The page a ``links/generate`` link opens: the address's public subscriptions as a form
    the person saves themselves (a GET changes nothing: mail scanners open links)."""

    @app.get(PREFERENCE_PAGE, name="preference_page", response_class=HTMLResponse)
    def show(
        d: str = "", leave_all: Annotated[str, Query(alias="all")] = "", unsubscribe: str = ""
    ) -> HTMLResponse:
        found = state.preference_page(d)
        if found is None:
            return _page("Link expired", "<p>This link is not valid.</p>", 404)
        email, subscriptions, wide = found
        rows = "".join(
            f'<li><label><input type="checkbox" name="subscription" value="{escape(sub_id)}"'
            f"{' checked' if on and sub_id != unsubscribe else ''}> {escape(name)}</label></li>"
            for sub_id, name, on in subscriptions
        )
        leave = " checked" if leave_all or wide else ""
        form = (
            f"<p>Email preferences for {escape(email)}</p>"
            f'<form method="post" action="?d={escape(d)}"><ul>{rows}</ul>'
            f'<label><input type="checkbox" name="unsubscribe_all" value="1"{leave}> '
            "Unsubscribe from all email</label> <button>Save</button></form>"
        )
        return _page("Manage preferences", form)

    @app.post(PREFERENCE_PAGE, response_class=HTMLResponse)
    async def save(request: Request, d: str = "") -> HTMLResponse:
        form = parse_qs((await request.body()).decode(errors="replace"))
        chosen = set(form.get("subscription", []))
        if not state.save_preferences(d, chosen, bool(form.get("unsubscribe_all"))):
            return _page("Link expired", "<p>This link is not valid.</p>", 404)
        return _page("Preferences saved", "<p>Your email preferences were saved.</p>")


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>"
    return HTMLResponse(html, status_code=status)


# -- errors and the app -------------------------------------------------------------------------


async def _hubspot_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubSpotError)
    return exc.response()


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """Bad JSON or fields: HubSpot answers 400 ``VALIDATION_ERROR``, never FastAPI's 422."""
    assert isinstance(exc, RequestValidationError)
    if request.url.path.startswith(ADMIN_PREFIX):
        return await request_validation_exception_handler(request, exc)
    problems = [
        {
            "message": str(e["msg"]),
            "in": ".".join(str(part) for part in e["loc"]),
            "code": str(e["type"]),
        }
        for e in exc.errors()
    ]
    summary = "; ".join(f"{p['in']}: {p['message']}" for p in problems)
    return HubSpotError(400, f"Invalid input: {summary}", errors=problems).response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND").response()
    return HubSpotError(exc.status_code, str(exc.detail), "VALIDATION_ERROR").response()


def _fault_response(kind: FaultKind, status: int) -> Response:
    """Injected faults look like HubSpot's own: a burst 429 or a 5xx error body."""
    error = rate_limited("TEN_SECONDLY_ROLLING") if kind == "rate_limit" else server_error(status)
    return error.response()


def create_app(config: HubSpotEmulatorConfig | None = None) -> ASGIApp:
    """A fresh emulated portal; serve the result with uvicorn (it is the outermost wrapper)."""
    config = config or HubSpotEmulatorConfig()
    definitions = config.subscription_definitions
    webhooks = WebhookDispatcher(
        config.portal_id,
        [d.id for d in definitions],
        config.webhook_retry_delays_s,
        config.webhook_timeout_s,
    )
    state = HubSpotState(definitions, webhooks, config.custom_properties)
    account = Account(config.profile)
    limiter = RateLimiter(config.rate_limits or PUBLISHED_LIMITS[config.profile.tier])
    subscriptions = ", ".join(f"{d.id} {d.name}" for d in definitions)
    app = FastAPI(
        title="HubSpot API emulator",
        description=(
            f"An emulated HubSpot portal (id {config.portal_id}, Marketing Hub "
            f"{config.profile.tier}; `PUT /__emulator/tier` changes it), in memory. It starts "
            f"with no contacts and these subscription types: {subscriptions}. Vendor calls "
            "need a bearer token"
            + (" from the emulator's configuration" if config.strict_auth else " (any will do)")
            + "; webhooks are off until `PUT /__emulator/webhooks` names a target and a "
            "client secret."
        ),
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        dependencies=[Depends(_guard(config, limiter, account))],
        exception_handlers={
            HubSpotError: _hubspot_error,
            RequestValidationError: _invalid_request,
            StarletteHTTPException: _http_error,
        },
    )
    app.state.hubspot = state
    app.state.webhooks = webhooks
    # Vendor routes go on the app itself, not through include_router: common._route_key
    # cannot name a route inside FastAPI's lazily included routers when it injects a fault.
    crm_routes(app, state)
    preferences_routes(app, state)
    preference_page_routes(app, state)
    token_routes(app, config, account)
    app.include_router(admin_routes(state, limiter, webhooks, account))

    async def rate_limit_headers(request: Request, response: Response) -> dict[str, str]:
        """Search responses carry none (docs/vendors/hubspot.md, "Search"); others do."""
        return {} if request.url.path == SEARCH_PATH else limiter.headers()

    app.add_middleware(AddHeaders, headers=rate_limit_headers)
    describe_api(app, "HubSpot")
    return install(app, EmulatorControl(), _fault_response)
